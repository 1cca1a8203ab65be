"""A local PostgreSQL server for trying startline and for its tests: the binaries of the
``pgserver`` wheel (PostgreSQL 16, from the package index: no Docker, no system package),
started on loopback TCP with its data in a directory of yours.

``startline postgres start DIR`` starts one (or finds it running) and prints its URL;
``startline postgres stop DIR`` stops it. As root, the server runs as the system user
``pgserver`` (PostgreSQL refuses to run as root), made if missing — what pgserver itself does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import warnings
from pathlib import Path

import attrs

SERVER_EXTRA = "a local PostgreSQL server needs pgserver: pip install 'startline[postgres-server]'"
SYSTEM_USER = "pgserver"
SETTINGS = {
    "max_connections": "300",  # workers × connections, plus the control plane's
    "shared_buffers": "128MB",
    "fsync": "off",  # a scratch server for benchmarks' plumbing and tests: durability is not measured
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@attrs.frozen
class LocalServer:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def _bin() -> Path:
    try:
        with warnings.catch_warnings():  # platformdirs, on import: "XDG_RUNTIME_DIR is not set" (not used here)
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise RuntimeError(SERVER_EXTRA) from exc
    return Path(POSTGRES_BIN_PATH)


def _as_user() -> str | None:
    """The system user the server runs as: ``pgserver`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _run(args: list[str], user: str | None, timeout: float = 120) -> str:
    proc = subprocess.run(
        args,
        user=user,
        capture_output=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stdout.strip()[-2000:]}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(data: Path) -> LocalServer | None:
    """The server of ``data`` if it is running (its postmaster.pid names a live process)."""
    pidfile = data / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return LocalServer(data, port)


def start(data: Path, port: int | None = None, settings: dict[str, str] | None = None) -> LocalServer:
    """Initialise ``data`` when new, start its server on 127.0.0.1 (``port``, or a free one) and
    wait until it takes connections; a server already running there is returned as it is.
    ``settings`` override ``SETTINGS`` (``{"max_connections": "1100"}``)."""
    data = Path(data).resolve()
    found = running(data)
    if found is not None:
        return found
    bin_dir, user = _bin(), _as_user()
    data.mkdir(parents=True, exist_ok=True)
    if user is not None:
        import pwd
        import stat

        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"], user)
    port = port or _free_port()
    options = " ".join(
        [f"-h 127.0.0.1 -p {port} -k {data}", *(f"-c {k}={v}" for k, v in (SETTINGS | (settings or {})).items())]
    )
    _run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        ],
        user,
    )
    return LocalServer(data, port)


def stop(data: Path) -> bool:
    """Stop the server of ``data`` (fast shutdown); False if none was running."""
    data = Path(data).resolve()
    if running(data) is None:
        return False
    _run([str(_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], _as_user())
    return True
