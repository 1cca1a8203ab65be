"""``startline serve DIR``: the runs under a directory (and, with ``--catalogue``, every kept
run) in a browser — a list, each run's report, a comparison of the runs ticked — served on Trio by
hypercorn as the dashboard is (``dashboard.py``: the same server, token rule and responses).
Read-only; runs are addressed by their run id, never by a path."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import attrs

from startline.live.dashboard import Receive, Scope, Send, TokenGate, respond
from startline.views import html as htmlreport

MAX_DEPTH = 3
"""Run directories are looked for this deep under DIR."""


def runs_under(root: Path) -> dict[str, Path]:
    """run id → directory of every summary.json under ``root`` (``MAX_DEPTH`` levels)."""
    found: dict[str, Path] = {}
    for depth in range(MAX_DEPTH + 1):
        for path in sorted(root.glob("/".join(["*"] * depth + ["summary.json"]))):
            try:
                run_id = json.loads(path.read_text()).get("run_id")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(run_id, str) and run_id not in found:
                found[run_id] = path.parent
    return found


@attrs.define(eq=False, kw_only=True)
class Browser(TokenGate):
    root: Path
    catalogue: bool = False
    results: str | None = None

    def runs(self) -> dict[str, Path]:
        found = runs_under(self.root)
        if self.catalogue:
            from startline.catalogue import CatalogueError, open_catalogue

            try:
                c = open_catalogue(self.results)
                try:
                    for e in c.entries():
                        if (Path(e.directory) / "summary.json").is_file():
                            found.setdefault(e.run_id, Path(e.directory))
                finally:
                    c.close()
            except CatalogueError:
                pass  # (the page says what it found; the catalogue's own commands say why)
        return found

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A GET that passed the gate (``TokenGate.serve``)."""
        path, query = scope["path"], parse_qs(scope.get("query_string", b"").decode())
        runs = self.runs()
        if path == "/":
            await respond(send, 200, "text/html; charset=utf-8", self.index(runs, query).encode())
        elif path.startswith("/report/") and path[len("/report/") :] in runs:
            directory = runs[path[len("/report/") :]]
            report = directory / "report.html"
            if report.is_file():
                body = report.read_bytes()
            else:
                body = htmlreport.render(json.loads((directory / "summary.json").read_text())).encode()
            await respond(send, 200, "text/html; charset=utf-8", body)
        elif path == "/compare":
            chosen = [r for r in query.get("run", []) if r in runs]
            if len(chosen) < 2:
                await respond(send, 400, "text/plain", b"tick two runs or more to compare\n")
                return
            await respond(send, 200, "text/html; charset=utf-8", compare_page(chosen, runs).encode())
        else:
            await respond(send, 404, "text/plain", b"not found\n")

    def index(self, runs: dict[str, Path], query: dict[str, list[str]]) -> str:
        token = f"?token={quote(self.token)}" if self.token else ""
        rows = []
        for run_id, directory in sorted(runs.items(), key=lambda item: _started(item[1]), reverse=True):
            s = _summary(directory)
            m = (s.get("phases") or {}).get("MEASUREMENT") or {}
            lat = m.get("latency_ms") or {}
            rows.append(
                "<tr>"
                f'<td><input type="checkbox" name="run" value="{html.escape(run_id)}"></td>'
                f'<td><a href="report/{quote(run_id)}{token}">{html.escape(run_id)}</a></td>'
                f"<td>{html.escape(str(s.get('scenario', '')))}</td><td>{html.escape(str(s.get('status', '')))}</td>"
                f"<td>{html.escape(str(s.get('verdict', '')))}</td>"
                f'<td class="n">{_n(m.get("qps"))}</td><td class="n">{_n(lat.get("p99"))}</td>'
                f"<td>{html.escape(str(directory))}</td></tr>"
            )
        hidden = f'<input type="hidden" name="token" value="{html.escape(self.token)}">' if self.token else ""
        table = (
            '<form action="compare" method="get">'
            + hidden
            + "<table><tr><th></th><th>run</th><th>scenario</th><th>status</th><th>verdict</th><th>qps</th>"
            "<th>p99 ms</th><th>directory</th></tr>"
            + "".join(rows)
            + '</table><p><button type="submit">compare the runs ticked (the oldest is the base)</button></p></form>'
        )
        where = html.escape(str(self.root)) + (" and the catalogue" if self.catalogue else "")
        return (
            '<!doctype html>\n<html lang=en><head><meta charset=utf-8><link rel="icon" href="data:,">'
            f"<title>startline runs</title><style>{htmlreport.STYLE}</style></head><body>\n"
            f"<h1>startline: {len(runs)} runs in {where}</h1>\n"
            + (table if runs else "<p>no summary.json found</p>")
            + "\n</body></html>\n"
        )


def compare_page(chosen: list[str], runs: dict[str, Path]) -> str:
    from startline.views.compare import DEFAULT_BANDS, compare

    chosen = sorted(chosen, key=lambda r: (_started(runs[r]), r))  # the oldest is the base
    summaries = [_summary(runs[r]) for r in chosen]
    results = [
        compare(summaries[0], other, DEFAULT_BANDS, (chosen[0], r))
        for r, other in zip(chosen[1:], summaries[1:], strict=True)
    ]
    return htmlreport.render_comparison(list(zip(chosen, summaries, strict=True)), results)


def _summary(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _started(directory: Path) -> float:
    return float(_summary(directory).get("start_time") or 0.0)


def _n(v: Any) -> str:
    return "-" if not isinstance(v, int | float) else f"{v:,.2f}"
