"""Oracle IDCS (identity domain) admin API emulator: OAuth client credentials, SCIM reads and
writes, discovery, rate limits and faults.

It reproduces what the sync depends on and what trips clients up on the real service (see
``reference/idcs-api.md``): ``itemsPerPage`` echoing the page size, ``Resources`` absent when
empty, ``members``/``groups`` only on request, the 10,000-member 400 and ``members[startIndex=S
&count=C]`` paging, string ``status`` in errors, the computed "All Tenant Users" group, dynamic
groups, GROUP_MEMBERSHIP grants derived from group grants and ``X-ORACLE-DMS-ECID`` on every
response. This module is the entry point: tokens, the ECID layer, the read handlers and
:func:`create_idcs_app`. The state lives in :mod:`.idcs_state`, projection in
:mod:`.idcs_projection`, searching and paging in :mod:`.idcs_search`, shared constants and errors
in :mod:`.idcs_common` (the names other packages import from here are re-exported, see
``__all__``); writes and discovery live in :mod:`.idcs_writes` / :mod:`.idcs_endpoints`, limits
in :mod:`.idcs_limits`, faults in :mod:`.faults`. Tests and demos steer the emulator through
``/_emulator`` (see :func:`create_idcs_app`).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import (
    CallCounter,
    CountCallsMiddleware,
    Persistence,
    attach_persistence,
    control_routes,
)
from .idcs_common import (
    ALL_USERS_ID,
    ALL_USERS_NAME,
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    EXPIRY_SCOPE_PREFIX,
    GRANT_SCHEMA,
    GROUP_EXTENSION,
    GROUP_SCHEMA,
    LIST_SCHEMA,
    SCIM_MEDIA_TYPE,
    SCOPE,
    SEARCH_SCHEMA,
    USER_EXTENSION,
    USER_SCHEMA,
    USER_STATE_EXTENSION,
    OAuthError,
    ScimError,
    scim_response,
)
from .idcs_corrupt import CorruptionMiddleware, Corruptions, corruption_routes
from .idcs_projection import (
    GROUP_CASE_EXACT,
    GROUP_URNS,
    USER_CASE_EXACT,
    USER_URNS,
    parse_selection,
)
from .idcs_search import Query, SearchEngine, make_query
from .idcs_state import IdcsState, derived_grant_id

# Names that lived here before the split into idcs_common/_state/_projection/_search, still
# importable from this module (tests, bench and other packages import them from here).
__all__ = [
    "ALL_USERS_ID",
    "ALL_USERS_NAME",
    "DEMO_APP_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "GRANT_SCHEMA",
    "GROUP_EXTENSION",
    "GROUP_SCHEMA",
    "LIST_SCHEMA",
    "SCOPE",
    "USER_EXTENSION",
    "USER_SCHEMA",
    "USER_STATE_EXTENSION",
    "IdcsState",
    "OAuthError",
    "Query",
    "ScimError",
    "SearchEngine",
    "create_idcs_app",
    "derived_grant_id",
    "idcs_error_body",
    "make_query",
    "parse_selection",
    "scim_response",
    "seed_state",
]


# --- HTTP ---------------------------------------------------------------------------------------


class _Tokens:
    """Issued access tokens (opaque, random) with their expiry on the monotonic clock and the
    client they were issued to; ``revoke_all`` is the test control for a revoked credential."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[float, str]] = {}

    def issue(self, ttl: int, client_id: str = "") -> str:
        now = time.monotonic()
        self._tokens = {t: v for t, v in self._tokens.items() if v[0] > now}
        token = secrets.token_urlsafe(48)
        self._tokens[token] = (now + ttl, client_id)
        return token

    def valid(self, token: str) -> bool:
        return self.client_of(token) is not None

    def client_of(self, token: str) -> str | None:
        found = self._tokens.get(token)
        return found[1] if found is not None and time.monotonic() < found[0] else None

    def revoke_all(self) -> int:
        revoked = len(self._tokens)
        self._tokens.clear()
        return revoked


