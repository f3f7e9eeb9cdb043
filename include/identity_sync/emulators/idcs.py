"""Oracle IDCS (identity domain) admin API emulator: OAuth client credentials, SCIM reads and
writes, discovery, rate limits and faults.

It reproduces what the sync depends on and what trips clients up on the real service (see
``reference/idcs-api.md``): ``itemsPerPage`` echoing the page size, ``Resources`` absent when
empty, ``members``/``groups`` only on request, the 10,000-member 400 and ``members[startIndex=S
&count=C]`` paging, string ``status`` in errors, the computed "All Tenant Users" group, dynamic
groups, GROUP_MEMBERSHIP grants derived from group grants and ``X-ORACLE-DMS-ECID`` on every
response. This module holds the state and the read path; writes and discovery live in
:mod:`.idcs_writes` / :mod:`.idcs_endpoints`, limits in :mod:`.idcs_limits`, faults in
:mod:`.faults`. Tests and demos steer the emulator through ``/_emulator`` (see
:func:`create_idcs_app`).
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import scim_filter
from .common import (
    CallCounter,
    CountCallsMiddleware,
    Persistence,
    attach_persistence,
    control_routes,
)
from .idcs_corrupt import CorruptionMiddleware, Corruptions, corruption_routes

DEMO_CLIENT_ID = "sync-client"
DEMO_CLIENT_SECRET = "sync-secret"
DEMO_APP_ID = "a3c0e3b1f2d54e6f9a7b8c9d0e1f2a3b"
SCOPE = "urn:opc:idm:__myscopes__"
EXPIRY_SCOPE_PREFIX = "urn:opc:resource:expiry="

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
GRANT_SCHEMA = "urn:ietf:params:scim:schemas:oracle:idcs:Grant"
APP_SCHEMA = "urn:ietf:params:scim:schemas:oracle:idcs:App"
USER_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"
USER_STATE_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:userState:User"
GROUP_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:group:Group"
DYNAMIC_GROUP_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:dynamic:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
ORACLE_ERROR_SCHEMA = "urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error"
SCIM_MEDIA_TYPE = "application/scim+json;charset=UTF-8"

ALL_USERS_ID = "AllUsersId"
ALL_USERS_NAME = "All Tenant Users"
ALL_USERS_CREATED = "2023-11-02T09:00:00.000Z"
DEFAULT_COUNT = 50
MAX_COUNT = 1000
MEMBER_CAP = 10_000

ALWAYS, DEFAULT, REQUEST, NEVER = "always", "default", "request", "never"


# --- errors -------------------------------------------------------------------------------------


class ScimError(Exception):
    """An error the real service reports as a SCIM Error body (``status`` is a string)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        scim_type: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type, self.message_id = (
            status,
            detail,
            scim_type,
            message_id,
        )

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": [ERROR_SCHEMA],
            "detail": self.detail,
            "status": str(self.status),
        }
        if self.scim_type:
            body["scimType"] = self.scim_type
        if self.message_id:
            body["schemas"].append(ORACLE_ERROR_SCHEMA)
            body[ORACLE_ERROR_SCHEMA] = {"messageId": self.message_id}
        return body


