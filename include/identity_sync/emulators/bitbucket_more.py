"""The rest of the emulated Bitbucket API: credentials, GDPR erasure, CAPTCHA reset, personal
access tokens, non-admin user and group listings, the deprecated single-membership endpoints,
user directories and rate-limit settings.

Kept apart from :mod:`.bitbucket` so each module stays readable; the handlers use the same
:class:`~.bitbucket.Call` and renderers, and :func:`.bitbucket.api_routes` serves them.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .bitbucket import (
    Call,
    Handler,
    _endpoint,
    _json,
    _names,
    _text,
    application_user,
    not_permitted,
    page,
)
from .bitbucket_ratelimit import RateLimiter, UserLimit, parse_limit
from .bitbucket_state import (
    ADMIN,
    EX_NO_SUCH_USER,
    INTERNAL_DIRECTORY,
    LICENSED,
    RANK,
    BitbucketError,
    BitbucketState,
    User,
    filter_groups,
    filter_users,
    invalid,
)
from .common import CONTROL_PREFIX


def limiter(call: Call) -> RateLimiter:
    return call.request.app.state.rate_limiter


# ---- users ---------------------------------------------------------------------------------


def set_credentials(call: Call) -> Response:
    """``PUT /admin/users/credentials`` ``{"name","password","passwordConfirm"}`` -> 204."""
    data = call.json()
    name = _text(data, "name", required=True) or ""
    password = _text(data, "password", required=True) or ""
    if data.get("passwordConfirm") != password:
        raise invalid("passwordConfirm", "The password and its confirmation do not match.")
    call.state.set_password(call.caller, name, password)
    return Response(status_code=204)


def check_erasable(call: Call) -> Response:
    """``GET /admin/users/erasure?name=`` -> 204 for a deleted, not yet erased username; 409 if
    a live user holds the name, 404 if no user of that name was ever deleted."""
    call.state.erasable(call.required("name"))
    return Response(status_code=204)


def erase_user(call: Call) -> Response:
    """``POST /admin/users/erasure?name=`` -> ``{"newIdentifier": "user-<5 hex>"}``; the deleted
    name is then forgotten (erasing it again is 404). Deterministic per name (UNCERTAIN: real
    identifiers look random). No plugin erasure handlers are emulated."""
    return _json({"newIdentifier": call.state.erase_user(call.required("name"))})


def clear_captcha(call: Call) -> Response:
    """``DELETE /admin/users/captcha?name=`` -> 204 (also when no CAPTCHA was pending); 403 if
    the user outranks the caller, as the spec's 403 text says."""
    call.state.clear_captcha(call.caller, call.required("name"))
    return Response(status_code=204)


def list_application_users(call: Call) -> Response:
    """``GET /users``: any authenticated user; ``group`` and ``permission[.N]`` narrow the list.

    A permission filter matches the *effective* level (direct or through a group), e.g.
    ``permission=LICENSED_USER`` lists everyone holding a licence. An unknown group gives an
    empty page (UNCERTAIN: the spec lists no 404 here).
    """
    state = call.state
    users = filter_users(state.sorted_users(), call.param("filter"))
    group = call.param("group")
    if group:
        found = state.groups.get(group.lower())
        ids = state.members_of(found) if found else set()
        users = [u for u in users if u.id in ids]
    for key, value in call.request.query_params.multi_items():
        if key == "permission" or re.fullmatch(r"permission\.\d+", key):
            if value not in RANK:
                raise invalid(key, f"{value} is not a valid global permission.")
            users = [u for u in users if state.rank(u) >= RANK[value]]
    return page(call, users, lambda u: application_user(u, call.base_url))


def get_user_by_slug(call: Call) -> Response:
    user = call.state.user_by_slug(call.request.path_params["userSlug"])
    return _json(application_user(user, call.base_url))


