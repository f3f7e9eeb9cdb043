"""Fault injection for the emulators: latency, error answers, slow bodies, late answers and
dropped connections.

Why: a client's retry and idempotency rules can only be tested against a server that misbehaves
on purpose and reproducibly. Random faults draw from a seeded generator (same seed and request
order, same faults); a *script* of faults for the next matching requests makes single cases exact.
``GET /_emulator/responses`` counts answers by status and injected faults by kind. Both emulators
install it (:func:`install_faults`); each passes its own error-body shape.

``PUT /_emulator/faults`` takes (keys left out take their defaults; ``{}`` turns faults off):

=====================  =========  ===============================================================
setting                default    meaning
=====================  =========  ===============================================================
``seed``               0          seed of the generator every random choice below draws from
``latency``            0.0        seconds added before every request is handled
``latency_jitter``     0.0        plus a uniform draw in [0, this) seconds
``error_rate``         0.0        share of requests answered with an error instead of handled
``error_status``       503        the status of those errors ...
``error_statuses``     []         ... or, when not empty, a status drawn from this list each time
``retry_after``        null       ``Retry-After`` (seconds, may be fractional) on injected 429s;
                                  null sends none (IDCS does not document one)
``timeout_rate``       0.0        share handled, then answered only after ``timeout_seconds``
``timeout_seconds``    5.0
``reset_rate``         0.0        share whose connection is dropped with a TCP reset
``slow_body_rate``     0.0        share handled, whose body is dripped in chunks spread over
``slow_body_seconds``  2.0        this many seconds (headers arrive at once)
``script``             []         faults for the next matching requests, in order, before any
                                  random one: ``{"fault": "error"|"timeout"|"reset"|"slow_body",
                                  "status", "seconds", "after", "retry_after", "method", "path"}``
=====================  =========  ===============================================================

Rates are drawn from one uniform number per request, in the order reset, error, timeout, slow
body, so they must add up to at most 1.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import CONTROL_PREFIX

ErrorBody = Callable[[int], tuple[bytes, bytes]]  # status -> (body, content type)

FAULT_KINDS = ("error", "timeout", "reset", "slow_body")
SLOW_BODY_CHUNKS = 8  # a dripped body arrives in this many pieces


@dataclass
class Fault:
    """One injected fault. ``error``: answer ``status`` without handling the request (with
    ``Retry-After: retry_after`` on a 429 when set). ``timeout``: handle it, then hold the answer
    ``seconds`` (the change lands, the client gives up). ``reset``: drop the connection with a TCP
    reset, before handling or (``after``) after. ``slow_body``: handle it, send the headers, then
    drip the body over ``seconds``."""

    kind: str
    status: int = 503
    seconds: float = 5.0
    after: bool = False
    method: str | None = None
    path: str | None = None  # matches when the request path ends with it
    retry_after: float | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (
            self.path is None or path.endswith(self.path))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        kind = data.get("fault") or data.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {FAULT_KINDS}, not {kind!r}")
        retry_after = data.get("retry_after")
        return cls(kind, int(data.get("status", 503)), float(data.get("seconds", 5.0)),
                   bool(data.get("after", False)), data.get("method"), data.get("path"),
                   None if retry_after is None else float(retry_after))

    def to_dict(self) -> dict[str, Any]:
        return {"fault": self.kind, "status": self.status, "seconds": self.seconds,
                "after": self.after, "method": self.method, "path": self.path,
                "retry_after": self.retry_after}


@dataclass
class FaultSettings:
    seed: int = 0
    latency: float = 0.0  # seconds added to every request
    latency_jitter: float = 0.0  # plus up to this much more, drawn from the seeded generator
    error_rate: float = 0.0
    error_status: int = 503
    error_statuses: list[int] = field(default_factory=list)
    retry_after: float | None = None
    timeout_rate: float = 0.0
    timeout_seconds: float = 5.0
    reset_rate: float = 0.0
    slow_body_rate: float = 0.0
    slow_body_seconds: float = 2.0
    script: list[Fault] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "latency": self.latency, "latency_jitter": self.latency_jitter,
                "error_rate": self.error_rate, "error_status": self.error_status,
                "error_statuses": list(self.error_statuses), "retry_after": self.retry_after,
                "timeout_rate": self.timeout_rate, "timeout_seconds": self.timeout_seconds,
                "reset_rate": self.reset_rate, "slow_body_rate": self.slow_body_rate,
                "slow_body_seconds": self.slow_body_seconds,
                "script": [f.to_dict() for f in self.script]}


_RATES = ("error_rate", "timeout_rate", "reset_rate", "slow_body_rate")


def _settings_from(data: dict[str, Any]) -> FaultSettings:
    """Validate a ``PUT /_emulator/faults`` body (``ValueError`` names the bad setting)."""
    known = set(FaultSettings.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown fault settings: {sorted(unknown)}")
    script = [Fault.from_dict(f) for f in data.get("script") or []]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("seed", "error_status"):
            values[key] = int(value)
        elif key == "error_statuses":
            if not isinstance(value, list):
                raise ValueError("error_statuses must be a list of HTTP statuses")
            values[key] = [int(v) for v in value]
        elif key == "retry_after":
            values[key] = None if value is None else float(value)
        elif key != "script":
            values[key] = float(value)
    statuses = [values.get("error_status", 503), *values.get("error_statuses", [])]
    if not all(400 <= s <= 599 for s in statuses):
        raise ValueError("error statuses must be between 400 and 599")
    for rate in _RATES:
        if not 0 <= values.get(rate, 0) <= 1:
            raise ValueError(f"{rate} must be between 0 and 1")
    if sum(values.get(rate, 0) for rate in _RATES) > 1 + 1e-9:
        raise ValueError(f"{' + '.join(_RATES)} must not exceed 1")
    for key in ("latency", "latency_jitter", "timeout_seconds", "slow_body_seconds"):
        if values.get(key, 0) < 0:
            raise ValueError(f"{key} must not be negative")
    if values.get("retry_after") is not None and values["retry_after"] < 0:
        raise ValueError("retry_after must not be negative")
    return FaultSettings(**values, script=script)


class FaultInjector:
    """Decides, per request, the added latency and the fault (if any). Thread-safe."""

    def __init__(self, error_body: ErrorBody | None = None) -> None:
        self.error_body: ErrorBody = error_body or bitbucket_error_body
        self.lock = threading.Lock()
        self.settings = FaultSettings()
        self.rng = random.Random(0)
        self.responses: Counter[int] = Counter()
        self.injected: Counter[str] = Counter()
        self.injected_statuses: Counter[int] = Counter()  # injected errors by status

    def configure(self, data: dict[str, Any]) -> None:
        """Replace the settings; keys left out take their defaults (an empty body = no faults)."""
        settings = _settings_from(data)
        with self.lock:
            self.settings = settings
            self.rng = random.Random(settings.seed)

    def reset(self) -> None:
        with self.lock:
            self.settings = FaultSettings()
            self.rng = random.Random(0)
            self.responses.clear()
            self.injected.clear()
            self.injected_statuses.clear()

    def decide(self, method: str, path: str) -> tuple[float, Fault | None]:
        with self.lock:
            s = self.settings
            latency = s.latency + (self.rng.uniform(0, s.latency_jitter) if s.latency_jitter
                                   else 0.0)
            fault = next((f for f in s.script if f.matches(method, path)), None)
            if fault is not None:
                s.script.remove(fault)
            elif s.error_rate or s.timeout_rate or s.reset_rate or s.slow_body_rate:
                draw = self.rng.random()
                if draw < s.reset_rate:
                    fault = Fault("reset")
                elif draw < s.reset_rate + s.error_rate:
                    status = (self.rng.choice(s.error_statuses) if s.error_statuses
                              else s.error_status)
                    fault = Fault("error", status=status, retry_after=s.retry_after)
                elif draw < s.reset_rate + s.error_rate + s.timeout_rate:
                    fault = Fault("timeout", seconds=s.timeout_seconds)
                elif draw < s.reset_rate + s.error_rate + s.timeout_rate + s.slow_body_rate:
                    fault = Fault("slow_body", seconds=s.slow_body_seconds)
            if fault is not None:
                self.injected[fault.kind] += 1
                if fault.kind == "error":
                    self.injected_statuses[fault.status] += 1
            return latency, fault

    def count(self, status: int) -> None:
        with self.lock:
            self.responses[status] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"responses": {str(k): v for k, v in sorted(self.responses.items())},
                    "total": sum(self.responses.values()), "injected": dict(self.injected),
                    "injected_statuses": {str(k): v for k, v in
                                          sorted(self.injected_statuses.items())}}


def _abort(send: Any) -> None:
    """Reset the TCP connection under uvicorn (SO_LINGER 0, then abort: the peer sees RST).
    Under Starlette's TestClient there is no socket; raise so the test sees a failed request."""
    while not hasattr(send, "__self__") and hasattr(send, "__wrapped__"):
        send = send.__wrapped__  # an outer layer's wrapper (e.g. IDCS's ECID header) names it
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionResetError("emulator fault: connection reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def bitbucket_error_body(status: int) -> tuple[bytes, bytes]:
    """500 and 429 come from Bitbucket itself (``errors`` envelope); others from a proxy."""
    if status in (500, 429):
        message, exception = {
            500: ("An unexpected error occurred (injected)", "java.lang.IllegalStateException"),
            429: ("You have been rate limited. Please wait and try again.",
                  "com.atlassian.bitbucket.throttle.RateLimitExceededException"),
        }[status]
        body = {"errors": [{"context": None, "message": message, "exceptionName": exception}]}
        return json.dumps(body).encode(), b"application/json;charset=UTF-8"
    return f"{status} (injected by the emulator)".encode(), b"text/plain; charset=utf-8"


_plain_error = bitbucket_error_body  # the old name, kept for importers


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
            body, ctype = self.injector.error_body(fault.status)
            headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
            if fault.status == 429 and fault.retry_after is not None:
                headers.append((b"retry-after", f"{fault.retry_after:g}".encode()))
            await counting({"type": "http.response.start", "status": fault.status,
                            "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif fault.kind == "slow_body":
            await self.app(scope, receive, _dripping(counting, fault.seconds))
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


def _dripping(send: Any, seconds: float) -> Any:
    """A ``send`` that passes headers at once and spreads the body over ``seconds``."""
    body = bytearray()

    async def drip(message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body.extend(message.get("body", b""))
        if message.get("more_body"):
            return
        size = max(1, -(-len(body) // SLOW_BODY_CHUNKS))
        chunks = [bytes(body[i:i + size]) for i in range(0, len(body), size)] or [b""]
        pause = seconds / len(chunks)
        for i, chunk in enumerate(chunks):
            await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": i < len(chunks) - 1})

    return drip


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
            injector.injected_statuses.clear()
        return Response(status_code=204)

    p = CONTROL_PREFIX
    return [Route(f"{p}/faults", get_faults, methods=["GET"]),
            Route(f"{p}/faults", put_faults, methods=["PUT"]),
            Route(f"{p}/responses", get_responses, methods=["GET"]),
            Route(f"{p}/responses", clear_responses, methods=["DELETE"])]
