"""Shared plumbing for the emulators: test controls, call counting, persistence, serving.

Both emulators are Starlette apps. Their real API lives at the real paths; everything a test or a
demo needs to steer them lives under ``/_emulator/`` so it can never be mistaken for the real API.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator"


class EmulatorState(Protocol):
    """What an emulator's in-memory state must offer to be seeded, dumped and persisted."""

    def to_dict(self) -> dict[str, Any]: ...

    def load_dict(self, data: dict[str, Any]) -> None: ...

    def clear(self) -> None: ...


class CallCounter:
    """Counts requests per ``METHOD route-path`` (route templates, not raw URLs)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class Persistence:
    """Keeps an emulator's state in a JSON file between runs (demo and users' own trials)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load_into(self, state: EmulatorState) -> bool:
        if self.path is None or not self.path.exists():
            return False
        state.load_dict(json.loads(self.path.read_text(encoding="utf-8")))
        return True

    def save(self, state: EmulatorState) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_dict()), encoding="utf-8")
        tmp.replace(self.path)


def control_routes(
    state: EmulatorState,
    calls: CallCounter,
    persistence: Persistence,
    seed: Callable[[dict[str, Any]], None] | None = None,
    on_reset: Callable[[], None] | None = None,
) -> list[BaseRoute]:
    """Routes under ``/_emulator``: health, seed, reset, state dump, call counts, save.

    ``seed`` receives the JSON body of ``POST /_emulator/seed``; by default the body is a full
    state dump (as returned by ``GET /_emulator/state``) that replaces the current state.
    ``on_reset`` also runs on ``POST /_emulator/reset`` (e.g. to clear faults and rate limits).
    """

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def do_seed(request: Request) -> Response:
        body = await request.json()
        (seed or state.load_dict)(body)
        return JSONResponse({"status": "seeded"})

    async def reset(_: Request) -> Response:
        state.clear()
        calls.reset()
        if on_reset is not None:
            on_reset()
        return JSONResponse({"status": "reset"})

    async def dump(_: Request) -> Response:
        return JSONResponse(state.to_dict())

    async def get_calls(_: Request) -> Response:
        return JSONResponse(calls.snapshot())

    async def reset_calls(_: Request) -> Response:
        calls.reset()
        return Response(status_code=204)

    async def save(_: Request) -> Response:
        persistence.save(state)
        return JSONResponse({"status": "saved", "path": str(persistence.path)})

    p = CONTROL_PREFIX
    return [
        Route(f"{p}/health", health, methods=["GET"]),
        Route(f"{p}/seed", do_seed, methods=["POST"]),
        Route(f"{p}/reset", reset, methods=["POST"]),
        Route(f"{p}/state", dump, methods=["GET"]),
        Route(f"{p}/calls", get_calls, methods=["GET"]),
        Route(f"{p}/calls", reset_calls, methods=["DELETE"]),
        Route(f"{p}/save", save, methods=["POST"]),
    ]


class CountCallsMiddleware:
    """ASGI middleware: counts every non-control request by its matched route template."""

    def __init__(self, app: Any, calls: CallCounter) -> None:
        self.app = app
        self.calls = calls

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(CONTROL_PREFIX):
            self.calls.add(f"{scope['method']} {_route_template(scope)}")
        await self.app(scope, receive, send)


def _route_template(scope: dict[str, Any]) -> str:
    app: Starlette | None = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", None) or []
    from starlette.routing import Match

    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", scope["path"])
    return scope["path"]


def attach_persistence(app: Starlette, state: EmulatorState, persistence: Persistence) -> None:
    """Load state now if a file exists; save it when the server shuts down (lifespan end)."""
    persistence.load_into(state)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(instance: Any) -> AsyncIterator[Any]:
        async with inner(instance) as value:
            yield value
        persistence.save(state)

    app.router.lifespan_context = lifespan


class RunningServer:
    """A uvicorn server running in a background thread; ``base_url`` is known once started."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="emulator", daemon=True)
        self.host = host

    def start(self, timeout: float = 10.0) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("emulator server failed to start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        sock = self.server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningServer]:
    """Run ``app`` on a real socket for the duration of the block (port 0 picks a free port)."""
    server = RunningServer(app, host, port).start()
    try:
        yield server
    finally:
        server.stop()
