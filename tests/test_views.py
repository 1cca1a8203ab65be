"""The result views choose their rows in one place (``views.rows``): the terminal summary and
report.html show the same phases and the same operation kinds (under each phase that lasted)."""

from __future__ import annotations

import io
import re

import trio
import trio.testing
from rich.console import Console

from startline.inprocess import run_in_process_async
from startline.testing import CLOCK0, scenario
from startline.views import html
from startline.views.rows import headline, phase_rows, shape
from startline.views.terminal import print_summary


def two_kind_summary() -> dict:
    sc = scenario(
        operations=[
            {
                "name": "read",
                "call": "startline.backends.memory.ops:sleep_ms",
                "params": {"ms": {"type": "int", "min": 5, "max": 9}},
            },
            {
                "name": "write",
                "call": "startline.backends.memory.ops:sleep_ms",
                "params": {"ms": {"type": "int", "min": 5, "max": 9}},
            },
        ]
    )

    async def main() -> dict:
        return (await run_in_process_async(sc, clock=CLOCK0)).summary

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_every_phase_that_lasted_shows_its_kinds_in_the_terminal_and_in_the_html_alike() -> None:
    summary = two_kind_summary()
    rows = phase_rows(summary)
    shown = [(phase, kind) for phase, kind, *_ in rows]
    busy = [p for p, b in summary["phases"].items() if b["ops"] or b["errors"]]
    lasted = [p for p in busy if summary["phases"][p]["duration_s"]]
    assert lasted == ["WARMUP", "MEASUREMENT"]
    kinds = (("", "read"), ("", "write"))

    def label(p: str) -> str:  # DONE lasted no time: said so, and shown without a rate
        return "DONE (ended after the planned end)" if p == "DONE" else p

    assert shown == [pair for p in busy for pair in ((label(p), "all"), *(kinds if p in lasted else ()))]
    assert all(qps is None for phase, kind, _ops, _errors, qps, *_ in rows if phase.startswith("DONE"))
    out = io.StringIO()
    print_summary(summary, Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    table = text[text.index("Phases") :]
    assert len(re.findall(r"│\s+│ read\s+│", table)) == len(lasted)  # under each phase that lasted
    cells = re.findall(r"<td>(read|write|all)</td>", html.render(summary))  # the test extra has matplotlib
    assert cells.count("read") == len(lasted) and cells.count("write") == len(lasted)


def test_the_headline_comes_first_and_says_the_connections_a_run_grew_to() -> None:
    """Issue 22 #21: the report led with the start's charts and buried the figures a reader wants;
    a run that grew from 2 to 32 connections said "2 workers × 1 connections"; "-0.00"."""
    summary = two_kind_summary()
    page = html.render(summary)
    assert page.index('id="headline"') < page.index('id="verdict"') < page.index('id="chart-start"')
    assert "throughput" in page[: page.index('id="verdict"')]
    grown = summary | {"timeseries": [*summary["timeseries"], {"t_s": 99, "ops": 0, "errors": 0, "connections": 32}]}
    start = summary["start"]["connections"]
    assert shape(grown) == f"2 workers, {start} connections at the start, up to 32"
    assert shape(summary) == f"2 workers, {start} connections"
    out = io.StringIO()
    negative = summary | {"start": summary["start"] | {"skew_ms": -0.0001}}
    print_summary(negative, Console(file=out, width=160, color_system=None))
    assert "-0.00" not in out.getvalue() and "-0.00" not in html.render(negative)


def test_retried_operations_are_said_in_the_headline_of_the_terminal_and_the_report() -> None:
    """Issue 24: operations with ``max_tries`` tried again after a conflict (pgbench's "number of
    transactions retried"): said where the figures are read, and only when there were any."""
    summary = two_kind_summary()
    m = summary["phases"]["MEASUREMENT"]
    kinds = m["by_kind"] | {"read": m["by_kind"]["read"] | {"retried": 7, "retries": 9}}
    retried = summary | {
        "phases": summary["phases"] | {"MEASUREMENT": m | {"retried": 7, "retries": 9, "by_kind": kinds}}
    }
    out = io.StringIO()
    print_summary(retried, Console(file=out, width=160, color_system=None))
    assert "7 operations" in out.getvalue() and "9 retries" in out.getvalue()
    assert "9 retries" in html.render(retried)
    assert not any(figure == "retried" for figure, *_ in headline(summary))
    # and per kind, in the phase table both draw from
    assert ("", "read (7 retried, 9 retries)") in [(p, k) for p, k, *_ in phase_rows(retried)]
    assert "read (7 retried, 9 retries)" in html.render(retried) and "read (7 retried" in out.getvalue()
