"""Broken IDCS answers on purpose: what a proxy, a half-deployed tenant or a buggy page does.

Why: the extract must refuse anything it cannot trust (and the quality gate must quarantine bad
records) with a readable reason; that can only be tested against a server that misbehaves
exactly and reproducibly. Rules are set with ``PUT /_emulator/corruptions``::

    {"rules": [{"kind": "not_json", "path": "/admin/v1/Users", "start_index": 3}],
     "page_cap": 2}

``page_cap`` makes listings return at most that many resources per page (legal SCIM: clients
advance by ``len(Resources)``), so small tenants span several pages. Rule kinds:

- ``not_json``, ``truncated`` (the real body cut in half), ``html_200`` (a proxy error page with
  status 200), ``content_type`` (the real body labelled ``value``, default ``text/plain``);
- ``total_results``: ``totalResults`` replaced by ``value``;
- ``repeat_previous``: the page at ``start_index`` repeats the previous page's records;
- ``patch``: resources whose attributes equal ``match`` get ``set`` applied (a null removes), on
  every page — raw JSON the state loader would refuse (wrong types, broken references);
- ``append``: the raw resources in ``value`` are added to the first page (``totalResults`` of
  every page grows to match) — e.g. users with no id or a duplicate id.

``start_index`` limits a rule to the page starting there; ``times`` to that many answers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import CONTROL_PREFIX

KINDS = ("not_json", "truncated", "html_200", "content_type", "total_results",
         "repeat_previous", "patch", "append")
JSON_KINDS = ("total_results", "repeat_previous", "patch", "append")
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title>"
             b"</head><body><h1>Service Temporarily Unavailable</h1><p>The server is "
             b"temporarily unable to service your request.</p></body></html>")
NOT_JSON = b"Resources=[{id: 4a1f, userName: alice}] <-- not JSON"


@dataclass
class Corruption:
    kind: str
    path: str = "/admin/v1/Users"
    start_index: int | None = None
    value: Any = None
    match: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    times: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Corruption:
        if data.get("kind") not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {data.get('kind')!r}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def applies(self, path: str, start: int) -> bool:
        page = self.start_index if self.kind != "append" else (self.start_index or 1)
        return (path == self.path and (page is None or page == start)
                and (self.times is None or self.times > 0))


class Corruptions:
    """The active rules, shared by the control routes and the middleware."""

    def __init__(self) -> None:
        self.rules: list[Corruption] = []
        self.page_cap: int | None = None
        self._lock = threading.Lock()

    def configure(self, body: dict[str, Any]) -> None:
        rules = [Corruption.from_dict(r) for r in body.get("rules") or []]
        cap = body.get("page_cap")
        with self._lock:
            self.rules, self.page_cap = rules, (int(cap) if cap else None)

    def clear(self) -> None:
        self.configure({})

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [asdict(r) for r in self.rules], "page_cap": self.page_cap}

    def take(self, path: str, start: int) -> list[Corruption]:
        """The rules for this page (each use counts against ``times``)."""
        with self._lock:
            chosen = [r for r in self.rules if r.applies(path, start)]
            for rule in chosen:
                if rule.times is not None:
                    rule.times -= 1
            return chosen

    def appended(self, path: str) -> int:
        return sum(len(r.value or []) for r in self.rules if r.kind == "append" and r.path == path)


def corruption_routes(corruptions: Corruptions) -> list[BaseRoute]:
    async def put(request: Request) -> Response:
        try:
            corruptions.configure(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(corruptions.to_dict())

    async def get(_: Request) -> Response:
        return JSONResponse(corruptions.to_dict())

    async def delete(_: Request) -> Response:
        corruptions.clear()
        return Response(status_code=204)

    path = f"{CONTROL_PREFIX}/corruptions"
    return [Route(path, put, methods=["PUT"]), Route(path, get, methods=["GET"]),
            Route(path, delete, methods=["DELETE"])]


class CorruptionMiddleware:
    """ASGI middleware applying the rules to ``GET /admin/v1/...`` answers."""

    def __init__(self, app: Any, corruptions: Corruptions) -> None:
        self.app, self.corruptions = app, corruptions

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        c = self.corruptions
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not path.startswith("/admin/v1/") or not (c.rules or c.page_cap)):
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        start, count = _int(query.get("startIndex"), 1), _int(query.get("count"), 50)
        if c.page_cap:
            count = min(count, c.page_cap)
            query["count"] = str(count)
        rules = c.take(path, start)
        if any(r.kind == "repeat_previous" for r in rules) and start > 1:
            query["startIndex"] = str(max(1, start - count))
        scope = {**scope, "query_string": urlencode(query).encode()}
        status, headers, body = await _capture(self.app, scope, receive)
        status, headers, body = self._corrupt(rules, path, start, status, headers, body)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _corrupt(self, rules: list[Corruption], path: str, start: int, status: int,
                 headers: list[tuple[bytes, bytes]], body: bytes
                 ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        extra = self.corruptions.appended(path)
        if status != 200 or not (rules or extra):
            return status, headers, body
        data = json.loads(body)
        if extra and "totalResults" in data:
            data["totalResults"] += extra
        for rule in rules:
            if rule.kind in JSON_KINDS:
                _edit(data, rule, start)
        body = json.dumps(data).encode()
        for rule in rules:
            if rule.kind == "not_json":
                body = NOT_JSON
            elif rule.kind == "truncated":
                body = body[: len(body) // 2]
            elif rule.kind == "html_200":
                body, headers = HTML_PAGE, _set_type(headers, "text/html; charset=utf-8")
            elif rule.kind == "content_type":
                headers = _set_type(headers, str(rule.value or "text/plain"))
        return 200, headers, body


def _edit(data: dict[str, Any], rule: Corruption, start: int) -> None:
    resources = data.get("Resources") or []
    if rule.kind == "total_results":
        data["totalResults"] = rule.value
    elif rule.kind == "repeat_previous":
        data["startIndex"] = start
    elif rule.kind == "append":
        resources.extend(rule.value or [])
    elif rule.kind == "patch":
        for res in resources:
            if all(res.get(k) == v for k, v in rule.match.items()):
                for k, v in rule.set.items():
                    if v is None:
                        res.pop(k, None)
                    else:
                        res[k] = v
    if resources:
        data["Resources"] = resources


def _set_type(headers: list[tuple[bytes, bytes]], ctype: str) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() != b"content-type"] + [
        (b"content-type", ctype.encode())]


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


async def _capture(app: Any, scope: dict[str, Any], receive: Any
                   ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run the app and collect its whole answer instead of sending it."""
    status, headers, chunks = 500, [], []

    async def collect(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, collect)
    return status, headers, b"".join(chunks)
