"""Watching a run from a browser and from monitoring (issue 28): `run --dashboard` serves a live
page (checked in a real headless Chromium, driven by Playwright's Python package pointed at the
system Chromium) and /metrics (parsed by prometheus_client's own OpenMetrics parser) during a real
multi-process run; the server goes with the run, on Ctrl-C and on a failure too."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from startline.testing import CLI, ROOT
from tests.test_catalogue import QUICK
from tests.test_report import chromium

SCENARIO = """
name = "watched"
workers = 2
connections_per_worker = 2
warmup_s = 1
measurement_s = 6
flush_interval_s = 1
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
setup = ["CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v INTEGER)", "INSERT OR IGNORE INTO kv VALUES (1, 1)"]

[start]
lead_ms = 1000

[[operations]]
name = "read"
weight = 3
sql = "SELECT v FROM kv WHERE k = 1"

[[operations]]
name = "write"
sql = "UPDATE kv SET v = v + 1 WHERE k = 1"
"""


def _start(tmp_path: Path, text: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """A run with its dashboard (in its own process group): the process and the address it printed."""
    (tmp_path / "s.toml").write_text(text)
    proc = subprocess.Popen(
        [*CLI, "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--progress-every", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"STARTLINE_HOME": str(tmp_path / "home")},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.match(r"(?:dashboard|metrics): (\S+)", line)
        if found:
            return proc, found.group(1)
    proc.wait(10)
    raise AssertionError(f"no address printed (exit {proc.returncode})")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _port_free(url: str) -> bool:
    host, port = re.match(r"https?://\[?([^\]/]+?)\]?:(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1" if host == "0.0.0.0" else host, int(port))) != 0


def test_the_page_follows_a_real_run_and_metrics_match_its_summary(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    proc, url = _start(tmp_path, SCENARIO, "--dashboard", "127.0.0.1:0", "--dashboard-linger", "2")
    origin = url.rsplit("/", 1)[0]
    requests: list[str] = []
    errors: list[str] = []
    seen: list[str] = []
    scrapes: list[dict] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            for n in range(1, 7):  # six updates, a scrape of /metrics beside each
                page.wait_for_function(f"Number(document.body.dataset.updates) >= {n}", timeout=30_000)
                seen.append(page.inner_text("#progress") + "|" + page.inner_text("#totals"))
                scrapes.append(_metrics(_get(origin + "/metrics")[1]))
            page.wait_for_function("document.getElementById('final').textContent.includes('passed')", timeout=90_000)
            assert page.locator("#throughput canvas").count() == 1 and page.locator("#latency canvas").count() == 1
            assert "read p99" in page.inner_text("#latency") and "write p99" in page.inner_text("#latency")
            page.screenshot(path=str(tmp_path / "dashboard.png"))
            final = _metrics(_get(origin + "/metrics")[1])
            browser.close()
    finally:
        code = proc.wait(120)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert len(set(seen)) >= 3, seen  # the figures moved over the updates
    assert all(u.startswith(origin) or u.startswith("data:") for u in requests), requests
    assert errors == []
    # counters only grow, scrape after scrape …
    for before, after in zip(scrapes, [*scrapes[1:], final], strict=True):
        for key, value in before.items():
            if key[0].endswith("_total"):
                assert after.get(key, 0) >= value, key
    # … and at the end equal the summary's counts
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for phase, block in summary["phases"].items():
        for kind, k in block["by_kind"].items():
            key = ("startline_operations_total", (("kind", kind), ("phase", phase), ("run_id", summary["run_id"])))
            assert final[key] == k["ops"], key
    assert not any(k[0] == "startline_errors_total" for k in final)  # no errors: no error series
    every = {  # each phase and kind's histogram holds all its operations (its +Inf bucket)
        (dict(labels)["phase"], dict(labels)["kind"]): v
        for (name, labels), v in final.items()
        if name == "startline_latency_seconds_bucket" and dict(labels)["le"] == "+Inf"
    }
    assert every == {(p, k): b["ops"] for p, block in summary["phases"].items() for k, b in block["by_kind"].items()}
    assert _port_free(url)  # the server went with the run
    if os.environ.get("STARTLINE_SCREENSHOT"):  # README's screenshot: taken by this test, kept by hand
        shutil.copy(tmp_path / "dashboard.png", os.environ["STARTLINE_SCREENSHOT"])


def test_a_dashboard_on_a_non_loopback_address_refuses_requests_without_its_token(tmp_path: Path) -> None:
    text = QUICK.replace("measurement_s = 0.5", "measurement_s = 2")
    proc, url = _start(tmp_path, text, "--dashboard", "0.0.0.0:0", "--dashboard-linger", "1")
    try:
        token = re.search(r"token=([\w-]+)", url)
        assert token is not None, url  # a random one, printed
        bare = url.split("?")[0].replace("0.0.0.0", "127.0.0.1")
        assert _get(bare)[0] == 403 and _get(bare.rstrip("/") + "/metrics")[0] == 403
        assert _get(bare + "?token=wrong")[0] == 403
        status, body = _get(bare + "?token=" + token.group(1))
        assert status == 200 and "EventSource" in body and "uPlot" in body
        request = urllib.request.Request(
            bare.rstrip("/") + "/metrics", headers={"Authorization": f"Bearer {token.group(1)}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200 and b"# EOF" in r.read()
    finally:
        assert proc.wait(60) == 0
    assert _port_free(url)


@pytest.mark.parametrize("how", ["ctrl-c", "failed"])
def test_the_server_stops_with_the_run_on_ctrl_c_and_on_a_failure(tmp_path: Path, how: str) -> None:
    text = QUICK.replace("measurement_s = 0.5", "measurement_s = 30")
    if how == "failed":  # the operation's function does not exist: the workers fail at once
        text = text.replace("startline.backends.memory.ops:sleep_ms", "startline.backends.memory.ops:no_such_op")
    proc, url = _start(tmp_path, text, "--metrics", "127.0.0.1:0")
    assert url.endswith("/metrics")
    if how == "ctrl-c":
        deadline = time.monotonic() + 30
        while _get(url)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    assert code in ((3,) if how == "ctrl-c" else (2, 3)), (code, proc.stderr.read() if proc.stderr else "")
    assert _port_free(url)


def test_serve_lists_the_runs_under_a_directory_opens_their_reports_and_compares_them(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from startline.testing import run_cli

    (tmp_path / "s.toml").write_text(QUICK)
    env = os.environ | {"STARTLINE_HOME": str(tmp_path / "home")}
    for name in ("a", "b"):
        done = run_cli(
            "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "runs" / name), "--run-id", f"srv-{name}",
            timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(
        [*CLI, "serve", str(tmp_path / "runs"), "--at", "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
    try:
        status, index = _get(url)
        assert status == 200 and "srv-a" in index and "srv-b" in index
        status, report = _get(url + "report/srv-a")
        assert status == 200 and report == (tmp_path / "runs" / "a" / "report.html").read_text()
        assert _get(url + "report/nope")[0] == 404 and _get(url + "compare?run=srv-a")[0] == 400
        requests: list[str] = []
        errors: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.check("input[value='srv-b']")
            page.check("input[value='srv-a']")
            page.click("button[type=submit]")
            page.wait_for_selector("h1")
            assert page.inner_text("h1").startswith("compare: srv-a, srv-b")  # (the oldest is the base)
            browser.close()
        assert errors == [] and all(u.startswith(url.rstrip("/")) for u in requests), (errors, requests)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert _port_free(url)


def test_ctrl_c_while_the_dashboard_lingers_ends_it_and_the_runs_result_stands(tmp_path: Path) -> None:
    text = QUICK.replace("measurement_s = 0.5", "measurement_s = 1")
    proc, url = _start(tmp_path, text, "--dashboard", "127.0.0.1:0", "--dashboard-linger", "120")
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("dashboard up"):
            break
    assert _get(url)[0] == 200  # still up, lingering
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0  # the run passed: Ctrl-C only ended the lingering
    assert _port_free(url)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "COMPLETED"


@given(st.lists(st.integers(1, 60_000_000), min_size=0, max_size=300))
def test_metrics_buckets_count_the_values_up_to_each_bound_within_hdrs_precision(values_us) -> None:
    from startline.engine.metrics import new_histogram
    from startline.live.openmetrics import BUCKETS_MS, buckets

    h = new_histogram()
    for v in values_us:
        h.record_value(v)
    got = buckets(h)
    assert got[-1] == ("+Inf", float(len(values_us)))
    counts = [c for _, c in got]
    assert counts == sorted(counts)  # cumulative
    for (le, c), bound in zip(got, BUCKETS_MS, strict=False):
        assert float(le) == bound / 1000
        surely_in = sum(v <= bound * 1000 * (1 - 1e-3) for v in values_us)  # (HDR: 3 significant digits)
        maybe_in = sum(v <= bound * 1000 * (1 + 1e-3) for v in values_us)
        assert surely_in <= c <= maybe_in


def test_a_load_modes_state_is_exported_as_its_target_and_its_level_now() -> None:
    from startline.live.openmetrics import load_state

    def exported(load: dict) -> dict[str, float]:
        return {f.name: f.samples[0].value for f in load_state("r", load)}

    qps = {"mode": "qps", "result": {"target_qps": 500}, "steps": [{"to": 8}, {"to": 12}]}
    assert exported(qps) == {"startline_load_target_qps": 500.0, "startline_load_level": 12.0}
    assert exported({"mode": "find_max", "result": None, "steps": [{"connections": 8}]}) == {
        "startline_load_level": 8.0
    }
    assert exported({"mode": "rate", "result": {"rate": 200.0}, "steps": []}) == {"startline_load_target_qps": 200.0}
    assert exported({"mode": "qps", "result": {"target_qps": 500}, "steps": []}) == {"startline_load_target_qps": 500.0}


def test_an_intervals_phase_is_the_phase_windows_one_and_past_the_planned_end_the_cooldown() -> None:
    """The live view's rows label each snapshot interval by the phase it began in — the same rule
    as the operations' (``PhaseWindows.phase_at``: a boundary belongs to the phase it opens);
    an interval begun as the run drains, past the planned end, is the run's tail (COOLDOWN)."""
    from startline.live.observe import interval_phase
    from startline.testing import scenario

    sc = scenario(warmup_s=2.0, measurement_s=3.0, cooldown_s=1.0, snapshot_interval_s=1.0)
    assert [interval_phase(sc, i) for i in range(8)] == [
        "WARMUP",
        "WARMUP",
        "MEASUREMENT",
        "MEASUREMENT",
        "MEASUREMENT",
        "COOLDOWN",
        "COOLDOWN",
        "COOLDOWN",
    ]
    no_cooldown = scenario(warmup_s=0.0, measurement_s=2.0, snapshot_interval_s=0.5)
    assert [interval_phase(no_cooldown, i) for i in range(6)] == ["MEASUREMENT"] * 4 + ["COOLDOWN"] * 2