class OAuthError(Exception):
    """A token endpoint error (RFC 6749 body plus Oracle's ``ecid``)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def scim_response(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, media_type=SCIM_MEDIA_TYPE)


# --- attribute metadata (from the SDK models in idcs-attribute-metadata.json) -------------------

_COMMON_RULES = {
    "id": ALWAYS,
    "idcspreventedoperations": REQUEST,
    "tags": REQUEST,
    "idcslastupgradedinrelease": REQUEST,
}
_UX, _USX, _GX = USER_EXTENSION.lower(), USER_STATE_EXTENSION.lower(), GROUP_EXTENSION.lower()
USER_RULES: dict[str, str] = {
    **_COMMON_RULES,
    "username": ALWAYS,
    "password": NEVER,
    "groups": REQUEST,
    "groups.value": ALWAYS,
    "groups.type": REQUEST,
    **{
        f"{_UX}:{a}": REQUEST
        for a in (
            "status",
            "creationmechanism",
            "groupmembershiplastmodified",
            "isaccountrecoveryenrolled",
            "accountrecoveryrequired",
            "supportaccounts",
            "idcsapproleslimitedtogroups",
            "accounts",
            "grants",
            "approles",
        )
    },
    **{
        f"{_UX}:{a}": NEVER
        for a in (
            "isauthenticationdelegated",
            "bypassnotification",
            "userflowcontrolledbyexternalclient",
            "isgroupmembershipnormalized",
            "isgroupmembershipsyncedtousersgroups",
            "notificationemailtemplateid",
        )
    },
    **{
        f"{_USX}:{a}": REQUEST
        for a in (
            "lastsuccessfullogindate",
            "previoussuccessfullogindate",
            "lastfailedlogindate",
            "loginattempts",
            "recoveryattempts",
            "recoveryenrollattempts",
        )
    },
}
GROUP_RULES: dict[str, str] = {
    **_COMMON_RULES,
    "displayname": ALWAYS,
    "nonuniquedisplayname": ALWAYS,
    "members": REQUEST,
    "members.value": ALWAYS,
    "members.ocid": ALWAYS,
    **{f"{_GX}:{a}": REQUEST for a in ("creationmechanism", "grants", "owners", "approles")},
}
GRANT_RULES: dict[str, str] = {
    **_COMMON_RULES,
    "compositekey": REQUEST,
    "grantee.display": REQUEST,
    "app.display": REQUEST,
}
APP_RULES: dict[str, str] = {**_COMMON_RULES, "grants": REQUEST}

_X = "urn:ietf:params:scim:schemas:oracle:idcs:extension:"
USER_URNS = (
    USER_SCHEMA,
    USER_EXTENSION,
    USER_STATE_EXTENSION,
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:schemas:idcs:extension:custom:User",
    *(
        f"{_X}{e}"
        for e in (
            "passwordState:User",
            "posix:User",
            "kerberosUser:User",
            "mfa:User",
            "adaptive:User",
            "sff:User",
            "securityQuestions:User",
            "selfRegistration:User",
            "socialAccount:User",
            "dbUser:User",
            "termsOfUse:User",
            "passwordless:User",
            "OCITags",
            "userCredentials:User",
            "capabilities:User",
            "dbCredentials:User",
            "selfChange:User",
        )
    ),
)
GROUP_URNS = (
    GROUP_SCHEMA,
    GROUP_EXTENSION,
    *(
        f"{_X}{e}"
        for e in ("posix:Group", "requestable:Group", "dbcs:Group", "dynamic:Group", "OCITags")
    ),
)

# caseExact "true" attributes; every other string compares case-insensitively.
USER_CASE_EXACT = frozenset({"ocid", "groups.value", "groups.ocid"})
GROUP_CASE_EXACT = frozenset(
    {
        "ocid",
        "members.value",
        "members.ocid",
        "members.type",
        "members.membershipocid",
        "members.$ref",
    }
)
GRANT_CASE_EXACT = frozenset(
    {
        "ocid",
        "grantmechanism",
        "compositekey",
        "grantee.value",
        "grantee.type",
        "app.value",
        "entitlement.attributevalue",
    }
)


# --- state --------------------------------------------------------------------------------------


def _demo_clients() -> list[dict[str, str]]:
    return [{"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}]


def is_dynamic(group: Mapping[str, Any]) -> bool:
    ext = scim_filter.get_attr(group, DYNAMIC_GROUP_EXTENSION) or {}
    return scim_filter.get_attr(ext, "membershipType") == "dynamic"


def derived_grant_id(grant_id: str, user_id: str) -> str:
    """Stable id of the GROUP_MEMBERSHIP grant a group grant produces for one member."""
    return hashlib.blake2b(f"{grant_id}/{user_id}".encode(), digest_size=16).hexdigest()


class IdcsState:
    """The tenant: users, groups (members kept as user ids), apps, grants and OAuth clients.

    Memberships are canonical on the group side, as in IDCS; a user's ``groups``, the
    "All Tenant Users" group and GROUP_MEMBERSHIP grants are computed from them. ``version``
    changes on every load so cached search results are never stale.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.load_dict({})

    def load_dict(self, data: Mapping[str, Any]) -> None:
        """Replace the whole state (all or nothing: a bad dump leaves the old state in place).

        Member entries pointing at unknown users are dropped, a stored "All Tenant Users" group
        is ignored (it is computed) and users' ``groups`` are recomputed from group members.
        """
        users = [
            {k: v for k, v in u.items() if k != "groups"} if "groups" in u else u
            for u in data.get("users") or []
        ]
        user_index = _index(users, "user")
        raw_groups = [g for g in data.get("groups") or [] if g.get("id") != ALL_USERS_ID]
        groups = [{k: v for k, v in g.items() if k != "members"} for g in raw_groups]
        group_index = _index(groups, "group")
        apps, grants = list(data.get("apps") or []), list(data.get("grants") or [])
        app_index, grant_index = _index(apps, "app"), _index(grants, "grant")
        members: dict[str, list[str]] = {}
        user_groups: dict[str, list[str]] = {}
        for group in raw_groups:
            ids = list(
                dict.fromkeys(
                    m.get("value")
                    for m in group.get("members") or []
                    if m.get("value") in user_index
                )
            )
            members[group["id"]] = ids
            for uid in ids:
                user_groups.setdefault(uid, []).append(group["id"])
        self.users: list[dict[str, Any]] = users
        self.groups: list[dict[str, Any]] = groups
        self.apps: list[dict[str, Any]] = apps
        self.grants: list[dict[str, Any]] = grants
        self.clients: list[dict[str, str]] = list(data.get("clients") or _demo_clients())
        self.user_index, self.group_index = user_index, group_index
        self.app_index, self.grant_index = app_index, grant_index
        self.ocid_index = {u["ocid"]: i for i, u in enumerate(users) if u.get("ocid")}
        self.members, self.user_groups = members, user_groups
        self.version = getattr(self, "version", 0) + 1
        self._grant_keys: list[tuple[int, str | None]] | None = None
        self._derived_index: dict[str, tuple[int, str]] | None = None
        self._grantee_index: tuple[list[Any], dict[str, list[tuple[int, str | None]]]] | None = None
        self._compute_dynamic_groups()

    def _compute_dynamic_groups(self) -> None:
        """Members of dynamic groups come from their ``membershipRule`` (a filter on users)."""
        for group in self.groups:
            if not is_dynamic(group):
                continue
            rule = (group.get(DYNAMIC_GROUP_EXTENSION) or {}).get("membershipRule") or ""
            try:
                test = scim_filter.compile_filter(rule, USER_CASE_EXACT.__contains__)
            except scim_filter.FilterError as exc:
                raise ValueError(f"group {group['id']} has a bad membershipRule: {exc}") from exc
            gid = group["id"]
            for uid in self.members.get(gid, []):
                self.user_groups[uid].remove(gid)
            self.members[gid] = [u["id"] for u in self.users if test(u)]
            for uid in self.members[gid]:
                self.user_groups.setdefault(uid, []).append(gid)

    def to_dict(self) -> dict[str, Any]:
        """The dump format ``load_dict`` takes (resources are shared, not copied)."""
        groups = []
        for group in self.groups:
            members = [
                {
                    "value": uid,
                    "type": "User",
                    "display": user.get("displayName"),
                    "name": user.get("userName"),
                }
                for uid in self.members.get(group["id"], [])
                for user in (self.users[self.user_index[uid]],)
            ]
            groups.append({**group, "members": members})
        return {
            "users": list(self.users),
            "groups": groups,
            "apps": list(self.apps),
            "grants": list(self.grants),
            "clients": list(self.clients),
        }

    def client_secret(self, client_id: str) -> str | None:
        for client in self.clients:
            if client.get("client_id") == client_id:
                return client.get("client_secret")
        return None

    def member_ids(self, gid: str) -> list[str]:
        if gid == ALL_USERS_ID:
            return [u["id"] for u in self.users]
        return self.members.get(gid, [])

    def grant_keys(self) -> list[tuple[int, str | None]]:
        """Stored grants in creation order, each group grant followed by its derived ones."""
        if self._grant_keys is None:
            keys: list[tuple[int, str | None]] = []
            for i, grant in enumerate(self.grants):
                keys.append((i, None))
                grantee = grant.get("grantee") or {}
                if grantee.get("type") == "Group":
                    keys.extend((i, uid) for uid in self.member_ids(grantee.get("value", "")))
            self._grant_keys = keys
        return self._grant_keys

    def grant_keys_of(self, grantee: str) -> list[tuple[int, str | None]]:
        """The grant keys whose grantee is ``grantee`` (direct and derived), in listing order:
        a ``grantee.value eq`` filter on a tenant with 100,000s of derived grants stays cheap."""
        keys = self.grant_keys()
        if self._grantee_index is None or self._grantee_index[0] is not keys:
            index: dict[str, list[tuple[int, str | None]]] = {}
            for i, uid in keys:
                value = uid if uid is not None else (self.grants[i].get("grantee") or {}).get(
                    "value")
                if isinstance(value, str):
                    index.setdefault(value.casefold(), []).append((i, uid))
            self._grantee_index = (keys, index)
        return self._grantee_index[1].get(grantee.casefold(), [])

    def find_grant(self, grant_id: str) -> tuple[int, str | None] | None:
        if grant_id in self.grant_index:
            return self.grant_index[grant_id], None
        if self._derived_index is None:
            self._derived_index = {
                derived_grant_id(self.grants[i]["id"], uid): (i, uid)
                for i, uid in self.grant_keys()
                if uid is not None
            }
        return self._derived_index.get(grant_id)


