"""Writes to the emulated tenant as IDCS performs them: Users and Groups POST/PUT/PATCH/DELETE
and ``UserStatusChanger``.

Why: trials, tests and benchmarks must change the tenant the way an admin (or an admin tool)
would, with IDCS's side effects: 32-hex ids, ``meta.created``/``lastModified``/``version`` (the
``ETag``), ``If-Match`` preconditions (412), uniqueness (409), read-only attributes ignored on
POST/PUT and refused by PATCH, the recovery e-mail IDCS adds next to a primary work e-mail,
``groupMembershipLastModified`` on users whose membership changed, and deletes that take the
user's memberships and grants with them. Membership changes date the group and the user's
``groupMembershipLastModified``, not the user's ``meta.lastModified`` (whether IDCS does is not
documented, reference §8, so a client must not rely on it).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import scim_filter
from .idcs_common import ALL_USERS_ID, ALL_USERS_NAME
from .idcs_patch import Patcher, PatchError
from .idcs_schemas import (
    CORE_GROUP,
    CORE_USER,
    DYNAMIC_GROUP_EXT,
    GROUP_ATTR_INDEX,
    GROUP_EXT,
    RESOURCE_TYPES,
    USER_ATTR_INDEX,
    USER_EXT,
    Attr,
)

if TYPE_CHECKING:
    from .idcs_state import IdcsState

STATUS_CHANGER_SCHEMA = "urn:ietf:params:scim:schemas:oracle:idcs:UserStatusChanger"
SERVER_MANAGED = frozenset({"id", "meta", "schemas", "ocid", "idcscreatedby",
                            "idcslastmodifiedby", "domainocid", "compartmentocid",
                            "tenancyocid", "deleteinprogress"})


class WriteError(Exception):
    """Carries what :class:`~.idcs_common.ScimError` needs (no import cycle)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None,
                 message_id: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type, self.message_id = (
            status, detail, scim_type, message_id)


def _invalid(detail: str, scim_type: str = "invalidValue") -> WriteError:
    return WriteError(400, detail, scim_type, "error.common.validation.invalidValue")


