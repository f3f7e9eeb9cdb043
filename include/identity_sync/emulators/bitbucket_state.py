"""In-memory model of a Bitbucket DC instance: users, groups, memberships, global permissions.

Kept apart from the HTTP layer so the rules a sync client trips over (case-insensitive names,
permission ranks, licence counting, read-only directories) live in one readable place. Every
rule violation is a :class:`BitbucketError` carrying the status and envelope fields Bitbucket
would answer with; the HTTP layer only renders it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

DEMO_ADMIN_USER = "sync-admin"
DEMO_ADMIN_PASSWORD = "sync-password"
SYSADMIN_USER = "admin"
SYSADMIN_PASSWORD = "admin"
DEFAULT_GROUP = "stash-users"
INTERNAL_DIRECTORY = "Bitbucket Internal Directory"

PERMISSIONS = ("LICENSED_USER", "PROJECT_CREATE", "ADMIN", "SYS_ADMIN")
RANK = {name: rank for rank, name in enumerate(PERMISSIONS, start=1)}  # 0 = no permission
LICENSED = RANK["LICENSED_USER"]
ADMIN = RANK["ADMIN"]

# exceptionName values. The first four are observed on live instances (reference §12); the
# others are UNCERTAIN (no captured body exists) and chosen to be recognisable. Clients should
# key on the status code, never on these names.
EX_AUTHORISATION = "com.atlassian.bitbucket.AuthorisationException"
EX_VALIDATION = "com.atlassian.bitbucket.validation.ArgumentValidationException"
EX_NO_SUCH_USER = "com.atlassian.bitbucket.user.NoSuchUserException"
EX_INTEGRITY = "com.atlassian.bitbucket.IntegrityException"
EX_NO_SUCH_GROUP = "com.atlassian.bitbucket.user.NoSuchGroupException"
EX_LICENSE = "com.atlassian.bitbucket.license.LicenseLimitException"
EX_READ_ONLY = "com.atlassian.crowd.exception.OperationNotPermittedException"
EX_NO_SUCH_TOKEN = "com.atlassian.bitbucket.auth.NoSuchAccessTokenException"


class BitbucketError(Exception):
    """A refusal, rendered by the HTTP layer as ``{"errors":[{context,message,exceptionName}]}``."""

    def __init__(
        self, status: int, message: str, exception_name: str, context: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.exception_name = exception_name
        self.context = context
        self.headers = headers or {}


def invalid(field: str, message: str) -> BitbucketError:
    return BitbucketError(400, message, EX_VALIDATION, context=field)


def no_such_user(name: str) -> BitbucketError:
    return BitbucketError(404, f"User {name} does not exist.", EX_NO_SUCH_USER)


def no_such_group(name: str) -> BitbucketError:
    return BitbucketError(404, f"Group {name} does not exist.", EX_NO_SUCH_GROUP)


def make_slug(name: str) -> str:
    """URL-safe form of a username. UNCERTAIN: Bitbucket's exact algorithm is undocumented."""
    return re.sub(r"[^a-z0-9._-]", "_", name.lower())


@dataclass
class User:
    id: int
    name: str
    display_name: str
    email: str
    password: str | None
    directory: str = INTERNAL_DIRECTORY
    type: str = "NORMAL"
    active: bool = True
    mutable_details: bool = True
    mutable_groups: bool = True
    last_authentication: int | None = None

    @property
    def slug(self) -> str:
        return make_slug(self.name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "name": self.name, "displayName": self.display_name,
            "emailAddress": self.email, "password": self.password,
            "directoryName": self.directory, "type": self.type, "active": self.active,
            "mutableDetails": self.mutable_details, "mutableGroups": self.mutable_groups,
        }  # fmt: skip
        if self.last_authentication is not None:
            data["lastAuthenticationTimestamp"] = self.last_authentication
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_id: int) -> User:
        directory = data.get("directoryName", INTERNAL_DIRECTORY)
        internal = directory == INTERNAL_DIRECTORY
        return cls(
            id=int(data.get("id", default_id)), name=data["name"],
            display_name=data.get("displayName", data["name"]),
            email=data.get("emailAddress", ""), password=data.get("password"),
            directory=directory, type=data.get("type", "NORMAL"),
            active=data.get("active", True),
            mutable_details=data.get("mutableDetails", internal),
            mutable_groups=data.get("mutableGroups", internal),
            last_authentication=data.get("lastAuthenticationTimestamp"),
        )  # fmt: skip