def _index(resources: list[dict[str, Any]], kind: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, resource in enumerate(resources):
        rid = resource.get("id")
        if not rid or rid in index:
            raise ValueError(f"{kind} #{i} has a missing or duplicate id: {rid!r}")
        index[rid] = i
    return index


# --- projection (attributes / attributeSets) ----------------------------------------------------


@dataclass
class Selection:
    """What to return: a tree of named attributes plus the default/request sets.

    ``brackets`` holds ``attr[...]`` refinements by dotted path: a filter on the values or a
    ``startIndex``/``count`` slice (``members[startIndex=1&count=10]``).
    """

    tree: dict[str, Any] = field(default_factory=dict)
    default: bool = True
    request: bool = False
    brackets: dict[str, tuple[scim_filter.Predicate | None, int, int | None]] = field(
        default_factory=dict
    )

    def named(self, attr: str) -> bool:
        return attr in self.tree or self.request


def split_attributes(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (``members[type eq "a,b"]``)."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "[":
            depth += 1
        elif not quoted and ch == "]":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _segments(name: str, urns: Sequence[str]) -> list[str]:
    low = name.lower()
    for urn in sorted((u.lower() for u in urns), key=len, reverse=True):
        if low == urn:
            return [low] if ":extension:" in low else []
        if low.startswith(urn + ":"):
            rest = low[len(urn) + 1 :].split(".")
            return rest if ":extension:" not in urn else [urn, *rest]
    if low.startswith("urn:"):
        urn, _, rest = low.rpartition(":")
        return [urn, *rest.split(".")]
    return low.split(".")


def _bracket(path: str, inner: str, case_exact: frozenset[str]) -> tuple[Any, int, int | None]:
    if "=" in inner and not any(op in inner.lower() for op in (" eq ", " ne ", " co ", " pr")):
        params = {
            k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in inner.split("&"))
        }
        try:
            start = max(int(params.pop("startindex", "1")), 1)
            count = int(params.pop("count")) if "count" in params else None
        except ValueError as exc:
            raise ScimError(
                400, f"Invalid paging in attribute {path}[{inner}].", scim_type="invalidValue"
            ) from exc
        if params:
            raise ScimError(
                400, f"Invalid paging in attribute {path}[{inner}].", scim_type="invalidValue"
            )
        return None, start, (max(count, 0) if count is not None else None)
    try:
        node = scim_filter.parse(inner)
    except scim_filter.FilterError as exc:
        raise ScimError(
            400, f"Invalid filter in attribute {path}: {exc}", scim_type="invalidFilter"
        ) from exc
    return scim_filter.compile_node(node, case_exact.__contains__, path + "."), 1, None


def parse_selection(
    attributes: Sequence[str],
    attribute_sets: Sequence[str],
    urns: Sequence[str],
    case_exact: frozenset[str] = frozenset(),
) -> Selection:
    """Build the selection for ``attributes``/``attributeSets`` (union of both)."""
    sets = {s.strip().lower() for s in attribute_sets if s.strip()}
    unknown = sets - {"all", "always", "default", "request"}
    if unknown:
        raise ScimError(
            400,
            f"Invalid attributeSets value(s): {', '.join(sorted(unknown))}.",
            scim_type="invalidValue",
        )
    names = [a for item in attributes for a in split_attributes(item)]
    sel = Selection(
        default=(not names and not sets) or bool(sets & {"all", "default"}),
        request=bool(sets & {"all", "request"}),
    )
    for item in names:
        name, inner = item, None
        if "[" in item:
            if not item.endswith("]"):
                raise ScimError(400, f"Invalid attribute {item}.", scim_type="invalidSyntax")
            name, _, inner = item[:-1].partition("[")
        segs = _segments(name.strip(), urns)
        if not segs:
            continue  # the core schema URN itself: nothing beyond the always-returned set
        node = sel.tree
        for seg in segs[:-1]:
            child = node.setdefault(seg, {})
            if child is True:
                break
            node = child
        else:
            node[segs[-1]] = True
        if inner is not None:
            path = segs[0] + "".join(
                (":" if i == 1 and segs[0].startswith("urn:") else ".") + s
                for i, s in enumerate(segs[1:], 1)
            )
            sel.brackets[path] = _bracket(path, inner, case_exact)
    return sel


def project(
    resource: Mapping[str, Any], sel: Selection, rules: Mapping[str, str]
) -> dict[str, Any]:
    """Apply SCIM ``returned`` rules and the selection to one full resource."""
    out: dict[str, Any] = {}
    for key, value in resource.items():
        low = key.lower()
        rule = rules.get(low, DEFAULT)
        if rule == NEVER:
            continue
        ext = low.startswith("urn:")
        prefix = low + (":" if ext else ".")
        node = sel.tree.get(low)
        if node is True:  # a whole extension gives its default set; a whole attribute, all of it
            shown = _content(value, prefix, sel.request or not ext, rules)
        elif node is not None:
            shown = _select(value, node, prefix, sel, rules)
        elif (
            rule == ALWAYS or (rule == DEFAULT and sel.default) or (rule == REQUEST and sel.request)
        ):
            shown = _content(value, prefix, sel.request, rules)
        else:
            continue
        shown = _refine(low, shown, sel)
        if not _empty(shown):
            out[key] = shown
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, list | dict) and not value)


