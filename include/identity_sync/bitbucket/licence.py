"""How many licence seats a refused change was short of.

Why: Bitbucket's 403 says only that the licence limit would be exceeded, and there is no REST
call for the licence size. What the sync can know: which groups grant a licence (any global
permission does) and who already holds one; the users it wanted to license minus those is the
number of seats to free or buy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..http import ApiError
from ..model import key
from .client import BitbucketClient


@dataclass(frozen=True)
class SeatShortfall:
    missing: int  # users the refused changes would have licensed
    users: list[str]
    exact: bool  # False when Bitbucket could not be read and every user is counted


def seats_missing(client: BitbucketClient, creates: list[str],
                  additions: dict[str, list[str]]) -> SeatShortfall:
    """``creates``: users created into the default group; ``additions``: group -> users."""
    try:
        granting = {key(e["group"]["name"]) for e in client.group_permissions()}
        licensed = {key(u["name"]) for u in client.licensed_users()}
    except ApiError:
        wanted = sorted({*creates, *(u for users in additions.values() for u in users)}, key=key)
        return SeatShortfall(len(wanted), wanted, exact=False)
    wanted_keys: dict[str, str] = {key(u): u for u in creates}
    for group, users in additions.items():
        if key(group) in granting:
            wanted_keys.update({key(u): u for u in users})
    short = sorted((name for k, name in wanted_keys.items() if k not in licensed), key=key)
    return SeatShortfall(len(short), short, exact=True)