class _EcidMiddleware:
    """Every response carries ``X-ORACLE-DMS-ECID`` (also put in ``request.state.ecid``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ecid = f"{secrets.token_hex(8)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"
        scope.setdefault("state", {})["ecid"] = ecid

        async def with_ecid(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-oracle-dms-ecid", ecid.encode()), (b"x-oracle-dms-rid", b"0")]
                message = {**message, "headers": headers}
            await send(message)

        with_ecid.__wrapped__ = send  # type: ignore[attr-defined]  # lets a fault reset the socket
        await self.app(scope, receive, with_ecid)


def _ecid(request: Request) -> str:
    return str(getattr(request.state, "ecid", ""))


class _Api:
    """The real API's endpoints."""

    def __init__(self, state: IdcsState, token_ttl: int) -> None:
        self.state, self.token_ttl = state, token_ttl
        self.tokens = _Tokens()
        self.engine = SearchEngine(state)

    async def token(self, request: Request) -> Response:
        try:
            form = {
                k: v[0]
                for k, v in parse_qs(
                    (await request.body()).decode("utf-8"), keep_blank_values=True
                ).items()
            }
            client_id = self._authenticate(request, form)
            if not form.get("grant_type"):
                raise OAuthError(400, "invalid_request", "Missing grant_type.")
            if form["grant_type"] != "client_credentials":
                raise OAuthError(
                    400,
                    "unsupported_grant_type",
                    f"Grant type {form['grant_type']} is not supported.",
                )
            ttl = self._token_ttl(form.get("scope", ""))
        except OAuthError as err:
            body = {
                "error": err.error,
                "error_description": err.description,
                "ecid": _ecid(request),
            }
            headers = {"WWW-Authenticate": "Basic"} if err.status == 401 else None
            return JSONResponse(body, status_code=err.status, headers=headers)
        body = {"access_token": self.tokens.issue(ttl, client_id), "token_type": "Bearer",
                "expires_in": ttl}
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authenticate(self, request: Request, form: Mapping[str, str]) -> str:
        header = request.headers.get("authorization", "")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except ValueError:
                decoded = ""
            user, sep, password = decoded.partition(":")
            client_id, secret = (unquote(user), unquote(password)) if sep else (None, None)
        expected = self.state.client_secret(client_id or "")
        if (
            not client_id
            or secret is None
            or expected is None
            or not secrets.compare_digest(expected.encode(), secret.encode())
        ):
            raise OAuthError(401, "invalid_client", "Client authentication failed.")
        return client_id

    def _token_ttl(self, scope: str) -> int:
        ttl, scopes = self.token_ttl, scope.split()
        if SCOPE not in scopes:
            raise OAuthError(
                400, "invalid_scope", "The requested scope is invalid, unknown, or malformed."
            )
        for item in scopes:
            if item.startswith(EXPIRY_SCOPE_PREFIX) and item[len(EXPIRY_SCOPE_PREFIX) :].isdigit():
                ttl = min(ttl, int(item[len(EXPIRY_SCOPE_PREFIX) :]))
            elif item != SCOPE:
                raise OAuthError(400, "invalid_scope", f"Invalid scope: {item}.")
        return ttl

    def _authorize(self, request: Request) -> str:
        """The client id behind the request's bearer token (401 SCIM error if none is valid)."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise ScimError(
                401, "Missing or invalid Authorization header: a Bearer access token is required."
            )
        client_id = self.tokens.client_of(header[7:].strip())
        if client_id is None:
            raise ScimError(401, "Invalid or expired access token.")
        return client_id

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def list_handler(self, name: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            self._authorize(request)
            query = make_query(dict(request.query_params))
            return scim_response(self.engine.search(name, query, self._base(request)))

        return handler

    def search_handler(self, name: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            self._authorize(request)
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError as exc:
                raise ScimError(
                    400, "The request body is not valid JSON.", scim_type="invalidSyntax"
                ) from exc
            if not isinstance(body, dict) or SEARCH_SCHEMA not in (body.get("schemas") or []):
                raise ScimError(
                    400,
                    f"A SearchRequest body with schemas [{SEARCH_SCHEMA}] is required.",
                    scim_type="invalidSyntax",
                )
            query = make_query({k: v for k, v in body.items() if v is not None})
            return scim_response(self.engine.search(name, query, self._base(request)))

        return handler

    def get_handler(self, name: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            self._authorize(request)
            query = make_query(dict(request.query_params))
            rid = request.path_params["id"]
            resource = self.engine.get(name, rid, query, self._base(request))
            response = scim_response(resource)
            coll = self.engine.collections[name]
            meta = coll.view(coll.find(rid), set(), "").get("meta") or {}
            if meta.get("version"):
                response.headers["ETag"] = str(meta["version"])
            return response

        return handler


async def _scim_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ScimError)
    return scim_response(exc.body(), exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {
        404: f"Unknown resource path {request.url.path}.",
        405: f"Method {request.method} is not allowed for {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    response = scim_response(ScimError(exc.status_code, detail).body(), exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def seed_state(state: IdcsState, body: Mapping[str, Any]) -> None:
    """``POST /_emulator/seed``: a full state dump, or ``{"generate": {"seed", "users", "groups"}}``
    (optionally ``"app_id"`` and ``"groups_per_user": [min, max]``) to load a generated org."""
    spec = body.get("generate")
    if spec is None:
        state.load_dict(body)
        return
    from .orggen import generate_idcs_org

    kwargs: dict[str, Any] = {"app_id": spec["app_id"]} if spec.get("app_id") else {}
    if spec.get("groups_per_user"):
        low, high = spec["groups_per_user"]
        kwargs["groups_per_user"] = (int(low), int(high))
    state.load_dict(
        generate_idcs_org(
            int(spec.get("seed", 0)),
            int(spec.get("users", 300)),
            int(spec.get("groups", 40)),
            **kwargs,
        )
    )


def idcs_error_body(status: int) -> tuple[bytes, bytes]:
    """Injected faults as IDCS answers them: a SCIM error body, except a proxy's 502/504."""
    if status in (502, 504):
        return f"{status} (injected by the emulator)".encode(), b"text/plain; charset=utf-8"
    detail = {429: "Too many requests: the API rate limit of this identity domain was reached.",
              503: "Service Unavailable.", 500: "Internal Server Error."}.get(
        status, f"Request failed: HTTP {status} (injected).")
    body = ScimError(status, detail).body()
    return json.dumps(body).encode(), SCIM_MEDIA_TYPE.encode()