def _allowed(rule: str, with_request: bool) -> bool:
    return rule in (ALWAYS, DEFAULT) or (rule == REQUEST and with_request)


def _content(value: Any, prefix: str, with_request: bool, rules: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        items = [_content(v, prefix, with_request, rules) for v in value]
        return [v for v in items if not _empty(v)]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in value.items():
        path = prefix + key.lower()
        if _allowed(rules.get(path, DEFAULT), with_request):
            shown = _content(sub, path + ".", with_request, rules)
            if not _empty(shown):
                out[key] = shown
    return out


def _select(
    value: Any, tree: dict[str, Any], prefix: str, sel: Selection, rules: Mapping[str, str]
) -> Any:
    if isinstance(value, list):
        items = [_select(v, tree, prefix, sel, rules) for v in value]
        return [v for v in items if not _empty(v)]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in value.items():
        low = key.lower()
        path = prefix + low
        rule = rules.get(path, DEFAULT)
        node = tree.get(low)
        if rule == NEVER or (node is None and rule != ALWAYS):
            continue
        if isinstance(node, dict):
            shown = _select(sub, node, path + ".", sel, rules)
        else:
            shown = _content(sub, path + ".", True, rules)
        shown = _refine(path, shown, sel)
        if not _empty(shown):
            out[key] = shown
    return out


def _refine(path: str, value: Any, sel: Selection) -> Any:
    spec = sel.brackets.get(path)
    if spec is None or not isinstance(value, list):
        return value
    predicate, start, count = spec
    if predicate is not None:
        value = [v for v in value if isinstance(v, Mapping) and predicate(v)]
    end = None if count is None else start - 1 + count
    return value[start - 1 : end]


# --- collections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    filter: str | None = None
    attributes: tuple[str, ...] = ()
    attribute_sets: tuple[str, ...] = ()
    start: int = 1
    count: int = DEFAULT_COUNT
    sort_by: str | None = None
    descending: bool = False


class Collection(abc.ABC):
    """One SCIM resource type over the state: ordered keys, full views, rendering."""

    name: ClassVar[str] = ""
    rules: ClassVar[Mapping[str, str]] = {}
    urns: ClassVar[Sequence[str]] = ()
    case_exact: ClassVar[frozenset[str]] = frozenset()
    computed: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, state: IdcsState) -> None:
        self.state = state

    @abc.abstractmethod
    def keys(self) -> Sequence[Any]: ...

    @abc.abstractmethod
    def find(self, rid: str) -> Any | None: ...

    def narrow(self, node: scim_filter.Node) -> Sequence[Any] | None:
        """Keys that may match ``node`` (a superset, in listing order) when an index knows them
        cheaply, else None: the filter still runs on each, so this only saves work."""
        return None

    @abc.abstractmethod
    def view(self, key: Any, needs: set[str], base: str) -> dict[str, Any]:
        """The full resource, with computed attributes in ``needs`` filled in."""

    def render(self, key: Any, sel: Selection, base: str) -> dict[str, Any]:
        needs = {c for c in self.computed if sel.named(c)}
        resource = _rebase(self.view(key, needs, base), base, self.name)
        return project(resource, sel, self.rules)


