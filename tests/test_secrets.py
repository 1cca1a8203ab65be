"""A password given to a run lands in no file it writes (issue 22 #7, #8; threat model in
docs/reliability.md): not summary.json, the report, the CSVs, the workers' logs and results, nor
the control plane; not on a worker's command line."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from startline.engine.secrets import encodings, mask, masked_url, url_secrets, without_secrets
from startline.testing import run_cli

PASSWORD = "pl@nt3d:S3cr3t/x y&z=1ü"


def every_encoding(secret: str) -> set[bytes]:
    """Every form a planted password could take in a file: as text in the encodings a writer may
    use (UTF-8, UTF-16), escaped (URL, form, JSON, repr), and as base64 or hex of its bytes."""
    raw = secret.encode()
    forms = {f.encode() for f in encodings(secret)} | {secret.encode("utf-16-le"), secret.encode("utf-16-be")}
    return forms | {
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        raw.hex().encode(),
        raw.hex().upper().encode(),
    }


def found_in(paths: list[Path], secret: str) -> list[str]:
    return [f"{p}: {form!r}" for p in paths if p.is_file() for form in every_encoding(secret) if form in p.read_bytes()]


@pytest.mark.parametrize("secret", [PASSWORD, "simple", "p%40ss", "a:b@c"])
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:{q}@h:5432/db",
        "postgresql://u@h:5432/db?sslmode=require&password={q}",
        "snowflake://u:{q}@acct/db?warehouse=w&private_key_file_pwd={q}",
        "postgresql://u:{q}@h/db?password={q}#frag",
    ],
)
def test_a_urls_password_is_in_no_form_of_its_masked_or_stripped_url(url, secret):
    given_url = url.format(q=quote(secret, safe=""))
    assert secret in url_secrets(given_url)
    for shown in (masked_url(given_url), without_secrets(given_url), mask(given_url, ())):
        assert not [f for f in every_encoding(secret) if f.decode("latin-1") in shown], shown
    assert "***" in masked_url(given_url) and "***" not in without_secrets(given_url)


@given(
    st.sampled_from(["sqlite:///", "postgresql://u@h:1/", "memory://", "snowflake://acct/"]),
    st.text("abc/._-", max_size=20),
)
def test_a_url_without_a_password_comes_back_byte_for_byte(head, rest):
    url = head + rest + "?sslmode=require&application_name=x"
    assert masked_url(url) == without_secrets(url) == url and url_secrets(url) == ()


def test_a_secret_masked_by_value_is_gone_in_every_form_a_message_may_hold():
    text = " ".join(f.decode("utf-8") for f in every_encoding(PASSWORD) if f.isascii() or f == PASSWORD.encode())
    assert PASSWORD not in mask(text, [PASSWORD]) and quote_plus(PASSWORD) not in mask(text, [PASSWORD])


SCENARIO = """
name = "secrets"
workers = 2
connections_per_worker = 2
warmup_s = 0.5
measurement_s = 2
heartbeat_s = 0.5
control = "sqlite:///{{out}}/control.db"
target = "{target}"
setup = ["CREATE TABLE IF NOT EXISTS kv (k INT PRIMARY KEY, v INT)",
         "INSERT INTO kv SELECT g, g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING"]

[[operations]]
name = "read"
sql = "SELECT v FROM kv WHERE k = :k"
params.k = {{ type = "int", min = 1, max = 100 }}
"""


@pytest.mark.parametrize("way", ["userinfo", "query", "environment", "pgpass"])
def test_a_password_lands_in_no_file_a_run_writes_however_it_was_given(way, postgres_url, tmp_path):
    """A real run (worker processes, PostgreSQL target, SQLite control plane) with a password
    planted one way; every file in OUT and the control plane's files are scanned for it in every
    encoding. (The scratch server trusts loopback: the password is carried, not checked.)"""
    base = postgres_url  # postgresql://postgres@127.0.0.1:PORT/db
    env = dict(os.environ)
    if way == "userinfo":
        target = base.replace("postgres@", f"postgres:{quote(PASSWORD, safe='')}@", 1)
    elif way == "query":
        target = f"{base}?password={quote(PASSWORD, safe='')}"
    elif way == "environment":
        target, env["PGPASSWORD"] = base, PASSWORD
    else:
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:*:{PASSWORD.replace(':', chr(92) + ':')}\n")
        pgpass.chmod(0o600)
        target, env["PGPASSFILE"] = base, str(pgpass)
    path = tmp_path / "secrets.toml"
    path.write_text(SCENARIO.format(target=target))
    out = tmp_path / "out"
    proc = run_cli("run", str(path), "--out", str(out), timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = sorted(out.rglob("*"))
    assert {"summary.json", "report.html", "control.db", "worker-w000.json", "worker-w000.log"} <= {
        p.name for p in written
    }
    assert found_in(written, PASSWORD) == []
    assert PASSWORD not in proc.stdout + proc.stderr
    shown = json.loads((out / "summary.json").read_text())["config"]["scenario"]["target"]
    assert ("***" in shown) == (way in ("userinfo", "query")), shown


def test_a_spawned_workers_urls_travel_in_its_environment_not_on_its_command_line(tmp_path):
    """Every user of a host can read a process's command line (``ps``): a worker's URLs, with any
    password, are in its environment, which only its owner can read."""
    from startline.live.workers import CONTROL_ENV, TARGET_ENV, url_env, worker_command, worker_env
    from startline.testing import scenario

    sc = scenario(target=f"postgresql://u:{quote(PASSWORD, safe='')}@h/db", control="sqlite:///c.db")
    cmd = " ".join(worker_command(sc, "r", 0, tmp_path / "w.json"))
    assert not [f for f in every_encoding(PASSWORD) if f.decode("latin-1") in cmd] and "postgresql" not in cmd
    env = worker_env(0.0, url_env(sc))
    assert (env[CONTROL_ENV], env[TARGET_ENV]) == (sc.control, sc.target)