@dataclass
class Group:
    name: str
    deletable: bool = True


def _key(name: str) -> str:
    """Usernames and group names are case-insensitive for lookup and uniqueness."""
    return name.lower()


class BitbucketState:
    """One Bitbucket instance. Callers hold ``lock`` around each request's work."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}  # key: lower-case name
        self.groups: dict[str, Group] = {}  # key: lower-case name
        self.members: dict[str, set[int]] = {}  # group key -> user ids
        self.group_perms: dict[str, str] = {}  # group key -> permission
        self.user_perms: dict[int, str] = {}  # user id -> direct permission
        self.next_id = 1
        self.default_group: str | None = DEFAULT_GROUP
        self.license_limit: int | None = None
        # Deleted usernames not yet erased (lower-case key -> name as it was): GDPR erasure.
        self.deleted_names: dict[str, str] = {}
        self.captcha: set[int] = set()  # ids of users facing a CAPTCHA at login
        # user id -> personal access tokens {"id", "name", "createdDate"}, oldest first.
        self.tokens: dict[int, list[dict[str, Any]]] = {}
        self._order: tuple[tuple[int, ...], list[User], dict[int, int]] | None = None
        self._renames = 0  # part of the listing order's fingerprint
        self._members_order: dict[tuple[Any, ...], list[User]] = {}  # see sorted_members
        self.clear()

    # ---- EmulatorState protocol -------------------------------------------------------------

    def clear(self) -> None:
        """A realistic new instance: a sysadmin, the sync service account, the default group."""
        self.load_dict({
            "users": [
                {"id": 1, "name": SYSADMIN_USER, "displayName": "Administrator",
                 "emailAddress": "admin@example.com", "password": SYSADMIN_PASSWORD},
                {"id": 2, "name": DEMO_ADMIN_USER, "displayName": "IDCS sync service account",
                 "emailAddress": "sync-admin@example.com", "password": DEMO_ADMIN_PASSWORD},
            ],
            "groups": [{"name": DEFAULT_GROUP, "deletable": True}],
            "memberships": {},
            "group_permissions": {DEFAULT_GROUP: "LICENSED_USER"},
            "user_permissions": {SYSADMIN_USER: "SYS_ADMIN", DEMO_ADMIN_USER: "SYS_ADMIN"},
            "next_id": 3,
            "settings": {"default_group": DEFAULT_GROUP, "license_limit": None},
        })  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            by_id = {u.id: u.name for u in self.users.values()}
            groups = sorted(self.groups.values(), key=lambda g: _key(g.name))
            return {
                "users": [u.to_dict() for u in self.sorted_users()],
                "groups": [{"name": g.name, "deletable": g.deletable} for g in groups],
                "memberships": {
                    g.name: sorted((by_id[i] for i in self.members[_key(g.name)]), key=_key)
                    for g in groups if self.members[_key(g.name)]
                },
                "group_permissions": {
                    self.groups[k].name: p for k, p in sorted(self.group_perms.items())
                },
                "user_permissions": dict(
                    sorted(((by_id[i], p) for i, p in self.user_perms.items()),
                           key=lambda x: _key(x[0]))
                ),
                "next_id": self.next_id,
                "settings": {"default_group": self.default_group,
                             "license_limit": self.license_limit},
                # Optional keys, written only when non-empty so older dumps stay identical.
                **({"deleted_users": sorted(self.deleted_names.values(), key=_key)}
                   if self.deleted_names else {}),
                **({"captcha": sorted((by_id[i] for i in self.captcha if i in by_id), key=_key)}
                   if self.captcha else {}),
                **({"access_tokens": {by_id[i]: [dict(t) for t in toks]
                                      for i, toks in sorted(self.tokens.items(),
                                                            key=lambda x: _key(by_id[x[0]]))
                                      if toks and i in by_id}}
                   if any(self.tokens.values()) else {}),
            }  # fmt: skip

    def load_dict(self, data: dict[str, Any]) -> None:
        """Replace everything with a dump; ids and most user fields may be omitted in seeds."""
        raw_users = data.get("users", [])
        explicit = [int(u["id"]) for u in raw_users if "id" in u]
        next_id = max([int(data.get("next_id", 1)), *(i + 1 for i in explicit)])
        users: dict[str, User] = {}
        for raw in raw_users:
            user = User.from_dict(raw, default_id=next_id)
            next_id += "id" not in raw
            if _key(user.name) in users:
                raise ValueError(f"duplicate user {user.name!r} in state")
            users[_key(user.name)] = user
        if len({u.id for u in users.values()}) != len(users):
            raise ValueError("duplicate user ids in state")
        groups = {_key(g["name"]): Group(g["name"], g.get("deletable", True))
                  for g in data.get("groups", [])}  # fmt: skip
        if len(groups) != len(data.get("groups", [])):
            raise ValueError("duplicate group names in state")

        def user_id(name: str) -> int:
            if _key(name) not in users:
                raise ValueError(f"unknown user {name!r} in state")
            return users[_key(name)].id

        def group_key(name: str) -> str:
            if _key(name) not in groups:
                raise ValueError(f"unknown group {name!r} in state")
            return _key(name)

        members: dict[str, set[int]] = {k: set() for k in groups}
        for group, names in data.get("memberships", {}).items():
            members[group_key(group)].update(user_id(n) for n in names)
        group_perms = {
            group_key(g): _checked(p) for g, p in data.get("group_permissions", {}).items()
        }
        user_perms = {user_id(u): _checked(p) for u, p in data.get("user_permissions", {}).items()}
        settings = data.get("settings", {})
        # A deleted name may also be a live user's again (re-created): erasure answers 409.
        deleted = {_key(n): n for n in data.get("deleted_users", [])}
        captcha = {user_id(n) for n in data.get("captcha", [])}
        tokens: dict[int, list[dict[str, Any]]] = {}
        for name, raw_tokens in data.get("access_tokens", {}).items():
            tokens[user_id(name)] = [_token(t) for t in raw_tokens]
        with self.lock:
            self.users, self.groups, self.members = users, groups, members
            self.group_perms, self.user_perms = group_perms, user_perms
            self.next_id = next_id
            self.default_group = settings.get("default_group", DEFAULT_GROUP)
            self.license_limit = settings.get("license_limit")
            self.deleted_names, self.captcha, self.tokens = deleted, captcha, tokens

    # ---- reading ----------------------------------------------------------------------------

    def find_user(self, name: str | None) -> User | None:
        return self.users.get(_key(name)) if name else None

    def user(self, name: str | None) -> User:
        user = self.find_user(name)
        if user is None:
            raise no_such_user(name or "")
        return user

    def user_by_slug(self, slug: str) -> User:
        """``/users/{userSlug}`` and rate-limit paths take the slug, never the name."""
        for user in self.users.values():
            if user.slug == slug:
                return user
        raise no_such_user(slug)

    def group(self, name: str | None) -> Group:
        group = self.groups.get(_key(name)) if name else None
        if group is None:
            raise no_such_group(name or "")
        return group

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.find_user(name)
        if user is None or not user.active or user.password is None:
            return None
        return user if user.password == password else None

    def rank(self, user: User) -> int:
        """Effective permission: the highest of the direct grant and the user's groups' grants."""
        ranks = [RANK.get(self.user_perms.get(user.id, ""), 0)]
        ranks += [RANK.get(p, 0) for g, p in self.group_perms.items() if user.id in self.members[g]]
        return max(ranks)

    def group_rank(self, group: Group) -> int:
        return RANK.get(self.group_perms.get(_key(group.name), ""), 0)

    def sorted_users(self, users: Iterable[User] | None = None) -> list[User]:
        """``users`` (default: everyone) in listing order. Every page of a listing used to sort
        all users again; the order is now kept until a user is created, deleted, renamed or
        the state reloaded, and a subset is sorted by its members' places in it."""
        _, ordered, place = self._listing_order()
        if users is None:
            return list(ordered)
        chosen = list(users)
        if all(u.id in place and ordered[place[u.id]] is u for u in chosen):
            return sorted(chosen, key=lambda u: place[u.id])
        return sorted(chosen, key=lambda u: (_key(u.name), u.name))

    def _listing_order(self) -> tuple[tuple[int, ...], list[User], dict[int, int]]:
        """A fingerprint, all users in listing order and each one's place. The fingerprint
        changes with every create (``next_id``), delete (the count), rename and reload."""
        mark = (id(self.users), len(self.users), self.next_id, self._renames)
        if self._order is None or self._order[0] != mark:
            ordered = sorted(self.users.values(), key=lambda u: (_key(u.name), u.name))
            self._order = (mark, ordered, {u.id: i for i, u in enumerate(ordered)})
        return self._order

    def sorted_members(self, ids: set[int]) -> list[User]:
        """Users with ``ids``, in listing order (ids of no current user are left out). Paging
        through a large group asks for the same members once per page: the answer is kept,
        keyed by the listing order's fingerprint and the members themselves (any change to
        either is a new key)."""
        mark, ordered, place = self._listing_order()
        members_key = (mark, len(ids), hash(frozenset(ids)))
        cached = self._members_order.get(members_key)
        if cached is None:
            cached = [ordered[i] for i in sorted(place[uid] for uid in ids if uid in place)]
            if len(self._members_order) >= 64:  # a handful of groups are paged at any one time
                self._members_order.clear()
            self._members_order[members_key] = cached
        return list(cached)

    def sorted_groups(self) -> list[Group]:
        return sorted(self.groups.values(), key=lambda g: (_key(g.name), g.name))

    def members_of(self, group: Group) -> set[int]:
        return self.members[_key(group.name)]

    def licensed_ids(self) -> set[int]:
        """Users whose effective permission is at least LICENSED_USER, gathered from the
        licensing grants (not by ranking every user: that is O(users x groups) per call)."""
        ids = {uid for uid, perm in self.user_perms.items() if RANK.get(perm, 0) >= LICENSED}
        for gkey, perm in self.group_perms.items():
            if RANK.get(perm, 0) >= LICENSED:
                ids |= self.members.get(gkey, set())
        return ids & {u.id for u in self.users.values()}

    # ---- users ------------------------------------------------------------------------------

    def create_user(
        self, name: str, display_name: str, email: str, password: str | None, add_to_default: bool
    ) -> User:
        if self.find_user(name) is not None:
            raise BitbucketError(
                409, "Another user with the same name already exists.", EX_INTEGRITY
            )
        user = User(self.next_id, name, display_name, email, password)
        with self._licence_guard():
            self.next_id += 1
            self.users[_key(name)] = user
            # A missing default group (deleted by an admin) means nobody is added: UNCERTAIN.
            if add_to_default and self.default_group and _key(self.default_group) in self.groups:
                self.members[_key(self.default_group)].add(user.id)
        return user

    def update_user(
        self, caller: User, name: str, display_name: str | None, email: str | None
    ) -> User:
        user = self._editable_user(caller, name)
        if display_name is not None:
            user.display_name = display_name
        if email is not None:
            user.email = email
        return user

    def set_password(self, caller: User, name: str, password: str) -> None:
        """404 unknown, 401 higher-ranked target, 400 read-only directory (UNCERTAIN status)."""
        self._editable_user(caller, name).password = password

    def rename_user(self, caller: User, name: str, new_name: str) -> User:
        user = self._editable_user(caller, name)
        other = self.find_user(new_name)
        if other is not None and other is not user:
            raise BitbucketError(
                409, f"A user with the name {new_name} already exists.", EX_INTEGRITY
            )
        del self.users[_key(user.name)]
        user.name = new_name
        self.users[_key(new_name)] = user
        self._renames += 1
        return user

    def delete_user(self, caller: User, name: str) -> User:
        user = self.user(name)
        if user is caller:
            raise BitbucketError(409, "You cannot delete yourself.", EX_INTEGRITY)
        if self.rank(user) > self.rank(caller):
            raise BitbucketError(
                403, f"You cannot delete {user.name}; they have a higher permission level than you.",
                EX_AUTHORISATION)  # fmt: skip
        self._require_mutable(user, details=True)
        del self.users[_key(user.name)]
        for ids in self.members.values():
            ids.discard(user.id)
        self.user_perms.pop(user.id, None)
        self.captcha.discard(user.id)
        # BSERV-10550 keeps tokens 7 days; the emulator drops them with the user (UNCERTAIN).
        self.tokens.pop(user.id, None)
        self.deleted_names[_key(user.name)] = user.name
        return user

    # ---- erasure, CAPTCHA, access tokens ----------------------------------------------------

    def erasable(self, name: str) -> str:
        """The deleted username ``name`` refers to; 409 for a live user, 404 if never deleted."""
        if self.find_user(name) is not None:
            raise BitbucketError(
                409, f"{name} is the username of a not deleted user.", EX_INTEGRITY
            )
        if _key(name) not in self.deleted_names:
            raise no_such_user(name)
        return self.deleted_names[_key(name)]

    def erase_user(self, name: str) -> str:
        """Forget the deleted username; answers the new non-identifying one (deterministic)."""
        original = self.erasable(name)
        del self.deleted_names[_key(original)]
        return "user-" + hashlib.sha256(_key(original).encode()).hexdigest()[:5]

    def clear_captcha(self, caller: User, name: str) -> None:
        user = self.user(name)
        if self.rank(user) > self.rank(caller):
            raise BitbucketError(
                403, f"You cannot clear the CAPTCHA of {user.name}; they have a higher "
                "permission level than you.", EX_AUTHORISATION)  # fmt: skip
        self.captcha.discard(user.id)

    def delete_token(self, user: User, token_id: str) -> None:
        tokens = self.tokens.get(user.id, [])
        for token in tokens:
            if token["id"] == token_id:
                tokens.remove(token)
                return
        raise BitbucketError(404, f"No access token with ID {token_id} exists for "
                             f"{user.name}.", EX_NO_SUCH_TOKEN)

    def _editable_user(self, caller: User, name: str) -> User:
        user = self.user(name)
        if self.rank(user) > self.rank(caller):
            raise BitbucketError(
                401, f"You cannot modify {user.name}; they have a higher permission level than you.",
                EX_AUTHORISATION)  # fmt: skip
        self._require_mutable(user, details=True)
        return user

    @staticmethod
    def _require_mutable(user: User, *, details: bool) -> None:
        # UNCERTAIN: the status for changing a user of a read-only directory is undocumented
        # (reference §10 says "likely 400 or 403"); 400 is chosen.
        if not (user.mutable_details if details else user.mutable_groups):
            what = "details" if details else "group memberships"
            raise BitbucketError(
                400, f"The {what} of {user.name} cannot be changed: the directory "
                f"'{user.directory}' is read-only.", EX_READ_ONLY)  # fmt: skip

    # ---- groups and memberships -------------------------------------------------------------

    def create_group(self, name: str) -> Group:
        if _key(name) in self.groups:
            raise BitbucketError(409, "A group with this name already exists.", EX_INTEGRITY)
        group = Group(name)
        self.groups[_key(name)] = group
        self.members[_key(name)] = set()
        return group

    def delete_group(self, caller: User, name: str) -> Group:
        group = self.group(name)
        self._require_not_above(caller, group, status=403)
        with self._self_demotion_guard(caller):
            del self.groups[_key(group.name)]
            del self.members[_key(group.name)]
            self.group_perms.pop(_key(group.name), None)
        return group

    def add_memberships(self, caller: User, users: list[str], groups: list[str]) -> None:
        """All or nothing: every user and group must exist before anything changes."""
        targets = [self.user(n) for n in users]
        found = [self.group(n) for n in groups]
        for group in found:
            self._require_not_above(caller, group, status=403)
        for user in targets:
            self._require_mutable(user, details=False)
        with self._licence_guard():
            for group in found:  # re-adding an existing member is a no-op (UNCERTAIN)
                self.members_of(group).update(u.id for u in targets)

    def remove_membership(self, caller: User, user_name: str, group_name: str) -> None:
        user, group = self.user(user_name), self.group(group_name)
        self._require_not_above(caller, group, status=403)
        self._require_mutable(user, details=False)
        # Not a member: treated as a no-op 200. UNCERTAIN: the spec lists no error for it.
        # No self-demotion check either: the spec lists no 409 for this endpoint.
        self.members_of(group).discard(user.id)

    # ---- global permissions -----------------------------------------------------------------

    def set_group_permission(self, caller: User, names: list[str], permission: str) -> None:
        found = [self.group(n) for n in names]
        self._require_grantable(caller, permission)
        for group in found:
            self._require_not_above(caller, group, status=409)
        with self._self_demotion_guard(caller), self._licence_guard():
            for group in found:
                self.group_perms[_key(group.name)] = permission

    def revoke_group_permission(self, caller: User, name: str) -> None:
        group = self.group(name)
        self._require_not_above(caller, group, status=409)
        with self._self_demotion_guard(caller):
            self.group_perms.pop(_key(group.name), None)

    def set_user_permission(self, caller: User, names: list[str], permission: str) -> None:
        found = [self.user(n) for n in names]
        self._require_grantable(caller, permission)
        for user in found:
            self._require_user_not_above(caller, user)
        with self._self_demotion_guard(caller), self._licence_guard():
            for user in found:
                self.user_perms[user.id] = permission

    def revoke_user_permission(self, caller: User, name: str) -> None:
        user = self.user(name)
        self._require_user_not_above(caller, user)
        with self._self_demotion_guard(caller):
            self.user_perms.pop(user.id, None)

    def _require_grantable(self, caller: User, permission: str) -> None:
        if RANK[permission] > self.rank(caller):
            raise BitbucketError(
                401, f"You cannot grant {permission}; it is higher than your own permission level.",
                EX_AUTHORISATION)  # fmt: skip

    def _require_not_above(self, caller: User, group: Group, *, status: int) -> None:
        if self.group_rank(group) > self.rank(caller):
            raise BitbucketError(
                status, f"The group {group.name} has a higher permission level than you.",
                EX_AUTHORISATION if status == 403 else EX_INTEGRITY)  # fmt: skip

    def _require_user_not_above(self, caller: User, user: User) -> None:
        if self.rank(user) > self.rank(caller):
            raise BitbucketError(
                409, f"The user {user.name} has a higher permission level than you.", EX_INTEGRITY
            )

    # ---- transactional guards ---------------------------------------------------------------

    def _snapshot(self) -> tuple[Any, ...]:
        return (dict(self.users), dict(self.groups), {k: set(v) for k, v in self.members.items()},
                dict(self.group_perms), dict(self.user_perms), self.next_id)  # fmt: skip

    def _restore(self, snap: tuple[Any, ...]) -> None:
        (self.users, self.groups, self.members, self.group_perms, self.user_perms,
         self.next_id) = snap  # fmt: skip

    @contextmanager
    def _licence_guard(self) -> Iterator[None]:
        """Undo the change and answer 403 if it licenses new users beyond the licence limit.

        Without a limit there is nothing to check: return before any O(state) work, which
        made every create and add-users cost O(users) and a cold sync quadratic (issue 10)."""
        if self.license_limit is None:
            yield
            return
        before, snap = self.licensed_ids(), self._snapshot()
        yield
        after = self.licensed_ids()
        if after - before and len(after) > self.license_limit:
            self._restore(snap)
            raise BitbucketError(
                403, f"This action would exceed the server's license limit of "
                f"{self.license_limit} users.", EX_LICENSE)  # fmt: skip

    @contextmanager
    def _self_demotion_guard(self, caller: User) -> Iterator[None]:
        """Undo the change and answer 409 if it lowers the caller's own permission level."""
        before, snap = self.rank(caller), self._snapshot()
        yield
        if self.rank(caller) < before:
            self._restore(snap)
            raise BitbucketError(
                409, "You cannot perform this action: it would lower your own permission level.",
                EX_INTEGRITY)  # fmt: skip


def _checked(permission: str) -> str:
    if permission not in RANK:
        raise ValueError(f"unknown permission {permission!r} in state")
    return permission


def _token(raw: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw.get("id") or not raw.get("name"):
        raise ValueError(f"access token {raw!r} in state needs an id and a name")
    token = {"id": str(raw["id"]), "name": str(raw["name"])}
    if raw.get("createdDate") is not None:
        token["createdDate"] = str(raw["createdDate"])
    return token


def filter_users(users: Iterable[User], text: str | None) -> list[User]:
    """Case-insensitive substring match on username, display name or email address."""
    if not text:
        return list(users)
    needle = text.lower()
    return [u for u in users
            if needle in u.name.lower() or needle in u.display_name.lower()
            or needle in u.email.lower()]  # fmt: skip


def filter_groups(groups: Iterable[Group], text: str | None) -> list[Group]:
    if not text:
        return list(groups)
    return [g for g in groups if text.lower() in g.name.lower()]