def _rebase(resource: dict[str, Any], base: str, collection: str) -> dict[str, Any]:
    """Point ``meta.location`` and the creator ``$ref``s at this emulator's own URL."""
    out = dict(resource)
    if isinstance(out.get("meta"), dict):
        out["meta"] = {**out["meta"], "location": f"{base}/admin/v1/{collection}/{out['id']}"}
    for key in ("idcsCreatedBy", "idcsLastModifiedBy"):
        who = out.get(key)
        if isinstance(who, dict) and who.get("value") and who.get("type"):
            out[key] = {**who, "$ref": f"{base}/admin/v1/{who['type']}s/{who['value']}"}
    return out


class Users(Collection):
    name, rules, urns = "Users", USER_RULES, USER_URNS
    case_exact, computed = USER_CASE_EXACT, frozenset({"groups"})

    def keys(self) -> Sequence[int]:
        return range(len(self.state.users))

    def find(self, rid: str) -> int | None:
        found = self.state.user_index.get(rid)
        return found if found is not None else self.state.ocid_index.get(rid)

    def view(self, key: int, needs: set[str], base: str) -> dict[str, Any]:
        user = self.state.users[key]
        if "groups" not in needs:
            return user
        st = self.state
        groups = []
        for gid in st.user_groups.get(user["id"], []):
            group = st.groups[st.group_index[gid]]
            item = {
                "value": gid,
                "display": group.get("displayName"),
                "type": "indirect" if is_dynamic(group) else "direct",
                "$ref": f"{base}/admin/v1/Groups/{gid}",
            }
            if group.get("ocid"):
                item["ocid"] = group["ocid"]
            groups.append(item)
        return {**user, "groups": groups}