class Clock:
    """Timestamps like IDCS's (``2023-08-29T21:04:25.379Z``), strictly increasing so a delta
    filter ``meta.lastModified gt <last seen>`` never misses a write made in the same ms."""

    def __init__(self) -> None:
        self._last = datetime(1970, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> str:
        with self._lock:
            now = datetime.now(UTC)
            now = now.replace(microsecond=now.microsecond // 1000 * 1000)
            if now <= self._last:
                now = self._last + timedelta(milliseconds=1)
            self._last = now
            return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def new_id() -> str:
    return uuid.uuid4().hex


def _ocid(kind: str) -> str:
    return f"ocid1.{kind}.oc1..aaaaaaaa{secrets.token_hex(26)}"


def actor_of(client_id: str | None) -> dict[str, Any]:
    """``idcsCreatedBy``/``idcsLastModifiedBy`` for a write made with a client's token."""
    if not client_id:
        return {"type": "App", "display": "IDCSApp", "value": "IDCSAppId"}
    app_id = hashlib.blake2b(client_id.encode(), digest_size=16).hexdigest()
    return {"type": "App", "display": client_id, "value": app_id}


# --- validation ---------------------------------------------------------------------------------


def _check_type(attr: Attr, value: Any, path: str, *, item: bool = False) -> None:
    if value is None:
        return
    if attr.multi and not item:
        if not isinstance(value, list):
            raise _invalid(f"Attribute {path} must be a list.")
        for v in value:
            _check_type(attr, v, path, item=True)
        return
    ok = {
        "string": lambda v: isinstance(v, str),
        "reference": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "decimal": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "dateTime": lambda v: isinstance(v, str) and scim_filter._parse_datetime(v) is not None,
        "complex": lambda v: isinstance(v, dict),
        "binary": lambda v: isinstance(v, str),
    }[attr.type](value)
    if not ok:
        raise _invalid(f"Attribute {path} must be of type {attr.type}.")
    if attr.type == "complex":
        subs = {s.name.lower(): s for s in attr.sub}
        for key, sub_value in value.items():
            sub = subs.get(key.lower())
            if sub is None and subs:
                raise _invalid(f"Attribute {path}.{key} is not defined.", "invalidSyntax")
            if sub is not None:
                _check_type(sub, sub_value, f"{path}.{key}")
        for sub in attr.sub:
            if sub.required and sub.mutability != "readOnly" and not any(
                    k.lower() == sub.name.lower() and v not in (None, "") for k, v in
                    value.items()):
                raise WriteError(400, f"Missing required attribute(s): {path}.{sub.name}.",
                                 "invalidValue", "error.common.validation.missingReqAttributes")


def _strip_read_only(value: Any, attr: Attr) -> Any:
    """Drop read-only sub-attributes from client input (POST/PUT ignore them, RFC 7644)."""
    if attr.type != "complex" or not attr.sub:
        return value
    ro = {s.name.lower() for s in attr.sub if s.mutability == "readOnly"}

    def clean(obj: Any) -> Any:
        return {k: v for k, v in obj.items() if k.lower() not in ro} if isinstance(
            obj, dict) else obj

    return [clean(v) for v in value] if isinstance(value, list) else clean(value)


class Shape:
    """One resource type's write rules: its attribute index and schema URNs."""

    def __init__(self, kind: str, index: Mapping[str, Attr], all_urns: tuple[str, ...],
                 case_exact: frozenset[str]) -> None:
        _, self.core, extensions = RESOURCE_TYPES[kind]
        self.kind, self.index = kind, index
        self.extensions = list(extensions)
        known = (*all_urns, *extensions)
        self.all_urns = {u.lower(): u for u in known}
        self.patcher = Patcher(index, [u for u in self.all_urns.values() if u != self.core],
                               case_exact.__contains__)

    def clean_input(self, body: Any) -> dict[str, Any]:
        """Client input for POST/PUT: shape-checked, server-managed and read-only dropped."""
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.", "invalidSyntax")
        schemas = body.get("schemas")
        if not isinstance(schemas, list) or self.core.lower() not in (
                str(s).lower() for s in schemas):
            raise WriteError(400, f"Missing required attribute(s): schemas ({self.core}).",
                             "invalidValue", "error.common.validation.missingReqAttributes")
        out: dict[str, Any] = {}
        for key, value in body.items():
            low = key.lower()
            if low in SERVER_MANAGED:
                continue
            if low in self.all_urns:
                if not isinstance(value, dict):
                    raise _invalid(f"{key} must be an object.")
                ext = {k: v for k, v in value.items()
                       if k.lower() != "schemas" and self._writable(f"{low}:{k.lower()}")}
                ext = {k: _strip_read_only(v, self.index[f"{low}:{k.lower()}"]) if
                       f"{low}:{k.lower()}" in self.index else v for k, v in ext.items()}
                if ext:
                    out[self.all_urns[low]] = ext
                continue
            attr = self.index.get(low)
            if attr is None:
                raise _invalid(f"Attribute {key} is not defined in {self.core}.",
                               "invalidSyntax")
            if attr.mutability != "readOnly":
                out[attr.name] = _strip_read_only(value, attr)
        return out

    def _writable(self, key: str) -> bool:
        attr = self.index.get(key)
        return attr is None or attr.mutability != "readOnly"

    def validate(self, resource: Mapping[str, Any]) -> None:
        """Types, required attributes (as IDCS reports them: 400 missingReqAttributes)."""
        for key, value in resource.items():
            low = key.lower()
            if low in SERVER_MANAGED and low != "schemas":
                continue
            if low in self.all_urns:
                if not isinstance(value, dict):
                    raise _invalid(f"{key} must be an object.")
                for sub_key, sub_value in value.items():
                    attr = self.index.get(f"{low}:{sub_key.lower()}")
                    if attr is not None:
                        _check_type(attr, sub_value, f"{key}:{sub_key}")
                    elif any(k.startswith(low + ":") for k in self.index):
                        raise _invalid(f"Attribute {key}:{sub_key} is not defined.",
                                       "invalidSyntax")
                continue
            attr = self.index.get(low)
            if attr is not None:
                _check_type(attr, value, key)
        for name, attr in self.index.items():
            if attr.required and ":" not in name and "." not in name:
                present = scim_filter.get_attr(resource, attr.name)
                if present in (None, "", []):
                    raise WriteError(400, f"Missing required attribute(s): {attr.name}.",
                                     "invalidValue",
                                     "error.common.validation.missingReqAttributes")

    def check_immutable(self, old: Mapping[str, Any], new: dict[str, Any]) -> None:
        """Immutable attributes keep their value; sending a different one is refused."""
        for name, attr in self.index.items():
            if attr.mutability != "immutable" or "." in name:
                continue
            urn, _, attr_name = name.rpartition(":")
            old_c = scim_filter.get_attr(old, self.all_urns.get(urn, "")) if urn else old
            new_c = new.get(self.all_urns.get(urn, ""), {}) if urn else new
            before = scim_filter.get_attr(old_c, attr_name)
            after = scim_filter.get_attr(new_c, attr_name)
            if before is None:
                continue
            if after is not None and after != before:
                raise WriteError(400, f"Attribute {attr.name} is immutable.", "mutability",
                                 "error.common.validation.mutability")
            if isinstance(new_c, dict):
                new_c[attr.name] = before
                if urn and new_c and self.all_urns[urn] not in new:
                    new[self.all_urns[urn]] = new_c

    def with_schemas(self, resource: dict[str, Any]) -> None:
        """``schemas`` lists the core schema and every extension the resource carries."""
        present = [u for low, u in self.all_urns.items()
                   if any(k.lower() == low for k in resource)]
        resource["schemas"] = [self.core, *[u for u in present if u != self.core]]


# --- the writer ---------------------------------------------------------------------------------


def _etag_matches(if_match: str | None, version: str | None) -> bool:
    if not if_match or if_match.strip() == "*":
        return True
    tags = [t.strip() for t in if_match.split(",")]
    return any(t.removeprefix("W/").strip('"') == (version or "") for t in tags)


class TenantWriter:
    """Every write goes through here; it keeps the state's indexes and caches consistent."""

    def __init__(self, state: IdcsState, user_urns: tuple[str, ...],
                 group_urns: tuple[str, ...], user_case_exact: frozenset[str],
                 group_case_exact: frozenset[str]) -> None:
        self.state = state
        self.clock = Clock()
        self._names: dict[str, str] = {}
        self._names_version = -1
        self.users = Shape("User", USER_ATTR_INDEX, (*user_urns, USER_EXT), user_case_exact)
        self.groups = Shape("Group", GROUP_ATTR_INDEX,
                            (*group_urns, GROUP_EXT, DYNAMIC_GROUP_EXT), group_case_exact)

    # ---- helpers ------------------------------------------------------------------------------

    def _changed(self) -> None:
        st = self.state
        st.version += 1
        st._grant_keys = None
        st._derived_index = None

    def _meta(self, kind: str, old: Mapping[str, Any] | None = None) -> dict[str, Any]:
        now = self.clock.now()
        created = (old or {}).get("created") or now
        return {"created": created, "lastModified": now, "version": new_id(),
                "resourceType": kind}

    def _user_index(self, uid: str, if_match: str | None = None) -> int:
        i = self.state.user_index.get(uid)
        if i is None:
            i = self.state.ocid_index.get(uid)
        if i is None:
            raise WriteError(404, f"Resource {uid} not found.")
        self._precondition(self.state.users[i], if_match)
        return i

    def _group_index(self, gid: str, if_match: str | None = None) -> int:
        if gid == ALL_USERS_ID:
            raise WriteError(403, "The All Tenant Users group is computed and cannot be "
                             "changed.", None, "error.common.common.operationNotSupported")
        i = self.state.group_index.get(gid)
        if i is None:
            raise WriteError(404, f"Resource {gid} not found.")
        self._precondition(self.state.groups[i], if_match)
        return i

    @staticmethod
    def _precondition(resource: Mapping[str, Any], if_match: str | None) -> None:
        version = (resource.get("meta") or {}).get("version")
        if not _etag_matches(if_match, version):
            raise WriteError(412, "Failed to update, as resource changed.")

    def _user_names(self) -> dict[str, str]:
        """casefolded userName -> id; rebuilt only when the state changed behind our back."""
        st = self.state
        if self._names_version != st.version:
            self._names = {str(u.get("userName", "")).casefold(): u["id"] for u in st.users}
            self._names_version = st.version
        return self._names

    def _unique_user_name(self, name: str, except_id: str | None = None) -> None:
        owner = self._user_names().get(name.casefold())
        if owner is not None and owner != except_id:
            raise WriteError(409, f"A user with userName {name} already exists.",
                             "uniqueness", "error.common.validation.uniqueness")

    def _names_changed(self, old_name: str | None, new_name: str | None, uid: str) -> None:
        names = self._user_names()
        if old_name is not None and names.get(old_name.casefold()) == uid:
            del names[old_name.casefold()]
        if new_name is not None:
            names[new_name.casefold()] = uid
        self._names_version = self.state.version + 1  # the _changed() that follows

    def _unique_group_name(self, name: str, except_id: str | None = None) -> None:
        low = name.casefold()
        if low == ALL_USERS_NAME.casefold() or any(
                g["id"] != except_id and str(g.get("displayName", "")).casefold() == low
                for g in self.state.groups):
            raise WriteError(409, f"A group with displayName {name} already exists.",
                             "uniqueness", "error.common.validation.uniqueness")

    # ---- users --------------------------------------------------------------------------------

    def create_user(self, body: Any, client_id: str | None) -> str:
        data = self.users.clean_input(body)
        self.users.validate(data)
        self._unique_user_name(str(data["userName"]))
        _add_recovery_email(data)
        ext = data.setdefault(USER_EXT, {})
        ext.setdefault("isFederatedUser", False)
        ext.setdefault("creationMechanism", "api")
        ext.setdefault("provider", "IDCS")
        data.setdefault("active", True)
        who = actor_of(client_id)
        uid = new_id()
        user = {"id": uid, "ocid": _ocid("user"), **data, "meta": self._meta("User"),
                "idcsCreatedBy": who, "idcsLastModifiedBy": who}
        self.users.with_schemas(user)
        st = self.state
        st.users.append(user)
        st.user_index[uid] = len(st.users) - 1
        st.ocid_index[user["ocid"]] = len(st.users) - 1
        self._refresh_dynamic([uid])
        self._names_changed(None, str(user["userName"]), uid)
        self._changed()
        return uid

    def replace_user(self, uid: str, body: Any, client_id: str | None,
                     if_match: str | None) -> str:
        i = self._user_index(uid, if_match)
        old = self.state.users[i]
        data = self.users.clean_input(body)
        self.users.check_immutable(old, data)
        self.users.validate(data)
        self._unique_user_name(str(data["userName"]), old["id"])
        self._store_user(i, data, client_id)
        return str(old["id"])

    def patch_user(self, uid: str, body: Any, client_id: str | None,
                   if_match: str | None) -> str:
        i = self._user_index(uid, if_match)
        old = self.state.users[i]
        patched = self._patch(self.users, old, body)
        data = {k: v for k, v in patched.items() if k.lower() not in SERVER_MANAGED}
        self.users.check_immutable(old, data)
        self.users.validate(data)
        self._unique_user_name(str(data.get("userName", "")), old["id"])
        self._store_user(i, data, client_id)
        return str(old["id"])

    def _store_user(self, i: int, data: dict[str, Any], client_id: str | None) -> None:
        st = self.state
        old = st.users[i]
        kept = {k: v for k, v in old.items() if k.lower() in SERVER_MANAGED}
        for urn_key in (k for k in old if k.lower().startswith("urn:")):
            # read-only extension attributes (status, groupMembershipLastModified) survive
            ro = {k: v for k, v in (old[urn_key] or {}).items()
                  if not self.users._writable(f"{urn_key.lower()}:{k.lower()}")}
            if ro:
                data[urn_key] = {**ro, **(data.get(urn_key) or {})}
        user = {**kept, **data, "meta": self._meta("User", old.get("meta")),
                "idcsLastModifiedBy": actor_of(client_id)}
        self.users.with_schemas(user)
        st.users[i] = user
        self._refresh_dynamic([user["id"]])
        self._names_changed(str(old.get("userName", "")), str(user.get("userName", "")),
                            user["id"])
        self._changed()

    def set_user_status(self, uid: str, body: Any, client_id: str | None) -> dict[str, Any]:
        """``PUT /admin/v1/UserStatusChanger/{id}``: activate or deactivate (not a delete)."""
        if not isinstance(body, dict) or STATUS_CHANGER_SCHEMA not in (body.get("schemas") or []):
            raise WriteError(400, f"Missing required attribute(s): schemas "
                             f"({STATUS_CHANGER_SCHEMA}).", "invalidValue",
                             "error.common.validation.missingReqAttributes")
        active = body.get("active")
        if not isinstance(active, bool):
            raise _invalid("Attribute active must be of type boolean.")
        i = self._user_index(uid)
        user = self.state.users[i]
        data = {k: v for k, v in user.items() if k.lower() not in SERVER_MANAGED}
        data["active"] = active
        self._store_user(i, data, client_id)
        user = self.state.users[i]
        return {"schemas": [STATUS_CHANGER_SCHEMA], "id": user["id"], "active": active,
                "meta": {**user["meta"], "resourceType": "UserStatusChanger"}}

    def delete_user(self, uid: str, if_match: str | None) -> None:
        i = self._user_index(uid, if_match)
        st = self.state
        real = st.users[i]["id"]
        self._names_changed(str(st.users[i].get("userName", "")), None, real)
        for gid in list(st.user_groups.get(real, [])):
            self._drop_member(gid, real)
        st.user_groups.pop(real, None)
        del st.users[i]
        st.user_index = {u["id"]: n for n, u in enumerate(st.users)}
        st.ocid_index = {u["ocid"]: n for n, u in enumerate(st.users) if u.get("ocid")}
        self._drop_grants("User", real)
        self._changed()

    # ---- groups -------------------------------------------------------------------------------

    def _members_of(self, data: dict[str, Any]) -> list[str] | None:
        """The member ids a write asks for (None: the body does not mention members)."""
        key = next((k for k in data if k.lower() == "members"), None)
        if key is None:
            return None
        members = data.pop(key) or []
        ids: list[str] = []
        for m in members:
            if m.get("type", "User") != "User":
                raise _invalid(f"Member {m.get('value')} has type {m.get('type')}; static "
                               "groups hold only users.")
            uid = m.get("value")
            if uid not in self.state.user_index:
                uid = next((u for u, n in self.state.user_index.items()
                            if self.state.users[n].get("ocid") == m.get("ocid")
                            and m.get("ocid")), None)
            if uid is None:
                raise WriteError(400, f"Member {m.get('value')} is not a user of this "
                                 "domain.", "invalidValue",
                                 "error.common.validation.invalidReference")
            if uid not in ids:
                ids.append(uid)
        return ids

    def _check_dynamic(self, data: Mapping[str, Any], members: list[str] | None) -> None:
        ext = scim_filter.get_attr(data, DYNAMIC_GROUP_EXT) or {}
        if scim_filter.get_attr(ext, "membershipType") != "dynamic":
            return
        rule = scim_filter.get_attr(ext, "membershipRule")
        if not isinstance(rule, str) or not rule.strip():
            raise WriteError(400, "Missing required attribute(s): membershipRule.",
                             "invalidValue", "error.common.validation.missingReqAttributes")
        try:
            scim_filter.parse(rule)
        except scim_filter.FilterError as exc:
            raise WriteError(400, f"Invalid membershipRule: {exc}", "invalidFilter",
                             "error.common.common.invalidFilter") from exc
        if members:
            raise _invalid("Members of a dynamic group come from its membershipRule.",
                           "mutability")

    def create_group(self, body: Any, client_id: str | None) -> str:
        data = self.groups.clean_input(body)
        self.groups.validate(data)
        self._unique_group_name(str(data["displayName"]))
        members = self._members_of(data)
        self._check_dynamic(data, members)
        data.setdefault("nonUniqueDisplayName", data["displayName"])
        data.setdefault(GROUP_EXT, {}).setdefault("creationMechanism", "api")
        who = actor_of(client_id)
        gid = new_id()
        group = {"id": gid, "ocid": _ocid("group"), **data, "meta": self._meta("Group"),
                 "idcsCreatedBy": who, "idcsLastModifiedBy": who}
        self.groups.with_schemas(group)
        st = self.state
        st.groups.append(group)
        st.group_index[gid] = len(st.groups) - 1
        st.members[gid] = []
        self._set_members(gid, members or [])
        self._refresh_dynamic(None, [gid])
        self._changed()
        return gid

    def replace_group(self, gid: str, body: Any, client_id: str | None,
                      if_match: str | None) -> str:
        i = self._group_index(gid, if_match)
        old = self.state.groups[i]
        data = self.groups.clean_input(body)
        self.groups.check_immutable(old, data)
        self.groups.validate(data)
        self._unique_group_name(str(data["displayName"]), gid)
        members = self._members_of(data)
        self._check_dynamic(data, members)
        self._store_group(i, data, members or [], client_id)
        return gid

    def patch_group(self, gid: str, body: Any, client_id: str | None,
                    if_match: str | None) -> str:
        i = self._group_index(gid, if_match)
        st = self.state
        old = st.groups[i]
        current = [{"value": u, "type": "User"} for u in st.members.get(gid, [])]
        full = {**old, "members": current} if current else dict(old)
        patched = self._patch(self.groups, full, body)
        data = {k: v for k, v in patched.items() if k.lower() not in SERVER_MANAGED}
        self.groups.check_immutable(old, data)
        self.groups.validate(data)
        self._unique_group_name(str(data.get("displayName", "")), gid)
        members = self._members_of(data)
        if _is_dynamic(old) and members == st.members.get(gid, []):
            members = None  # untouched computed members
        self._check_dynamic(data, members)
        self._store_group(i, data, members or [], client_id)
        return gid

    def _store_group(self, i: int, data: dict[str, Any], members: list[str],
                     client_id: str | None) -> None:
        st = self.state
        old = st.groups[i]
        kept = {k: v for k, v in old.items() if k.lower() in SERVER_MANAGED}
        group = {**kept, **data, "meta": self._meta("Group", old.get("meta")),
                 "idcsLastModifiedBy": actor_of(client_id)}
        self.groups.with_schemas(group)
        st.groups[i] = group
        if _is_dynamic(group):
            self._refresh_dynamic(None, [group["id"]])
        else:
            self._set_members(group["id"], members)
        self._changed()

    def delete_group(self, gid: str, if_match: str | None) -> None:
        i = self._group_index(gid, if_match)
        st = self.state
        self._set_members(gid, [], touch_group=False)
        st.members.pop(gid, None)
        del st.groups[i]
        st.group_index = {g["id"]: n for n, g in enumerate(st.groups)}
        self._drop_grants("Group", gid)
        self._changed()

    # ---- membership and grants ----------------------------------------------------------------

    def _set_members(self, gid: str, wanted: list[str], touch_group: bool = True) -> None:
        """Make ``gid``'s members exactly ``wanted``; date the users whose membership moved."""
        st = self.state
        before = st.members.get(gid, [])
        gone, added = set(before) - set(wanted), [u for u in wanted if u not in set(before)]
        if not gone and not added:
            st.members[gid] = list(wanted)
            return
        st.members[gid] = list(wanted)
        now = self.clock.now()
        for uid in gone:
            groups = st.user_groups.get(uid, [])
            if gid in groups:
                groups.remove(gid)
            self._membership_changed(uid, now)
        for uid in added:
            st.user_groups.setdefault(uid, []).append(gid)
            self._membership_changed(uid, now)
        if touch_group and gid in st.group_index:
            group = st.groups[st.group_index[gid]]
            group["meta"] = self._meta("Group", group.get("meta"))

    def _drop_member(self, gid: str, uid: str) -> None:
        st = self.state
        if uid in st.members.get(gid, []):
            st.members[gid] = [u for u in st.members[gid] if u != uid]
            group = st.groups[st.group_index[gid]]
            group["meta"] = self._meta("Group", group.get("meta"))

    def _membership_changed(self, uid: str, now: str) -> None:
        st = self.state
        i = st.user_index.get(uid)
        if i is None:
            return
        user = st.users[i]
        ext = dict(user.get(USER_EXT) or {})
        ext["groupMembershipLastModified"] = now
        st.users[i] = {**user, USER_EXT: ext}

    def _drop_grants(self, grantee_type: str, rid: str) -> None:
        st = self.state
        st.grants = [g for g in st.grants
                     if not ((g.get("grantee") or {}).get("type") == grantee_type
                             and (g.get("grantee") or {}).get("value") == rid)]
        st.grant_index = {g["id"]: n for n, g in enumerate(st.grants)}

    def _refresh_dynamic(self, uids: list[str] | None,
                         gids: list[str] | None = None) -> None:
        """Recompute dynamic groups' members: for ``uids`` only, or all users of ``gids``."""
        st = self.state
        targets = [g for g in st.groups if _is_dynamic(g)
                   and (gids is None or g["id"] in gids)]
        for group in targets:
            rule = scim_filter.compile_filter(
                (group.get(DYNAMIC_GROUP_EXT) or {}).get("membershipRule", ""),
                self.users.patcher.case_exact)
            gid = group["id"]
            current = list(st.members.get(gid, []))
            if uids is None:
                wanted = [u["id"] for u in st.users if rule(u)]
            else:
                wanted = [u for u in current if u not in uids]
                wanted += [u for u in uids if u in st.user_index
                           and rule(st.users[st.user_index[u]])]
            if set(wanted) != set(current):
                self._set_members(gid, wanted)

    @staticmethod
    def _patch(shape: Shape, resource: dict[str, Any], body: Any) -> dict[str, Any]:
        try:
            return shape.patcher.apply(resource, body)
        except PatchError as exc:
            raise WriteError(exc.status, exc.detail, exc.scim_type, exc.message_id) from exc


def _is_dynamic(group: Mapping[str, Any]) -> bool:
    ext = scim_filter.get_attr(group, DYNAMIC_GROUP_EXT) or {}
    return scim_filter.get_attr(ext, "membershipType") == "dynamic"


def _add_recovery_email(data: dict[str, Any]) -> None:
    """IDCS adds a ``recovery`` e-mail, a copy of the primary work one (reference §5.1)."""
    emails = data.get("emails")
    if not isinstance(emails, list):
        return
    if any(isinstance(e, dict) and e.get("type") == "recovery" for e in emails):
        return
    work = next((e for e in emails if isinstance(e, dict) and e.get("type") == "work"
                 and e.get("primary")), None)
    if work is not None:
        emails.append({"value": work.get("value"), "type": "recovery", "primary": False,
                       "secondary": False, "verified": False})


__all__ = ["CORE_GROUP", "CORE_USER", "Clock", "TenantWriter", "WriteError", "new_id"]
