"""The IDCS emulator's read path over the state: one :class:`Collection` per resource type
(Users, Groups, Grants, Apps) with its computed attributes (a user's ``groups``, a group's
``members``, derived grants), the :class:`SearchEngine` that filters, sorts and pages them, and
:func:`make_query`, which normalises request parameters as IDCS does.

Why separate: this is the part of the emulator that answers listings, ``.search`` and gets; the
HTTP handlers in :mod:`.idcs` and :mod:`.idcs_endpoints` only parse requests and call it.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from . import scim_filter
from .idcs_common import (
    ALL_USERS_CREATED,
    ALL_USERS_ID,
    ALL_USERS_NAME,
    APP_SCHEMA,
    DEFAULT_COUNT,
    GRANT_SCHEMA,
    GROUP_EXTENSION,
    GROUP_SCHEMA,
    LIST_SCHEMA,
    MAX_COUNT,
    MEMBER_CAP,
    ScimError,
)
from .idcs_projection import (
    APP_RULES,
    GRANT_CASE_EXACT,
    GRANT_RULES,
    GROUP_CASE_EXACT,
    GROUP_RULES,
    GROUP_URNS,
    USER_CASE_EXACT,
    USER_RULES,
    USER_URNS,
    Selection,
    parse_selection,
    project,
    split_attributes,
)
from .idcs_state import IdcsState, derived_grant_id, is_dynamic

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