class Groups(Collection):
    name, rules, urns = "Groups", GROUP_RULES, GROUP_URNS
    case_exact, computed = GROUP_CASE_EXACT, frozenset({"members"})

    def keys(self) -> Sequence[str]:
        return [*(g["id"] for g in self.state.groups), ALL_USERS_ID]

    def find(self, rid: str) -> str | None:
        return rid if rid in self.state.group_index or rid == ALL_USERS_ID else None

    def base_resource(self, gid: str) -> dict[str, Any]:
        if gid != ALL_USERS_ID:
            return self.state.groups[self.state.group_index[gid]]
        return {
            "id": ALL_USERS_ID,
            "displayName": ALL_USERS_NAME,
            "nonUniqueDisplayName": ALL_USERS_NAME,
            "schemas": [GROUP_SCHEMA, GROUP_EXTENSION],
            GROUP_EXTENSION: {"description": ALL_USERS_NAME, "creationMechanism": "api"},
            "meta": {
                "created": ALL_USERS_CREATED,
                "lastModified": ALL_USERS_CREATED,
                "resourceType": "Group",
                "version": "0" * 32,
                "location": f"/admin/v1/Groups/{ALL_USERS_ID}",
            },
        }

    def view(
        self, key: str, needs: set[str], base: str, member_ids: list[str] | None = None
    ) -> dict[str, Any]:
        group = self.base_resource(key)
        if "members" not in needs:
            return group
        st = self.state
        members = []
        for uid in self.state.member_ids(key) if member_ids is None else member_ids:
            user = st.users[st.user_index[uid]]
            item = {
                "value": uid,
                "type": "User",
                "display": user.get("displayName"),
                "name": user.get("userName"),
                "$ref": f"{base}/admin/v1/Users/{uid}",
            }
            if user.get("ocid"):
                item["ocid"] = user["ocid"]
            members.append(item)
        return {**group, "members": members}

    def render(self, key: str, sel: Selection, base: str) -> dict[str, Any]:
        if not sel.named("members"):
            return super().render(key, sel, base)
        ids = self.state.member_ids(key)
        spec = sel.brackets.get("members")
        if spec is not None and spec[0] is None:  # pure paging: slice ids before building
            _, start, count = spec
            ids = ids[start - 1 : None if count is None else start - 1 + count]
            sel = Selection(
                sel.tree,
                sel.default,
                sel.request,
                {k: v for k, v in sel.brackets.items() if k != "members"},
            )
        if spec is None or spec[0] is None:
            _check_member_cap(key, len(ids))
        resource = _rebase(self.view(key, {"members"}, base, ids), base, self.name)
        out = project(resource, sel, self.rules)
        _check_member_cap(key, len(out.get("members", ())))
        return out


