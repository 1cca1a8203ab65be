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
from startline.views.rows import phase_rows
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
    assert shown == [pair for p in busy for pair in ((p, "all"), *(kinds if p in lasted else ()))]
    out = io.StringIO()
    print_summary(summary, Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    table = text[text.index("Phases") :]
    assert len(re.findall(r"│\s+│ read\s+│", table)) == len(lasted)  # under each phase that lasted
    cells = re.findall(r"<td>(read|write|all)</td>", html.render(summary))  # the test extra has matplotlib
    assert cells.count("read") == len(lasted) and cells.count("write") == len(lasted)
