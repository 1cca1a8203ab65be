"""``startline run --dashboard [HOST:]PORT`` and ``--metrics [HOST:]PORT``: the running run on
HTTP, served by the orchestrator on Trio — hypercorn with its Trio worker (a well-kept ASGI server
that runs on Trio itself, so the page is served from the run's own event loop, no thread or
second loop), an ASGI app of four routes:

- ``/``: the live page (self-contained: uPlot and its CSS inlined, no request leaves it),
- ``/events``: server-sent events, the run's state once a second (``observe.Observer.state``),
- ``/metrics``: OpenMetrics text (``openmetrics.py``, written by prometheus_client),
- ``/report``: report.html once the run has written it.

Read-only. On a non-loopback address every request must carry the token (``?token=`` or
``Authorization: Bearer``); a wrong or missing one is refused (403)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from startline.engine.scenario import ConfigError
from startline.live.observe import Observer

EXTRA = "the dashboard needs hypercorn and prometheus_client: pip install 'startline[dashboard]'"
PUSH_EVERY_S = 1.0
GRACE_S = 1.0
"""Open streams get this long to end when the server stops."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def available() -> bool:
    try:
        import hypercorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def parse_bind(text: str, option: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (HOST default 127.0.0.1; PORT 0: any free one)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(option, f"{text!r}: give [HOST:]PORT, such as 8765 or 0.0.0.0:8765") from None
    if not 0 <= number <= 65535:
        raise ConfigError(option, f"{text!r}: a port from 0 to 65535")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static(name: str) -> str:
    return resources.files("startline.live").joinpath("static", name).read_text(encoding="utf-8")


def page() -> str:
    """The live page, self-contained: its template with uPlot's script and style inlined."""
    return (
        _static("dashboard.html")
        .replace("/*UPLOT_CSS*/", _static("uplot/uPlot.min.css"))
        .replace("/*UPLOT_JS*/", _static("uplot/uPlot.iife.min.js"))
    )


@attrs.define(eq=False, kw_only=True)
class TokenGate:
    """An HTTP server of the run's (or of ``serve``'s) on Trio: where it listens, the token a
    non-loopback address requires, and the serving; ``app`` is the subclass's ASGI app."""

    host: str
    port: int
    token: str | None = None
    url: str = ""
    landing: str = "/"
    """The address printed is this path on the server (with the token)."""
    _stopping: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        if not is_loopback(self.host) and self.token is None:
            self.token = secrets.token_urlsafe(16)

    def allowed(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        given = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and value.startswith(b"Bearer "):
                given = value[7:].decode()
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The subclass's routes, for a GET that passed the gate (method, token)."""
        raise NotImplementedError

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status`` gets the address (with the token, if any)."""
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"]
        config.graceful_timeout = GRACE_S
        config.accesslog = None
        config.errorlog = None
        config.loglevel = "WARNING"

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if scope["type"] != "http":
                return
            if scope["method"] not in ("GET", "HEAD"):
                await respond(send, 405, "text/plain", b"read-only: GET only\n")
            elif scope["path"] == "/favicon.ico":  # (a browser asks; there is none)
                await respond(send, 204, "image/x-icon", b"")
            elif not self.allowed(scope):
                await respond(send, 403, "text/plain", b"a token is required: ?token=...\n")
            else:
                await self.app(scope, receive, send)

        try:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
                token = f"?token={self.token}" if self.token else ""
                self.url = binds[0].rstrip("/") + self.landing + token
                task_status.started(self.url)
        finally:
            self._stopping.set()


@attrs.define(eq=False, kw_only=True)
class Dashboard(TokenGate):
    """One HTTP server for a run: the page and its events (``page``), /metrics always."""

    out: Path
    page: bool = True
    observer: Observer | None = None
    """Set once the run's orchestrator exists (until then the page says the run is preparing)."""
    final: dict[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not self.page:
            self.landing = "/metrics"

    def finish(self, summary: dict[str, Any], report: bool) -> None:
        """The run is over: its status and verdict (and the report, when written) on the page."""
        self.final = {
            "status": summary.get("status"),
            "verdict": summary.get("verdict"),
            "report": "report" if report else None,
        }
        if self.observer is not None:
            self.observer.settle()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A GET that passed the gate (``TokenGate.serve``)."""
        path = scope["path"]
        if path == "/metrics":
            from startline.live.openmetrics import CONTENT_TYPE, exposition

            await respond(send, 200, CONTENT_TYPE, exposition(self.observer))
        elif path == "/" and self.page:
            await respond(send, 200, "text/html; charset=utf-8", page().encode())
        elif path == "/events" and self.page:
            await self._events(scope, receive, send)
        elif path == "/report" and self.page and (self.out / "report.html").is_file():
            await respond(send, 200, "text/html; charset=utf-8", (self.out / "report.html").read_bytes())
        else:
            await respond(send, 404, "text/plain", b"not found\n")

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The run's state once a second as server-sent events, until the client goes or the
        server stops; each event only the time-series rows the client has not had."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")],
            }
        )
        since = -1
        gone = trio.Event()

        async def watch_client() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client)
            while not gone.is_set() and not self._stopping.is_set():
                if self.observer is not None:
                    await self.observer.read()
                    state = self.observer.state(since)
                    if state["series"]:
                        since = state["series"][-1]["interval"]
                else:
                    state = {"status": "PREPARING", "progress": "preparing the run", "series": []}
                state["final"] = self.final
                data = json.dumps(state, default=str)
                try:
                    await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})
                except Exception:  # the client went away mid-send
                    break
                with trio.move_on_after(PUSH_EVERY_S):
                    await gone.wait()
            nursery.cancel_scope.cancel()
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            pass


async def respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