def _check_member_cap(gid: str, n: int) -> None:
    if n > MEMBER_CAP:
        raise ScimError(
            400,
            f"Group {gid} has {n} members; a maximum of {MEMBER_CAP} members can be returned in a "
            "single request. Use members[startIndex=1&count=N] to page through them.",
            message_id="error.common.common.maxMembersExceeded",
        )


class Grants(Collection):
    name, rules, urns = "Grants", GRANT_RULES, (GRANT_SCHEMA,)
    case_exact = GRANT_CASE_EXACT

    def keys(self) -> Sequence[tuple[int, str | None]]:
        return self.state.grant_keys()

    def find(self, rid: str) -> tuple[int, str | None] | None:
        return self.state.find_grant(rid)

    def narrow(self, node: scim_filter.Node) -> Sequence[Any] | None:
        while isinstance(node, scim_filter.And):  # grantee.value eq "<id>" anywhere in an and
            found = self.narrow(node.left)
            if found is not None:
                return found
            node = node.right
        if (isinstance(node, scim_filter.Compare) and node.op == "eq"
                and node.path.dotted() == "grantee.value" and isinstance(node.value, str)):
            return self.state.grant_keys_of(node.value)
        return None

    def view(self, key: tuple[int, str | None], needs: set[str], base: str) -> dict[str, Any]:
        index, uid = key
        grant = self.state.grants[index]
        if uid is None:
            out = dict(grant)
        else:
            user = self.state.users[self.state.user_index[uid]]
            out = {k: v for k, v in grant.items() if k not in {"ocid", "compositeKey", "grantor"}}
            out.update(
                id=derived_grant_id(grant["id"], uid),
                grantMechanism="GROUP_MEMBERSHIP",
                grantee={"value": uid, "type": "User", "display": user.get("displayName")},
            )
        if base:
            grantee, app = out.get("grantee"), out.get("app")
            if isinstance(grantee, dict) and grantee.get("value"):
                kind = "Users" if grantee.get("type") == "User" else f"{grantee.get('type')}s"
                out["grantee"] = {**grantee, "$ref": f"{base}/admin/v1/{kind}/{grantee['value']}"}
            if isinstance(app, dict) and app.get("value"):
                out["app"] = {**app, "$ref": f"{base}/admin/v1/Apps/{app['value']}"}
        return out


class Apps(Collection):
    name, rules, urns = "Apps", APP_RULES, (APP_SCHEMA,)

    def keys(self) -> Sequence[int]:
        return range(len(self.state.apps))

    def find(self, rid: str) -> int | None:
        return self.state.app_index.get(rid)

    def view(self, key: int, needs: set[str], base: str) -> dict[str, Any]:
        return self.state.apps[key]


