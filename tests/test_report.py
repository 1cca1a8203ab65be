"""report.html: written by every run, rebuilt from summary.json alone, self-contained, and drawn
by a real headless Chromium (a screenshot that is not blank, every chart in the page's DOM);
`compare --html` overlays two runs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from startline.testing import run_cli

pytestmark = pytest.mark.live  # processes, servers or a browser

SCENARIO = """
name = "report-test"
seed = 3
workers = 2
connections_per_worker = 2
warmup_s = 1
measurement_s = 2
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
setup = ["DROP TABLE IF EXISTS kv", "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER)",
         '''WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
            INSERT INTO kv SELECT i, i FROM n''']

[start]
strategy = "scheduled"
lead_ms = 1500

[[operations]]
name = "read"
weight = 3
sql = "SELECT v FROM kv WHERE k = :k"
params.k = { type = "int", min = 1, max = 100 }

[[operations]]
name = "write"
weight = 1
sql = "UPDATE kv SET v = v + 1 WHERE k = :k"
params.k = { type = "int", min = 1, max = 100 }

[thresholds]
"latency_ms{kind=read}" = ["p(99) < 60000"]
"""

CHARTS = ("chart-start", "chart-throughput", "chart-latency", "chart-distribution", "chart-workers")


def chromium() -> str:
    """The headless browser: installed by `make test` (scripts/ensure-chromium) when missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium on PATH: scripts/ensure-chromium installs it (make test runs it)")


def browse(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    )
    return subprocess.run(
        [chromium(), *flags, *args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )


def external_references(text: str) -> list[str]:
    """Everything a page could fetch: src/href to another document, CSS imports and url()s that
    are not fragments, scripts and stylesheets from elsewhere (SVG's xmlns is a name, not a fetch)."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']?(?!#)([^"'\s>]+)""", text)
    found += re.findall(r"@import[^;]*", text)
    found += re.findall(r"url\(\s*['\"]?(?!#)([^)'\"]+)", text)
    found += re.findall(r"<(?:link|script|iframe|img)\b[^>]*>", text)
    return found


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    path = root / "scenario.toml"
    path.write_text(SCENARIO)
    outs = []
    for name in ("base", "candidate"):
        out = root / name
        proc = run_cli("run", str(path), "--out", str(out), timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"report: {out / 'report.html'}" in proc.stdout
        outs.append(out)
    return outs[0], outs[1]


def test_a_run_writes_a_self_contained_report_that_chromium_draws_with_every_chart(two_runs, tmp_path):
    out = two_runs[0]
    page = out / "report.html"
    text = page.read_text()
    assert external_references(text) == []
    for chart in CHARTS:
        assert f'id="{chart}"' in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] in text and "latency_ms{kind=read}: p(99) &lt; 60000" in text
    assert "control plane retries" in text and all(w["health"]["calls"] > 0 for w in summary["workers"])

    dom = browse(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    for chart in CHARTS:  # each chart parsed by the browser into an SVG with drawn paths
        figure = re.search(rf'<figure id="{chart}">(.*?)</figure>', dom.stdout, re.S)
        assert figure is not None, chart
        assert "<svg" in figure.group(1) and figure.group(1).count("<path") >= 3, chart

    shot = tmp_path / "report.png"
    taken = browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    assert taken.returncode == 0 and shot.exists(), taken.stderr
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    not_white = (pixels.min(axis=2) < 0.9).mean()
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.2).mean()
    assert not_white > 0.03, f"the screenshot is almost blank ({not_white:.1%} of pixels drawn)"
    assert coloured > 0.005, f"no chart colours in the screenshot ({coloured:.2%} of pixels)"


def test_startline_report_rebuilds_the_same_report_from_summary_json_alone(two_runs, tmp_path):
    out = two_runs[0]
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(out / "summary.json", lone / "summary.json")
    proc = run_cli("report", str(lone), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(lone / "report.html")
    assert (lone / "report.html").read_bytes() == (out / "report.html").read_bytes()


def test_report_of_a_directory_without_a_summary_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("report", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "summary.json" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_html_overlays_both_runs_with_the_key_figures(two_runs, tmp_path):
    base, candidate = two_runs
    page = tmp_path / "compare.html"
    wide = [a for band in ("qps", "p95", "p99", "error_rate") for a in ("--band", f"{band}=1000:1000")]
    proc = run_cli("compare", str(base), str(candidate), *wide, "--html", str(page), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = page.read_text()
    assert external_references(text) == []
    for chart in ("chart-throughput", "chart-p99", "chart-start"):
        assert f'id="{chart}"' in text
    assert str(base) in text and str(candidate) in text and "Key figures" in text
    dom = browse(page, tmp_path, "--dump-dom")
    throughput = re.search(r'<figure id="chart-throughput">(.*?)</figure>', dom.stdout, re.S)
    assert throughput is not None and "<svg" in throughput.group(1)


def test_the_reference_check_finds_what_a_page_would_fetch():
    assert external_references('<img src="http://x/y.png">')
    assert external_references('<link rel=stylesheet href="https://cdn/x.css">')
    assert external_references("<style>@import 'x.css';</style>")
    assert external_references("<div style=\"background:url('https://x/y')\">")
    assert external_references('<svg xmlns="http://www.w3.org/2000/svg"><use xlink:href="#p1"/></svg>') == []


def test_ctrl_c_while_the_report_is_written_keeps_the_runs_exit_code_and_summary(tmp_path):
    """The report is drawn after summary.json is on disk (about a second of matplotlib): a Ctrl-C
    then skips the report, says so in one line, and the exit code is still the run's (it was
    click's 'Aborted!' and 1 — caught by the fault test that presses Ctrl-C twice)."""
    proc, out = run_until_its_summary(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "interrupted after the run" in stderr and "Aborted" not in stderr
    assert json.loads((out / "summary.json").read_text())["verdict"] == "passed"
    assert not (out / "report.html").exists()


def run_until_its_summary(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``startline run`` as a process (SIGINT at its default, as a terminal's would be), returned
    once its summary.json is on disk."""
    from startline.testing import CLI, ROOT

    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO.replace("measurement_s = 2", "measurement_s = 1"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*CLI, "run", str(path), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out / "summary.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    return proc, out


def test_ctrl_c_pressed_again_and_again_after_the_run_keeps_its_exit_code_and_summary(tmp_path: Path) -> None:
    """SIGINT every 10 ms from the moment summary.json exists until the process is gone: the
    first one after the run skips the report, none after it changes the exit code (one landing
    as Python finalized killed the process, exit −2, in a fresh-clone CI)."""
    proc, out = run_until_its_summary(tmp_path)
    while proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "interrupted after the run" in stderr and "Aborted" not in stderr and "Traceback" not in stderr
    assert json.loads((out / "summary.json").read_text())["verdict"] == "passed"