def list_group_names(call: Call) -> Response:
    """``GET /groups``: the names only, as plain strings."""
    return page(call, filter_groups(call.state.sorted_groups(), call.param("filter")),
                lambda g: g.name)


# ---- deprecated single-membership endpoints (still served by 9.4) ---------------------------


def add_user_deprecated(call: Call) -> Response:
    """``POST /admin/groups/add-user`` ``{"context": group, "itemName": user}``."""
    data = call.json()
    group, user = _text(data, "context", required=True), _text(data, "itemName", required=True)
    call.state.add_memberships(call.caller, [user or ""], [group or ""])
    return Response(status_code=200)


def add_group_deprecated(call: Call) -> Response:
    """``POST /admin/users/add-group`` ``{"context": user, "itemName": group}``."""
    data = call.json()
    user, group = _text(data, "context", required=True), _text(data, "itemName", required=True)
    call.state.add_memberships(call.caller, [user or ""], [group or ""])
    return Response(status_code=200)


def remove_user_deprecated(call: Call) -> Response:
    """``POST /admin/groups/remove-user`` ``{"context": group, "itemName": user}``."""
    data = call.json()
    group, user = _text(data, "context", required=True), _text(data, "itemName", required=True)
    call.state.remove_membership(call.caller, user or "", group or "")
    return Response(status_code=200)


# ---- user directories ----------------------------------------------------------------------


def user_directories(call: Call) -> Response:
    """A page of ``{"name","type","description","isActive"}``: the spec types one object
    (defect, reference §13); ``isActive`` is what DC 10.2.2 sends. Whether the real answer is
    paged is UNCERTAIN. Directories are the internal one plus every directory a user is from;
    the others are shown as read-only LDAP connectors."""
    names = sorted({u.directory for u in call.state.users.values()} - {INTERNAL_DIRECTORY})
    dirs = [{"name": INTERNAL_DIRECTORY, "type": "INTERNAL", "isActive": True,
             "description": "Bitbucket's own user directory"}]
    dirs += [{"name": n, "type": "CONNECTOR", "isActive": True,
              "description": "Read-only LDAP directory"} for n in names]
    return page(call, dirs, lambda d: d)


# ---- rate limiting -------------------------------------------------------------------------


def get_rate_limit_settings(call: Call) -> Response:
    return _json(limiter(call).settings())


def set_rate_limit_settings(call: Call) -> Response:
    data = call.json()
    enabled = data.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise invalid("enabled", "enabled must be true or false.")
    capacity, fill_rate = parse_limit(data.get("defaultSettings"), field="defaultSettings")
    limiter(call).set_defaults(enabled, capacity, fill_rate)
    return _json(limiter(call).settings())


def _user_limit(data: dict[str, Any]) -> UserLimit:
    whitelisted = data.get("whitelisted")
    if whitelisted is not None and not isinstance(whitelisted, bool):
        raise invalid("whitelisted", "whitelisted must be true or false.")
    capacity, fill_rate = parse_limit(data.get("settings"), field="settings")
    if not whitelisted and capacity is None and fill_rate is None:
        raise invalid("settings", "Either whitelisted or settings is required.")
    return UserLimit(bool(whitelisted), capacity, fill_rate)


def _render_user_limit(call: Call, user: User | None, limit: UserLimit) -> dict[str, Any]:
    body: dict[str, Any] = {} if user is None else {"user": application_user(user, call.base_url)}
    body["whitelisted"] = limit.whitelisted
    if not limit.whitelisted:
        rl = limiter(call)
        body["settings"] = {"capacity": limit.capacity or rl.capacity,
                            "fillRate": limit.fill_rate or rl.fill_rate}
    return body


def _no_settings(user: User) -> BitbucketError:
    # UNCERTAIN: the spec lists 404 but not its body; a user without own settings is assumed
    # to answer like an unknown one.
    return BitbucketError(404, f"User {user.name} has no rate limit settings.", EX_NO_SUCH_USER)