class SearchEngine:
    """Filters, sorts and pages a collection; remembers recent result lists so paging through
    a filtered listing costs one filter pass, not one per page."""

    def __init__(self, state: IdcsState, cache_size: int = 32) -> None:
        self.state = state
        self.collections: dict[str, Collection] = {
            c.name: c(state) for c in (Users, Groups, Grants, Apps)
        }
        self._cache: OrderedDict[tuple[Any, ...], Sequence[Any]] = OrderedDict()
        self._cache_size = cache_size

    def matching(self, coll: Collection, query: Query) -> Sequence[Any]:
        if not query.filter and not query.sort_by:
            return coll.keys()
        cache_key = (self.state.version, coll.name, query.filter, query.sort_by, query.descending)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        keys: Sequence[Any] = coll.keys()
        if query.filter:
            try:
                node = scim_filter.parse(query.filter)
            except scim_filter.FilterError as exc:
                raise ScimError(
                    400,
                    f"Invalid filter: {exc}",
                    scim_type="invalidFilter",
                    message_id="error.common.common.invalidFilter",
                ) from exc
            test = scim_filter.compile_node(node, coll.case_exact.__contains__)
            needs = scim_filter.roots(node) & coll.computed
            narrowed = coll.narrow(node)
            keys = [k for k in (keys if narrowed is None else narrowed)
                    if test(coll.view(k, needs, ""))]
        if query.sort_by:
            keys = self._sorted(coll, keys, query.sort_by, query.descending)
        self._cache[cache_key] = keys
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return keys

    @staticmethod
    def _sorted(coll: Collection, keys: Sequence[Any], sort_by: str, descending: bool) -> list[Any]:
        try:
            path = scim_filter.parse_path(sort_by)
        except scim_filter.FilterError as exc:
            raise ScimError(400, f"Invalid sortBy: {sort_by}", scim_type="invalidValue") from exc
        needs = {path.root} & coll.computed

        def sort_key(key: Any) -> tuple[bool, bool, Any]:
            values = scim_filter.resolve(coll.view(key, needs, ""), path)
            value = values[0] if values else None
            if value is None or isinstance(value, dict | list):
                return (True, True, "")
            return (
                False,
                isinstance(value, str),
                value.casefold() if isinstance(value, str) else value,
            )

        present = [k for k in keys if not sort_key(k)[0]]
        missing = [k for k in keys if sort_key(k)[0]]
        return sorted(present, key=sort_key, reverse=descending) + missing

    def search(self, name: str, query: Query, base: str) -> dict[str, Any]:
        coll = self.collections[name]
        sel = parse_selection(query.attributes, query.attribute_sets, coll.urns, coll.case_exact)
        keys = self.matching(coll, query)
        body: dict[str, Any] = {"schemas": [LIST_SCHEMA], "totalResults": len(keys)}
        if query.count > 0:
            page = keys[query.start - 1 : query.start - 1 + query.count]
            resources = [coll.render(k, sel, base) for k in page]
            if resources:
                body["Resources"] = resources
        body["startIndex"] = query.start
        body["itemsPerPage"] = query.count
        return body

    def get(self, name: str, rid: str, query: Query, base: str) -> dict[str, Any]:
        coll = self.collections[name]
        key = coll.find(rid)
        if key is None:
            raise ScimError(
                404, f"Resource {rid} not found."
            )
        sel = parse_selection(query.attributes, query.attribute_sets, coll.urns, coll.case_exact)
        return coll.render(key, sel, base)


# --- request parsing ----------------------------------------------------------------------------


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ScimError(400, f"Invalid value for {name}: {value}.", scim_type="invalidValue")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ScimError(
            400, f"Invalid value for {name}: {value}.", scim_type="invalidValue"
        ) from exc


def make_query(params: Mapping[str, Any]) -> Query:
    """Normalise paging as IDCS does: startIndex < 1 -> 1; count default 50, < 0 -> 50,
    > 1000 -> 1000; ``count=0`` asks only for ``totalResults``."""
    start = _int(params.get("startIndex", 1), "startIndex")
    count = _int(params.get("count", DEFAULT_COUNT), "count")
    count = DEFAULT_COUNT if count < 0 else min(count, MAX_COUNT)
    order = str(params.get("sortOrder") or "ascending").lower()
    if order not in {"ascending", "descending"}:
        raise ScimError(400, f"Invalid value for sortOrder: {order}.", scim_type="invalidValue")

    def listed(value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ScimError(400, f"Invalid attribute list: {value!r}.", scim_type="invalidValue")
        return tuple(s for i in items for s in split_attributes(i))

    flt = params.get("filter")
    if flt is not None and not isinstance(flt, str):
        raise ScimError(400, "Invalid filter.", scim_type="invalidFilter")
    return Query(
        filter=flt or None,
        attributes=listed(params.get("attributes")),
        attribute_sets=listed(params.get("attributeSets")),
        start=max(start, 1),
        count=count,
        sort_by=params.get("sortBy") or None,
        descending=order == "descending",
    )


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
