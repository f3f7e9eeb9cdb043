"""Plain data passed between stages. Everything here serialises to JSON via ``to_dict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def key(name: str) -> str:
    """Bitbucket user and group names are case-insensitive: compare them through this."""
    return name.casefold()


@dataclass(frozen=True)
class IdcsUser:
    """One IDCS user, flattened to what mapping and quality checks need."""

    id: str | None
    user_name: str | None
    display_name: str | None
    given_name: str | None
    family_name: str | None
    email: str | None
    active: bool
    federated: bool = False
    group_ids: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # attributes the rules read


@dataclass(frozen=True)
class IdcsGroup:
    id: str
    display_name: str


@dataclass
class IdcsSnapshot:
    """What one extract saw: users in scope, all groups, and where the scope came from."""

    users: list[IdcsUser]
    groups: list[IdcsGroup]
    scope: str
    total_users_seen: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": [asdict(u) for u in self.users],
            "groups": [asdict(g) for g in self.groups],
            "scope": self.scope,
            "total_users_seen": self.total_users_seen,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdcsSnapshot:
        users = [IdcsUser(**{**u, "group_ids": tuple(u["group_ids"])}) for u in data["users"]]
        groups = [IdcsGroup(**g) for g in data["groups"]]
        return cls(users, groups, data["scope"], data.get("total_users_seen", len(users)))


@dataclass(frozen=True)
class DesiredUser:
    """A Bitbucket user as the rules say it should be, anchored to its IDCS id."""

    idcs_id: str
    name: str
    display_name: str
    email: str
    active: bool


@dataclass
class DesiredState:
    """The managed part of Bitbucket as IDCS and the rules want it."""

    users: dict[str, DesiredUser]  # by IDCS id
    managed_groups: list[str]  # groups whose membership the sync owns: they also lose members
    memberships: dict[str, list[str]]  # group name -> Bitbucket user names
    group_permissions: dict[str, str]  # group name -> global permission
    additive_groups: list[str] = field(default_factory=list)  # members only ever added
    initial_groups: list[str] = field(default_factory=list)  # new users join these once
    create_only: list[str] = field(default_factory=list)  # attributes set on create only

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": [asdict(u) for u in self.users.values()],
            "managed_groups": self.managed_groups,
            "memberships": self.memberships,
            "group_permissions": self.group_permissions,
            "additive_groups": self.additive_groups,
            "initial_groups": self.initial_groups,
            "create_only": self.create_only,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DesiredState:
        users = {u["idcs_id"]: DesiredUser(**u) for u in data["users"]}
        return cls(users, data["managed_groups"], data["memberships"], data["group_permissions"],
                   data.get("additive_groups", []), data.get("initial_groups", []),
                   data.get("create_only", []))

    def groups_to_read(self) -> list[str]:
        """Every group whose members the planner compares."""
        return [*self.managed_groups, *self.additive_groups]


@dataclass(frozen=True)
class BitbucketUser:
    name: str
    display_name: str
    email: str
    directory: str = "Bitbucket Internal Directory"
    mutable: bool = True


@dataclass
class BitbucketState:
    """What Bitbucket holds now, keyed case-insensitively (see :func:`key`)."""

    users: dict[str, BitbucketUser] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # key -> name as stored
    memberships: dict[str, list[str]] = field(default_factory=dict)  # group key -> user names
    group_permissions: dict[str, str] = field(default_factory=dict)  # group key -> permission
    user_permissions: dict[str, str] = field(default_factory=dict)  # user key -> permission

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": [asdict(u) for u in self.users.values()],
            "groups": list(self.groups.values()),
            "memberships": self.memberships,
            "group_permissions": self.group_permissions,
            "user_permissions": self.user_permissions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitbucketState:
        return cls(
            users={key(u["name"]): BitbucketUser(**u) for u in data["users"]},
            groups={key(g): g for g in data["groups"]},
            memberships=data["memberships"],
            group_permissions=data["group_permissions"],
            user_permissions=data["user_permissions"],
        )
