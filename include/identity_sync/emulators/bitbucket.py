"""Bitbucket Data Center emulator: the admin users/groups/permissions REST API.

Reproduces what a provisioning client depends on (see shared/reference/bitbucket-api.md):
query-parameter create answering 204, ``email`` (not ``emailAddress``) on update, 409 on
duplicates, 401 for both bad credentials and missing permission, the paging wrapper, groups from
``users/more-members``, the ``{"errors": [...]}`` envelope and a non-envelope 404 for unknown
routes. The same API is served under ``/rest/api/1.0`` and ``/rest/api/latest``. The rules live
in :mod:`.bitbucket_state`; this module only parses requests and renders answers.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .bitbucket_ratelimit import RateLimiter
from .bitbucket_state import (
    ADMIN,
    DEFAULT_GROUP,
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    EX_AUTHORISATION,
    INTERNAL_DIRECTORY,
    LICENSED,
    RANK,
    BitbucketError,
    BitbucketState,
    Group,
    User,
    filter_groups,
    filter_users,
    invalid,
)
from .common import (
    CONTROL_PREFIX,
    CallCounter,
    CountCallsMiddleware,
    Persistence,
    attach_persistence,
    control_routes,
)
from .faults import FaultInjector, fault_routes, install_faults

__all__ = [
    "DEFAULT_GROUP",
    "DEMO_ADMIN_PASSWORD",
    "DEMO_ADMIN_USER",
    "INTERNAL_DIRECTORY",
    "BitbucketState",
    "create_bitbucket_app",
]

API_PREFIXES = ("/rest/api/1.0", "/rest/api/latest")
JSON_TYPE = "application/json;charset=UTF-8"
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
BAD_CREDENTIALS = "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"


def bad_credentials() -> BitbucketError:
    return BitbucketError(
        401, "Authentication failed. Please check your credentials and try again.", BAD_CREDENTIALS
    )


def unlicensed() -> BitbucketError:
    return BitbucketError(
        401, "You are not currently licensed to use Bitbucket.\n"
        "Please contact your administrator to resolve this issue.",
        "com.atlassian.bitbucket.auth.NoAccessAuthenticationException")  # fmt: skip


def not_permitted() -> BitbucketError:
    return BitbucketError(401, "You are not permitted to access this resource", EX_AUTHORISATION)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status, headers=headers, media_type=JSON_TYPE)


def _error(err: BitbucketError) -> Response:
    body = {"errors": [{"context": err.context, "message": err.message,
                        "exceptionName": err.exception_name}]}  # fmt: skip
    headers = dict(err.headers)
    if err.exception_name == BAD_CREDENTIALS:
        headers["WWW-Authenticate"] = 'Basic realm="Bitbucket"'
    return _json(body, err.status, headers or None)


@dataclass
class Call:
    """One authenticated request, with its body already read (handlers run synchronously)."""

    request: Request
    state: BitbucketState
    caller: User
    body: bytes

    def param(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def required(self, name: str) -> str:
        value = self.param(name)
        if not value or not value.strip():
            raise invalid(name, f"{name} is required.")
        return value

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise invalid("body", "The request body must be a JSON object.")
        return data

    @property
    def base_url(self) -> str:
        return str(self.request.base_url).rstrip("/")


# ---- rendering -----------------------------------------------------------------------------


def application_user(user: User, base: str) -> dict[str, Any]:
    return {
        "name": user.name, "emailAddress": user.email, "id": user.id,
        "displayName": user.display_name, "active": user.active, "slug": user.slug,
        "type": user.type, "links": {"self": [{"href": f"{base}/users/{user.slug}"}]},
    }  # fmt: skip


def detailed_user(user: User, base: str) -> dict[str, Any]:
    data = application_user(user, base)
    links = data.pop("links")
    data.update(directoryName=user.directory, deletable=user.mutable_details)
    if user.last_authentication is not None:
        data["lastAuthenticationTimestamp"] = user.last_authentication
    data.update(mutableDetails=user.mutable_details, mutableGroups=user.mutable_groups)
    data["links"] = links
    return data


def detailed_group(group: Group) -> dict[str, Any]:
    return {"name": group.name, "deletable": group.deletable}


def _int_param(call: Call, name: str, default: int) -> int:
    raw = call.param(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        # UNCERTAIN: Jersey may answer 404 for an unparseable query parameter; 400 is clearer.
        raise invalid(name, f"{name} must be a number.") from None


def page(call: Call, items: Sequence[Any], render: Callable[[Any], Any]) -> Response:
    """The paging wrapper; ``nextPageStart`` only when more remain. Limit clamped to 1..1000."""
    start = max(0, _int_param(call, "start", 0))
    limit = min(MAX_LIMIT, max(1, _int_param(call, "limit", DEFAULT_LIMIT)))
    chunk = items[start : start + limit]
    last = start + len(chunk) >= len(items)
    body: dict[str, Any] = {"size": len(chunk), "limit": limit, "isLastPage": last,
                            "values": [render(x) for x in chunk], "start": start}  # fmt: skip
    if not last:
        body["nextPageStart"] = start + len(chunk)
    return _json(body)


def _users_page(call: Call, users: Sequence[User]) -> Response:
    return page(call, filter_users(users, call.param("filter")),
                lambda u: detailed_user(u, call.base_url))  # fmt: skip


def _groups_page(call: Call, groups: Sequence[Group]) -> Response:
    return page(call, filter_groups(groups, call.param("filter")), detailed_group)


def _text(data: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = data.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid(field, f"{field} is required and must be a non-empty string.")
    return value


def _names(data: dict[str, Any], field: str) -> list[str]:
    value = data.get(field)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise invalid(field, f"{field} must be a non-empty list of names.")
    return value


def _permission(call: Call) -> str:
    permission = call.required("permission")
    if permission not in RANK:
        raise invalid("permission", f"{permission} is not a valid global permission.")
    return permission


def _name_list(call: Call) -> list[str]:
    names = [n for n in call.request.query_params.getlist("name") if n]
    if not names:
        raise invalid("name", "name is required.")
    return names


# ---- users ---------------------------------------------------------------------------------


def list_users(call: Call) -> Response:
    """Filtered before sorting: a ``find_user`` per subset user must not sort everyone."""
    users = filter_users(call.state.users.values(), call.param("filter"))
    return _users_page(call, call.state.sorted_users(users))


def create_user(call: Call) -> Response:
    """All inputs are query parameters; a JSON body is ignored, as by the real server."""
    name, display = call.required("name"), call.required("displayName")
    email = call.required("emailAddress")
    if "@" not in email:  # UNCERTAIN: how strictly Bitbucket validates addresses
        raise invalid("emailAddress", "Please enter a valid email address.")
    notify = call.param("notify")
    password = call.param("password") or None
    if password is None and (notify is None or notify.lower() == "false"):
        raise invalid("password", "password is required unless notify is set.")
    # Absent or empty -> the default (true); otherwise Java's Boolean.valueOf semantics.
    add_raw = call.param("addToDefaultGroup")
    add_to_default = not add_raw or add_raw.lower() == "true"
    call.state.create_user(name, display, email, password, add_to_default)
    return Response(status_code=204)


def update_user(call: Call) -> Response:
    """Body ``{"name","displayName","email"}``; an ``emailAddress`` key is ignored (real quirk)."""
    data = call.json()
    name = _text(data, "name", required=True) or ""
    display = _text(data, "displayName", required=False)
    email = _text(data, "email", required=False)
    user = call.state.update_user(call.caller, name, display, email)
    return _json(detailed_user(user, call.base_url))


def rename_user(call: Call) -> Response:
    data = call.json()
    name = _text(data, "name", required=True) or ""
    new_name = _text(data, "newName", required=True) or ""
    user = call.state.rename_user(call.caller, name, new_name)
    return _json(detailed_user(user, call.base_url))


def delete_user(call: Call) -> Response:
    user = call.state.delete_user(call.caller, call.required("name"))
    return _json(detailed_user(user, call.base_url))


def user_groups(call: Call) -> Response:
    """``users/more-members``: the spec calls the values users, the real server sends groups."""
    user = call.state.user(call.required("context"))
    groups = [g for g in call.state.sorted_groups() if user.id in call.state.members_of(g)]
    return _groups_page(call, groups)


def user_other_groups(call: Call) -> Response:
    user = call.state.user(call.required("context"))
    groups = [g for g in call.state.sorted_groups() if user.id not in call.state.members_of(g)]
    return _groups_page(call, groups)


def add_user_to_groups(call: Call) -> Response:
    data = call.json()
    user = _text(data, "user", required=True) or ""
    call.state.add_memberships(call.caller, [user], _names(data, "groups"))
    return Response(status_code=200)


def remove_user_from_group(call: Call) -> Response:
    """Body ``{"context": user, "itemName": group}`` (the docs example swaps them: BSERV-13706)."""
    data = call.json()
    user = _text(data, "context", required=True) or ""
    group = _text(data, "itemName", required=True) or ""
    call.state.remove_membership(call.caller, user, group)
    return Response(status_code=200)


# ---- groups --------------------------------------------------------------------------------


def list_groups(call: Call) -> Response:
    return _groups_page(call, call.state.sorted_groups())


def create_group(call: Call) -> Response:
    return _json(detailed_group(call.state.create_group(call.required("name"))))


def delete_group(call: Call) -> Response:
    return _json(detailed_group(call.state.delete_group(call.caller, call.required("name"))))


def group_members(call: Call) -> Response:
    """A missing group is 404 NoSuchGroupException (the spec lists only 401)."""
    ids = call.state.members_of(call.state.group(call.required("context")))
    return _users_page(call, call.state.sorted_members(ids))


def group_non_members(call: Call) -> Response:
    ids = call.state.members_of(call.state.group(call.required("context")))
    return _users_page(call, [u for u in call.state.sorted_users() if u.id not in ids])


def add_users_to_group(call: Call) -> Response:
    data = call.json()
    group = _text(data, "group", required=True) or ""
    call.state.add_memberships(call.caller, _names(data, "users"), [group])
    return Response(status_code=200)


# ---- global permissions --------------------------------------------------------------------


def group_permissions(call: Call) -> Response:
    state = call.state
    granted = [g for g in state.sorted_groups() if state.group_rank(g)]
    return page(call, filter_groups(granted, call.param("filter")),
                lambda g: {"group": {"name": g.name},  # RestPermittedGroup: name only
                           "permission": state.group_perms[g.name.lower()]})  # fmt: skip


def groups_without_permission(call: Call) -> Response:
    return _groups_page(
        call, [g for g in call.state.sorted_groups() if not call.state.group_rank(g)]
    )


def set_group_permission(call: Call) -> Response:
    call.state.set_group_permission(call.caller, _name_list(call), _permission(call))
    return Response(status_code=204)


def revoke_group_permission(call: Call) -> Response:
    call.state.revoke_group_permission(call.caller, call.required("name"))
    return Response(status_code=204)


def user_permissions(call: Call) -> Response:
    """Values are ``{"user": RestApplicationUser, "permission"}`` (the spec's type is wrong)."""
    state = call.state
    granted = [u for u in state.sorted_users() if u.id in state.user_perms]
    return page(call, filter_users(granted, call.param("filter")),
                lambda u: {"user": application_user(u, call.base_url),
                           "permission": state.user_perms[u.id]})  # fmt: skip


def users_without_permission(call: Call) -> Response:
    """Users without a *direct* grant; they may still be licensed through a group."""
    state = call.state
    users = filter_users([u for u in state.sorted_users() if u.id not in state.user_perms],
                         call.param("filter"))  # fmt: skip
    return page(call, users, lambda u: application_user(u, call.base_url))


def set_user_permission(call: Call) -> Response:
    call.state.set_user_permission(call.caller, _name_list(call), _permission(call))
    return Response(status_code=204)


def revoke_user_permission(call: Call) -> Response:
    call.state.revoke_user_permission(call.caller, call.required("name"))
    return Response(status_code=204)


# (path, method, minimum effective permission, handler). GETs that the spec opens to
# LICENSED_USER stay that way; every change and every permission listing needs ADMIN.
Handler = Callable[[Call], Response]
API: list[tuple[str, str, int, Handler]] = [
    ("/admin/users", "GET", LICENSED, list_users),
    ("/admin/users", "POST", ADMIN, create_user),
    ("/admin/users", "PUT", ADMIN, update_user),
    ("/admin/users", "DELETE", ADMIN, delete_user),
    ("/admin/users/rename", "POST", ADMIN, rename_user),
    ("/admin/users/more-members", "GET", LICENSED, user_groups),
    ("/admin/users/more-non-members", "GET", LICENSED, user_other_groups),
    ("/admin/users/add-groups", "POST", ADMIN, add_user_to_groups),
    ("/admin/users/remove-group", "POST", ADMIN, remove_user_from_group),
    ("/admin/groups", "GET", LICENSED, list_groups),
    ("/admin/groups", "POST", ADMIN, create_group),
    ("/admin/groups", "DELETE", ADMIN, delete_group),
    ("/admin/groups/more-members", "GET", LICENSED, group_members),
    ("/admin/groups/more-non-members", "GET", LICENSED, group_non_members),
    ("/admin/groups/add-users", "POST", ADMIN, add_users_to_group),
    ("/admin/permissions/groups", "GET", ADMIN, group_permissions),
    ("/admin/permissions/groups", "PUT", ADMIN, set_group_permission),
    ("/admin/permissions/groups", "DELETE", ADMIN, revoke_group_permission),
    ("/admin/permissions/groups/none", "GET", ADMIN, groups_without_permission),
    ("/admin/permissions/users", "GET", ADMIN, user_permissions),
    ("/admin/permissions/users", "PUT", ADMIN, set_user_permission),
    ("/admin/permissions/users", "DELETE", ADMIN, revoke_user_permission),
    ("/admin/permissions/users/none", "GET", ADMIN, users_without_permission),
]


def _authenticate(state: BitbucketState, request: Request) -> User:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise bad_credentials()
    try:
        name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise bad_credentials() from None
    user = state.authenticate(name, password) if sep else None
    if user is None:
        raise bad_credentials()
    if state.rank(user) < LICENSED:
        raise unlicensed()
    return user


def _endpoint(state: BitbucketState, handlers: dict[str, tuple[int, Handler]]) -> Any:
    """One ASGI endpoint per path, dispatching on the method (so a 405 lists every method)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        min_rank, handler = handlers[method]
        body = await request.body()
        try:
            with state.lock:
                caller = _authenticate(state, request)
                # Every authenticated request costs a token, whatever it asks for.
                request.app.state.rate_limiter.check(caller)
                if state.rank(caller) < min_rank:
                    raise not_permitted()
                response = handler(Call(request, state, caller, body))
        except BitbucketError as err:
            response = _error(err)
        if method != "GET" and response.status_code != 429:  # throttled: never reached the API
            writes = getattr(request.app.state, "write_log", None)
            if writes is not None:
                writes.add(method, request.url.path, dict(request.query_params), body,
                           response.status_code)
        return response

    return endpoint


def api_routes(state: BitbucketState) -> list[BaseRoute]:
    from .bitbucket_more import MORE_API  # it imports this module's helpers

    by_path: dict[str, dict[str, tuple[int, Handler]]] = {}
    for path, method, rank, handler in [*API, *MORE_API]:
        by_path.setdefault(path, {})[method] = (rank, handler)
    return [
        Route(f"{prefix}{path}", _endpoint(state, handlers), methods=list(handlers))
        for prefix in API_PREFIXES
        for path, handlers in by_path.items()
    ]


class WriteLog:
    """Every change request the API handled, with its answer: what "no duplicate writes" is
    checked against (a create answered 204 twice for one name would be a duplicate). Requests
    refused by injected faults never reach the API and are not here; a "timeout" fault lets
    the change land and holds the answer, so it is here."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []

    def add(self, method: str, path: str, query: dict[str, str], body: bytes,
            status: int) -> None:
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        query = {k: v for k, v in query.items() if k != "password"}  # never keep a secret
        with self.lock:
            self.entries.append({"method": method, "path": path, "query": query,
                                 "body": data, "status": status})

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


def write_log_routes(log: WriteLog, state: BitbucketState) -> list[BaseRoute]:
    """``GET/DELETE /_emulator/writes`` and ``GET/PUT /_emulator/licence`` (seat limit)."""

    async def get_writes(_: Request) -> Response:
        with log.lock:
            return _json(list(log.entries))

    async def clear_writes(_: Request) -> Response:
        log.clear()
        return Response(status_code=204)

    async def get_licence(_: Request) -> Response:
        with state.lock:
            return _json({"limit": state.license_limit, "licensed": len(state.licensed_ids())})

    async def put_licence(request: Request) -> Response:
        limit = (await request.json()).get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            return _json({"error": "limit must be a non-negative integer or null"}, 400)
        with state.lock:
            state.license_limit = limit
        return await get_licence(request)

    return [Route(f"{CONTROL_PREFIX}/writes", get_writes, methods=["GET"]),
            Route(f"{CONTROL_PREFIX}/writes", clear_writes, methods=["DELETE"]),
            Route(f"{CONTROL_PREFIX}/licence", get_licence, methods=["GET"]),
            Route(f"{CONTROL_PREFIX}/licence", put_licence, methods=["PUT"])]


async def _container_error(_: Request, exc: Exception) -> Response:
    """Unknown route or method: the servlet container's body, not the ``errors`` envelope.

    The 404 body is observed on DC 10.4.2; the 405 body reuses that shape (UNCERTAIN).
    """
    assert isinstance(exc, HTTPException)
    body = {"message": f"HTTP {exc.status_code} {exc.detail}", "status-code": exc.status_code,
            "sub-code": -1}  # fmt: skip
    return _json(body, exc.status_code, dict(exc.headers or {}))


def create_bitbucket_app(*, state_file: Path | None = None) -> Starlette:
    """The emulator app; state persists to ``state_file`` (loaded now, saved at shutdown).

    Rate limiting starts off and faults start empty; ``POST /_emulator/reset`` clears both.
    """
    from .bitbucket_more import access_token_routes, rate_limit_control_routes

    state, calls = BitbucketState(), CallCounter()
    limiter, faults, writes = RateLimiter(), FaultInjector(), WriteLog()
    persistence = Persistence(state_file)

    def reset_extras() -> None:
        limiter.reset()
        faults.reset()
        writes.clear()

    app = Starlette(
        routes=[*api_routes(state),
                *control_routes(state, calls, persistence, on_reset=reset_extras),
                *fault_routes(faults), *rate_limit_control_routes(state, limiter),
                *access_token_routes(state), *write_log_routes(writes, state)],
        exception_handlers={404: _container_error, 405: _container_error},
    )
    app.add_middleware(CountCallsMiddleware, calls=calls)
    install_faults(app, faults)
    app.state.emulator = state
    app.state.calls = calls
    app.state.rate_limiter = limiter
    app.state.faults = faults
    app.state.write_log = writes
    attach_persistence(app, state, persistence)
    return app