def _wrap(app: Starlette, layer: Callable[[Any], Any]) -> None:
    """Put an ASGI layer around the whole app, outside Starlette's error middleware."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: layer(build())  # type: ignore[method-assign]


def create_idcs_app(*, state_file: Path | None = None, token_ttl: int = 3600) -> Starlette:
    """The emulator app; ``app.state.emulator`` is the :class:`IdcsState`, ``app.state.calls``
    the per-endpoint call counter. State is loaded from ``state_file`` and saved at shutdown.

    Layers, outermost first: ``X-ORACLE-DMS-ECID`` on every answer (faults and limits too), fault
    injection (``/_emulator/faults``), rate limits and overload (``/_emulator/rate-limits``),
    then the API with call counting and corruptions. ``POST /_emulator/tokens/revoke`` revokes
    every issued token; ``POST /_emulator/reset`` also clears faults, limits and corruptions (but
    keeps issued tokens).
    """
    from .faults import FaultInjector, FaultMiddleware, fault_routes
    from .idcs_endpoints import DiscoveryEndpoints, WriteEndpoints, endpoint_routes
    from .idcs_limits import Limiter, LimitsMiddleware, limit_routes
    from .idcs_writes import TenantWriter

    state, calls, persistence = IdcsState(), CallCounter(), Persistence(state_file)
    api = _Api(state, token_ttl)
    writer = TenantWriter(state, USER_URNS, GROUP_URNS, USER_CASE_EXACT, GROUP_CASE_EXACT)
    routes = [Route("/oauth2/v1/token", api.token, methods=["POST"])]
    for name in ("Users", "Groups", "Grants", "Apps"):
        routes += [
            Route(f"/admin/v1/{name}", api.list_handler(name), methods=["GET"]),
            Route(f"/admin/v1/{name}/.search", api.search_handler(name), methods=["POST"]),
            Route(f"/admin/v1/{name}/{{id}}", api.get_handler(name), methods=["GET"]),
        ]
    routes += endpoint_routes(WriteEndpoints(writer, api.engine, api._authorize),
                              DiscoveryEndpoints(api._authorize))
    corruptions = Corruptions()  # broken answers on purpose (tests of the extract and the gate)
    faults, limiter = FaultInjector(idcs_error_body), Limiter()

    def on_reset() -> None:
        corruptions.clear()
        faults.reset()
        limiter.reset()  # issued tokens stay valid: revoking is its own control

    async def revoke_tokens(_: Request) -> Response:
        return JSONResponse({"revoked": api.tokens.revoke_all()})

    routes += control_routes(state, calls, persistence, seed=lambda body: seed_state(state, body),
                             on_reset=on_reset)
    routes += corruption_routes(corruptions)
    routes += [*fault_routes(faults), *limit_routes(limiter),
               Route("/_emulator/tokens/revoke", revoke_tokens, methods=["POST"])]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(CountCallsMiddleware, calls=calls),
                    Middleware(CorruptionMiddleware, corruptions=corruptions)],
        exception_handlers={ScimError: _scim_error, HTTPException: _http_error},
    )
    _wrap(app, lambda inner: LimitsMiddleware(inner, limiter))
    _wrap(app, lambda inner: FaultMiddleware(inner, faults))
    _wrap(app, _EcidMiddleware)
    app.state.emulator = state
    app.state.calls = calls
    app.state.persistence = persistence
    app.state.engine = api.engine
    app.state.corruptions = corruptions
    app.state.faults = faults
    app.state.limiter = limiter
    app.state.writer = writer
    app.state.tokens = api.tokens
    attach_persistence(app, state, persistence)
    return app
