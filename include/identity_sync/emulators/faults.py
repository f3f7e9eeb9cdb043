"""Fault injection for the emulators: latency, 5xx answers, late answers and dropped connections.

Why: a client's retry and idempotency rules can only be tested against a server that misbehaves
on purpose and reproducibly. Random faults draw from a seeded generator (same seed and request
order, same faults); a *script* of faults for the next matching requests makes single cases exact.
Configured with ``PUT /_emulator/faults``; ``GET /_emulator/responses`` counts answers by status.
Nothing here knows about Bitbucket, so the IDCS emulator can install it the same way.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import CONTROL_PREFIX

FAULT_KINDS = ("error", "timeout", "reset")


@dataclass
class Fault:
    """One injected fault. ``error``: answer ``status`` without handling the request.
    ``timeout``: handle it, then hold the answer ``seconds`` (the change lands, the client gives
    up). ``reset``: drop the connection with a TCP reset, before handling or (``after``) after."""

    kind: str
    status: int = 503
    seconds: float = 5.0
    after: bool = False
    method: str | None = None
    path: str | None = None  # matches when the request path ends with it

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or path.endswith(self.path))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        kind = data.get("fault") or data.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {FAULT_KINDS}, not {kind!r}")
        return cls(kind, int(data.get("status", 503)), float(data.get("seconds", 5.0)),
                   bool(data.get("after", False)), data.get("method"), data.get("path"))


@dataclass
class FaultSettings:
    seed: int = 0
    latency: float = 0.0  # seconds added to every request
    latency_jitter: float = 0.0  # plus up to this much more, drawn from the seeded generator
    error_rate: float = 0.0
    error_status: int = 503
    timeout_rate: float = 0.0
    timeout_seconds: float = 5.0
    reset_rate: float = 0.0
    script: list[Fault] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "latency": self.latency, "latency_jitter": self.latency_jitter,
                "error_rate": self.error_rate, "error_status": self.error_status,
                "timeout_rate": self.timeout_rate, "timeout_seconds": self.timeout_seconds,
                "reset_rate": self.reset_rate,
                "script": [{"fault": f.kind, "status": f.status, "seconds": f.seconds,
                            "after": f.after, "method": f.method, "path": f.path}
                           for f in self.script]}


class FaultInjector:
    """Decides, per request, the added latency and the fault (if any). Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings = FaultSettings()
        self.rng = random.Random(0)
        self.responses: Counter[int] = Counter()
        self.injected: Counter[str] = Counter()

    def configure(self, data: dict[str, Any]) -> None:
        """Replace the settings; keys left out take their defaults (an empty body = no faults)."""
        known = set(FaultSettings.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        script = [Fault.from_dict(f) for f in data.get("script", [])]
        values = {k: (int(v) if k in ("seed", "error_status") else float(v))
                  for k, v in data.items() if k != "script"}
        for rate in ("error_rate", "timeout_rate", "reset_rate"):
            if not 0 <= values.get(rate, 0) <= 1:
                raise ValueError(f"{rate} must be between 0 and 1")
        with self.lock:
            self.settings = FaultSettings(**values, script=script)
            self.rng = random.Random(self.settings.seed)

    def reset(self) -> None:
        with self.lock:
            self.settings = FaultSettings()
            self.rng = random.Random(0)
            self.responses.clear()
            self.injected.clear()

    def decide(self, method: str, path: str) -> tuple[float, Fault | None]:
        with self.lock:
            s = self.settings
            latency = s.latency + (self.rng.uniform(0, s.latency_jitter) if s.latency_jitter
                                   else 0.0)
            fault = next((f for f in s.script if f.matches(method, path)), None)
            if fault is not None:
                s.script.remove(fault)
            elif s.error_rate or s.timeout_rate or s.reset_rate:
                draw = self.rng.random()
                if draw < s.reset_rate:
                    fault = Fault("reset")
                elif draw < s.reset_rate + s.error_rate:
                    fault = Fault("error", status=s.error_status)
                elif draw < s.reset_rate + s.error_rate + s.timeout_rate:
                    fault = Fault("timeout", seconds=s.timeout_seconds)
            if fault is not None:
                self.injected[fault.kind] += 1
            return latency, fault

    def count(self, status: int) -> None:
        with self.lock:
            self.responses[status] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"responses": {str(k): v for k, v in sorted(self.responses.items())},
                    "total": sum(self.responses.values()), "injected": dict(self.injected)}


def _abort(send: Any) -> None:
    """Reset the TCP connection under uvicorn (SO_LINGER 0, then abort: the peer sees RST).
    Under Starlette's TestClient there is no socket; raise so the test sees a failed request."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionResetError("emulator fault: connection reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _plain_error(status: int) -> tuple[bytes, bytes]:
    """500 comes from Bitbucket itself (``errors`` envelope); 502-504 from a proxy in front."""
    if status == 500:
        body = {"errors": [{"context": None, "message": "An unexpected error occurred (injected)",
                            "exceptionName": "java.lang.IllegalStateException"}]}
        return json.dumps(body).encode(), b"application/json;charset=UTF-8"
    return f"{status} (injected by the emulator)".encode(), b"text/plain; charset=utf-8"


class FaultMiddleware:
    """Outermost ASGI layer (see :func:`install_faults`): applies faults, counts statuses."""

    def __init__(self, app: Any, injector: FaultInjector) -> None:
        self.app, self.injector = app, injector

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        latency, fault = self.injector.decide(scope["method"], scope["path"])
        if latency:
            await asyncio.sleep(latency)

        async def counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.injector.count(message["status"])
            await send(message)

        if fault is None:
            await self.app(scope, receive, counting)
        elif fault.kind == "error":
            body, ctype = _plain_error(fault.status)
            await counting({"type": "http.response.start", "status": fault.status,
                            "headers": [(b"content-type", ctype),
                                        (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        elif fault.kind == "reset" and not fault.after:
            _abort(send)
            await asyncio.sleep(0.01)  # let the server notice the disconnect before we return
        else:
            held: list[dict[str, Any]] = []

            async def hold(message: dict[str, Any]) -> None:
                held.append(message)

            await self.app(scope, receive, hold)
            if fault.kind == "reset":
                _abort(send)
                await asyncio.sleep(0.01)
                return
            await asyncio.sleep(fault.seconds)
            for message in held:
                await counting(message)


def install_faults(app: Starlette, injector: FaultInjector) -> None:
    """Wrap the whole app (outside Starlette's error middleware, which hides the transport)."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: FaultMiddleware(build(), injector)  # type: ignore[method-assign]


def fault_routes(injector: FaultInjector) -> list[BaseRoute]:
    """``GET/PUT /_emulator/faults`` and ``GET/DELETE /_emulator/responses``."""

    async def get_faults(_: Request) -> Response:
        return JSONResponse(injector.settings.to_dict())

    async def put_faults(request: Request) -> Response:
        try:
            injector.configure(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(injector.settings.to_dict())

    async def get_responses(_: Request) -> Response:
        return JSONResponse(injector.stats())

    async def clear_responses(_: Request) -> Response:
        with injector.lock:
            injector.responses.clear()
            injector.injected.clear()
        return Response(status_code=204)

    p = CONTROL_PREFIX
    return [Route(f"{p}/faults", get_faults, methods=["GET"]),
            Route(f"{p}/faults", put_faults, methods=["PUT"]),
            Route(f"{p}/responses", get_responses, methods=["GET"]),
            Route(f"{p}/responses", clear_responses, methods=["DELETE"])]
