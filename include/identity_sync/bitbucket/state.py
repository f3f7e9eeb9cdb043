"""Read Bitbucket's current state: users, groups, memberships of managed groups, permissions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..model import BitbucketState, BitbucketUser, key
from .client import BitbucketClient

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def parse_user_entry(user: dict[str, Any]) -> BitbucketUser:
    """A ``RestDetailedUser`` as the planner sees it (read-only directories are immutable)."""
    return BitbucketUser(
        name=user["name"],
        display_name=user.get("displayName") or "",
        email=user.get("emailAddress") or "",
        directory=user.get("directoryName") or "",
        mutable=bool(user.get("mutableDetails", True) and user.get("mutableGroups", True)),
    )


def read_state(client: BitbucketClient, managed_groups: list[str]) -> BitbucketState:
    """Everything the planner compares against. Member lists are read only for the groups the
    rules produce and the groups that grant a global permission (a disabled user must leave
    those), since no other membership can change."""
    client.preflight()  # pace to the server's rate limit; warn if not allow-listed
    state = BitbucketState()
    for user in client.list_users():
        state.users[key(user["name"])] = parse_user_entry(user)
    for name in client.list_groups():
        state.groups[key(name)] = name
    for entry in client.group_permissions():
        state.group_permissions[key(entry["group"]["name"])] = entry["permission"]
    wanted = {key(g): g for g in managed_groups}
    wanted.update({g: state.groups[g] for g in state.group_permissions if g in state.groups})
    to_read = [(gkey, group) for gkey, group in sorted(wanted.items()) if gkey in state.groups]
    state.memberships = read_members(client, to_read)
    for entry in client.user_permissions():
        state.user_permissions[key(entry["user"]["name"])] = entry["permission"]
    log.info("Bitbucket state: %d users, %d groups, members of %d groups read, %d requests",
             len(state.users), len(state.groups), len(state.memberships), client.requests_made)
    return state


def concurrently(client: BitbucketClient, read: Callable[[T], R], items: list[T]) -> list[R]:
    """``[read(item) for item in items]``, in that order, on up to the client's
    ``max_concurrency`` threads. Many small reads one after another each wait a round trip
    (issue 10: 75 s for 1,076 group listings). The client is thread-safe; its transport bounds
    the requests in flight and shares one token bucket, so the pace stays what preflight set.
    The first exception a read raises is raised here."""
    workers = max(1, min(client.settings.max_concurrency, len(items)))
    if workers == 1:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bb-read") as pool:
        return list(pool.map(read, items))


def read_members(client: BitbucketClient, groups: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Member names of each ``(key, name)`` group, keyed and ordered as given."""
    def names(group: str) -> list[str]:
        return [m["name"] for m in client.group_members(group)]

    listed = concurrently(client, names, [group for _, group in groups])
    return {gkey: members for (gkey, _), members in zip(groups, listed, strict=True)}