def list_user_limits(call: Call) -> Response:
    state, rl = call.state, limiter(call)
    users = [u for u in state.sorted_users() if u.id in rl.users]
    return page(call, filter_users(users, call.param("filter")),
                lambda u: _render_user_limit(call, u, rl.users[u.id]))


def bulk_set_user_limits(call: Call) -> Response:
    """Answers the applied settings without ``user`` (the spec's single-object type fits no
    bulk answer well; UNCERTAIN). Unknown usernames: 400, nothing changed."""
    data = call.json()
    names = _names(data, "usernames")
    limit = _user_limit(data)
    users = []
    for name in names:
        user = call.state.find_user(name)
        if user is None:
            raise invalid("usernames", f"User {name} does not exist.")
        users.append(user)
    for user in users:
        limiter(call).set_user(user, limit)
    return _json(_render_user_limit(call, None, limit))


def get_user_limit(call: Call) -> Response:
    user = call.state.user_by_slug(call.request.path_params["userSlug"])
    limit = limiter(call).users.get(user.id)
    if limit is None:
        raise _no_settings(user)
    return _json(_render_user_limit(call, user, limit))


def set_user_limit(call: Call) -> Response:
    """``{"whitelisted": true}`` exempts the user. An unknown slug is 404 (the spec lists no 404
    for this PUT; the slug lookup answers it as every ``{userSlug}`` path does)."""
    user = call.state.user_by_slug(call.request.path_params["userSlug"])
    limit = _user_limit(call.json())
    limiter(call).set_user(user, limit)
    return _json(_render_user_limit(call, user, limit))


def delete_user_limit(call: Call) -> Response:
    user = call.state.user_by_slug(call.request.path_params["userSlug"])
    if not limiter(call).delete_user(user):
        raise _no_settings(user)
    return Response(status_code=204)


