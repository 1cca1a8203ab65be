from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

# Shared, noisy 2-core machines: examples are judged by what they assert, never by wall time.
# No "explain" phase: its line tracing makes a whole simulated run crawl while a failure shrinks.
# Derandomized: CI sees the same examples every run (a failure is reproducible, never a coin
# toss); `pytest --hypothesis-profile=explore` draws new ones.
_phases = [p for p in Phase if p is not Phase.explain]
settings.register_profile("default", deadline=None, phases=_phases, derandomize=True)
settings.register_profile("explore", deadline=None, phases=_phases, max_examples=500)
# `make test-fast`: the same properties on a few examples each (a quick look while working; `make
# test`, and CI, run the default profile).
settings.register_profile("fast", deadline=None, phases=_phases, derandomize=True, max_examples=5)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="session")
def _catalogue_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The runs the tests start register in a catalogue of the session's own, never the user's."""
    old = os.environ.get("STARTLINE_HOME")
    os.environ["STARTLINE_HOME"] = str(tmp_path_factory.mktemp("startline_home"))
    yield
    if old is None:
        os.environ.pop("STARTLINE_HOME", None)
    else:
        os.environ["STARTLINE_HOME"] = old


LIVE_FIXTURES = frozenset({"postgres_server", "postgres_url", "fakesnow_home"})
LIVE_PARAMS = frozenset({"postgres", "snowflake"})
"""A parametrized test run on one of these backends starts its server."""
LIVE_CALLS = ("cli(", "subprocess.", "LiveRun", "chromium", "open_executor", "run_process", "Popen", "LocalCluster")
"""What a test's own source calls when it starts a process, a server or a browser."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "live: starts processes, servers or a browser (`make test-fast` leaves these out)"
    )
    config.addinivalue_line(
        "markers",
        "slow: seconds of work in one process — many simulated runs, or a run in real time "
        "(`make test-fast` leaves these out)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``live`` what starts a process, a server or a browser: a module that says so, a test
    that uses a server's fixture or runs on a server's backend, or one whose own source starts a
    process."""
    for item in items:
        if item.get_closest_marker("live"):
            continue
        params = getattr(item, "callspec", None)
        on_server = params is not None and bool(LIVE_PARAMS & {str(v) for v in params.params.values()})
        if on_server or LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)
            continue
        try:
            source = inspect.getsource(item.obj)  # type: ignore[attr-defined]
        except (AttributeError, OSError, TypeError):
            continue
        if any(call in source for call in LIVE_CALLS):
            item.add_marker(pytest.mark.live)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fakesnow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fakesnow server (HTTP on loopback, its own process; with the query-history table function
    of ``tests/snowflake_emulator.py``) and a SNOWFLAKE_HOME whose connections.toml names it
    ``fakesnow``: the real connector, no credentials needed."""
    home = tmp_path_factory.mktemp("snowflake_home")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.snowflake_emulator", "--port", str(port)],  # fakesnow, + query history
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).parent.parent,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("fakesnow server did not start") from None
            time.sleep(0.1)
    toml = home / "connections.toml"
    toml.write_text(
        "[fakesnow]\n"
        f'account = "fakesnow"\nuser = "fake"\npassword = "snow"\nhost = "127.0.0.1"\nport = {port}\n'
        'protocol = "http"\n'
    )
    toml.chmod(0o600)
    old = os.environ.get("SNOWFLAKE_HOME")
    os.environ["SNOWFLAKE_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("SNOWFLAKE_HOME", None)
        else:
            os.environ["SNOWFLAKE_HOME"] = old
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 server (pgserver's binaries, from the package index) on loopback for
    the session: its URL (the ``postgres`` database)."""
    import shutil
    import tempfile

    from startline.backends.postgres import server

    # Not under pytest's own temporary root: the server runs as another user (when the tests run
    # as root) and needs that root traversable, which every new pytest session on the machine
    # resets to private — a second session started beside this one took the server's data
    # directory away from it (PANIC: could not open pg_control: Permission denied).
    root = Path(tempfile.mkdtemp(prefix="startline-pg-"))
    data = root / "data"
    local = server.start(data)
    try:
        yield local.url
    finally:
        server.stop(data)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own on the session's server, for one test: its URL."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
