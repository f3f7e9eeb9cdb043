"""Read Bitbucket's current state: users, groups, memberships of managed groups, permissions."""

from __future__ import annotations

import logging
from typing import Any

from ..model import BitbucketState, BitbucketUser, key
from .client import BitbucketClient

log = logging.getLogger(__name__)


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
    for gkey, group in sorted(wanted.items()):
        if gkey in state.groups:
            state.memberships[gkey] = [m["name"] for m in client.group_members(group)]
    for entry in client.user_permissions():
        state.user_permissions[key(entry["user"]["name"])] = entry["permission"]
    log.info("Bitbucket state: %d users, %d groups, members of %d groups read, %d requests",
             len(state.users), len(state.groups), len(state.memberships), client.requests_made)
    return state