def reject_history(call: Call) -> Response:
    """Users refused with 429, most refusals first (``order=asc`` reverses; UNCERTAIN key)."""
    order = (call.param("order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise invalid("order", "order must be ASC or DESC.")
    by_id = {u.id: u for u in call.state.users.values()}
    rows = [(by_id[i], r) for i, r in limiter(call).rejects.items() if i in by_id]
    rows.sort(key=lambda x: (x[1].count, x[1].last), reverse=order == "desc")
    return page(call, rows, lambda x: {"user": application_user(x[0], call.base_url),
                                       "rejectCount": x[1].count, "lastRejectTime": x[1].last})


# ---- personal access tokens (/rest/access-tokens, not /rest/api) ----------------------------


def _token_owner(call: Call) -> User:
    """The ``{userSlug}`` user, if the caller may manage their tokens: themselves, or an ADMIN
    not outranked by them (401 otherwise, as the spec says; the rank rule is UNCERTAIN)."""
    state, caller = call.state, call.caller
    user = state.user_by_slug(call.request.path_params["userSlug"])
    if user is not caller and (state.rank(caller) < ADMIN or state.rank(user) > state.rank(caller)):
        raise not_permitted()
    return user


def list_access_tokens(call: Call) -> Response:
    """A page of ``RestAccessToken`` ``{"id","name","createdDate"}``; none by default."""
    return page(call, call.state.tokens.get(_token_owner(call).id, []), dict)


def delete_access_token(call: Call) -> Response:
    call.state.delete_token(_token_owner(call), call.request.path_params["tokenId"])
    return Response(status_code=204)


# Served under both versions, like the plugin's other REST resources (the brief names latest).
ACCESS_TOKEN_PREFIXES = ("/rest/access-tokens/1.0", "/rest/access-tokens/latest")
ACCESS_TOKEN_API: list[tuple[str, str, int, Handler]] = [
    ("/users/{userSlug}", "GET", LICENSED, list_access_tokens),
    ("/users/{userSlug}/{tokenId}", "DELETE", LICENSED, delete_access_token),
]


def access_token_routes(state: BitbucketState) -> list[BaseRoute]:
    """The token endpoints with the same authentication, rate limiting, rank check and error
    envelope as :func:`.bitbucket.api_routes`, only under their own prefix."""
    by_path: dict[str, dict[str, tuple[int, Handler]]] = {}
    for path, method, rank, handler in ACCESS_TOKEN_API:
        by_path.setdefault(path, {})[method] = (rank, handler)
    return [Route(f"{prefix}{path}", _endpoint(state, handlers), methods=list(handlers))
            for prefix in ACCESS_TOKEN_PREFIXES for path, handlers in by_path.items()]


MORE_API: list[tuple[str, str, int, Handler]] = [
    ("/admin/users/credentials", "PUT", ADMIN, set_credentials),
    ("/admin/users/erasure", "GET", ADMIN, check_erasable),
    ("/admin/users/erasure", "POST", ADMIN, erase_user),
    ("/admin/users/captcha", "DELETE", ADMIN, clear_captcha),
    ("/users", "GET", LICENSED, list_application_users),
    ("/users/{userSlug}", "GET", LICENSED, get_user_by_slug),
    ("/groups", "GET", LICENSED, list_group_names),
    ("/admin/groups/add-user", "POST", ADMIN, add_user_deprecated),
    ("/admin/users/add-group", "POST", ADMIN, add_group_deprecated),
    ("/admin/groups/remove-user", "POST", ADMIN, remove_user_deprecated),
    ("/admin/user-directories", "GET", ADMIN, user_directories),
    ("/admin/rate-limit/settings", "GET", LICENSED, get_rate_limit_settings),
    ("/admin/rate-limit/settings", "PUT", ADMIN, set_rate_limit_settings),
    ("/admin/rate-limit/settings/users", "GET", ADMIN, list_user_limits),
    ("/admin/rate-limit/settings/users", "POST", ADMIN, bulk_set_user_limits),
    ("/admin/rate-limit/settings/users/{userSlug}", "GET", ADMIN, get_user_limit),
    ("/admin/rate-limit/settings/users/{userSlug}", "PUT", ADMIN, set_user_limit),
    ("/admin/rate-limit/settings/users/{userSlug}", "DELETE", ADMIN, delete_user_limit),
    ("/admin/rate-limit/history", "GET", ADMIN, reject_history),
]


def rate_limit_control_routes(state: BitbucketState, rl: RateLimiter) -> list[BaseRoute]:
    """``GET/PUT /_emulator/rate-limit``: ``{"enabled", "capacity", "fillRate", "whitelist":
    [names]}`` without authentication, so tests and the demo can set limits in one call."""

    def describe() -> dict[str, Any]:
        by_id = {u.id: u.name for u in state.users.values()}
        return {"enabled": rl.enabled, "capacity": rl.capacity, "fillRate": rl.fill_rate,
                "whitelist": sorted(by_id[i] for i, lim in rl.users.items()
                                    if lim.whitelisted and i in by_id),
                "rejected": sum(r.count for r in rl.rejects.values())}

    async def get(_: Request) -> Response:
        return JSONResponse(describe())

    async def put(request: Request) -> Response:
        data = await request.json()
        try:
            users = [state.user(n) for n in data.get("whitelist", [])]
            capacity, fill = parse_limit({k: data[k] for k in ("capacity", "fillRate")
                                          if k in data}, field="settings")
        except BitbucketError as err:
            return JSONResponse({"error": err.message}, status_code=400)
        rl.set_defaults(bool(data.get("enabled", True)), capacity, fill)
        for user in users:
            rl.set_user(user, UserLimit(whitelisted=True))
        return JSONResponse(describe())

    return [Route(f"{CONTROL_PREFIX}/rate-limit", get, methods=["GET"]),
            Route(f"{CONTROL_PREFIX}/rate-limit", put, methods=["PUT"])]
