"""Listings that change or come up short while they are paged, against the IDCS emulator on a
real socket.

A listing that changed underneath (a user created, a member added while we page) is transient:
it is read again from the start after a backoff, and if it keeps changing the client raises
ListingChangedError, which the read tasks retry. A group's member pages are checked against the
member count IDCS reports: a short page is not the end (IDCS may return fewer than asked), and a
listing that ends below the count is a PartialExtractError that fails the run at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import create_idcs_app
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.idcs.client import IdcsClient, ListingChangedError, PartialExtractError
from identity_sync.idcs.extract import extract_full

from .conftest import Idcs, page_cap

USERS = "/admin/v1/Users"
MEMBERS = re.compile(r"members\[startIndex=(\d+)&count=(\d+)\]")
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@dataclass
class MemberPaging:
    """How the proxy in front of the emulator bends member pages."""

    cap: int | None = None  # at most this many members per answer (IDCS may return fewer)
    cut_at: int | None = None  # members from this startIndex on are lost (a truncating proxy)


class MemberPagingProxy:
    """ASGI middleware rewriting ``attributes=members[startIndex=S&count=C]`` on group reads."""

    def __init__(self, app: Any, paging: MemberPaging) -> None:
        self.app, self.paging = app, paging

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/admin/v1/Groups/"):
            query = [(k, self.rewrite(v) if k == "attributes" else v)
                     for k, v in parse_qsl(scope["query_string"].decode(), keep_blank_values=True)]
            scope = {**scope, "query_string": urlencode(query).encode()}
        await self.app(scope, receive, send)

    def rewrite(self, value: str) -> str:
        found = MEMBERS.fullmatch(value)
        if not found:
            return value
        start, count = int(found[1]), int(found[2])
        if self.paging.cap:
            count = min(count, self.paging.cap)
        if self.paging.cut_at:
            if start >= self.paging.cut_at:
                start = 1_000_000  # past every member: an empty answer
            else:
                count = min(count, self.paging.cut_at - start)
        return f"members[startIndex={start}&count={count}]"


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[Any, str, MemberPaging]]:
    app, paging = create_idcs_app(), MemberPaging()
    with serving(MemberPagingProxy(app, paging)) as running:
        yield app, running.base_url, paging


@pytest.fixture
def idcs(proxied: tuple[Any, str, MemberPaging]) -> Iterator[Idcs]:
    """60 users in 8 groups behind the member-paging proxy (which starts transparent)."""
    app, url, paging = proxied
    paging.cap = paging.cut_at = None
    emulator = Idcs(app, url)
    emulator.control("POST", "reset")
    emulator.seed(generate_idcs_org(11, 60, 8))
    yield emulator
    paging.cap = paging.cut_at = None
    emulator.control("POST", "reset")


@pytest.fixture
def paging(proxied: tuple[Any, str, MemberPaging]) -> MemberPaging:
    return proxied[2]


def largest_group(idcs: Idcs) -> tuple[str, set[str]]:
    group = max(idcs.dump()["groups"], key=lambda g: len(g.get("members") or []))
    return group["id"], {m["value"] for m in group["members"]}


def after_pages(client: IdcsClient, path: str, pages: set[int],
                action: Callable[[], None]) -> None:
    """Run ``action`` after the listed 200 answers (1-based) on ``path`` (query ignored)."""
    seen = 0

    def hook(resp: requests.Response, *args: object, **kwargs: object) -> None:
        nonlocal seen
        if urlsplit(resp.request.url).path == path and resp.status_code == 200:
            seen += 1
            if seen in pages:
                action()

    client.session.hooks["response"].append(hook)


def writer(idcs: Idcs) -> Callable[[str, str, Any], None]:
    """A separate admin session for changing the tenant while the client under test reads."""
    token = idcs.client().token()

    def send(method: str, path: str, body: Any) -> None:
        requests.request(method, f"{idcs.url}{path}", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).raise_for_status()

    return send


def new_user(name: str) -> dict[str, Any]:
    return {"schemas": [CORE_USER], "userName": name,
            "name": {"givenName": "New", "familyName": "Hire"},
            "emails": [{"value": f"{name}@example.com", "type": "work", "primary": True}]}


# -- a listing that changes while it is paged: transient, read again after a backoff ---------


def test_a_user_created_mid_listing_restarts_it_after_a_backoff(idcs: Idcs) -> None:
    page_cap(idcs, 10)  # 60 users: 6 pages
    client, send = idcs.client(), writer(idcs)
    after_pages(client, USERS, {2}, lambda: send("POST", USERS, new_user("new.hire")))
    users = client.list_all(USERS, {"attributes": "userName"})
    assert len(users) == len({u["id"] for u in users}) == 61
    assert "new.hire" in {u["userName"] for u in users}
    assert len(idcs.sleeps) == 1 and idcs.sleeps[0] > 0  # one backoff, then the restart


def test_a_listing_that_keeps_changing_raises_listing_changed_not_plain_partial(
        idcs: Idcs) -> None:
    page_cap(idcs, 10)
    client, send, made = idcs.client(), writer(idcs), iter(range(100))
    after_pages(client, USERS, {2, 8}, lambda: send("POST", USERS, new_user(f"u{next(made)}")))
    with pytest.raises(ListingChangedError, match="totalResults changed from 61 to 62") as raised:
        client.list_all(USERS)
    assert "\n" not in str(raised.value) and len(idcs.sleeps) == 1
    assert isinstance(raised.value, PartialExtractError)  # still never synced from


def test_a_listing_that_comes_up_short_is_partial_and_not_restarted(idcs: Idcs) -> None:
    page_cap(idcs, 10, rules=[{"kind": "total_results", "path": USERS, "start_index": None,
                               "value": 75}])  # claims 75 on every page, delivers 60
    with pytest.raises(PartialExtractError, match="stopped at 60 of 75") as raised:
        idcs.client().list_all(USERS)
    assert not isinstance(raised.value, ListingChangedError) and idcs.sleeps == []


# -- member pages: checked against the member count IDCS reports -------------------------------


def test_short_member_pages_are_read_up_to_the_reported_count(
        idcs: Idcs, paging: MemberPaging) -> None:
    gid, members = largest_group(idcs)
    paging.cap = 3  # IDCS answers 3 members however many are asked for
    client = idcs.client()
    read = [m["value"] for m in client.list_group_members(gid)]
    assert len(read) == len(set(read)) and set(read) == members
    pages = client.metrics.snapshot()["endpoints"]["GET /admin/v1/Groups/{id}"]["pages"]
    assert pages == math.ceil(len(members) / 3) and len(members) > 3


def test_group_side_extract_with_short_member_pages_matches_the_user_side(
        idcs: Idcs, paging: MemberPaging) -> None:
    user_side = {u.id: set(u.group_ids) for u in extract_full(idcs.client()).snapshot.users}
    paging.cap = 4
    group_side = extract_full(idcs.client(), membership="group_side")
    assert {u.id: set(u.group_ids) for u in group_side.snapshot.users} == user_side


def test_a_member_listing_cut_short_is_a_partial_extract(
        idcs: Idcs, paging: MemberPaging) -> None:
    gid, members = largest_group(idcs)
    paging.cap, paging.cut_at = 3, 7  # members 7.. never arrive
    with pytest.raises(PartialExtractError) as raised:
        idcs.client().list_group_members(gid)
    text = str(raised.value)
    assert text == (f"IDCS group {gid} member listing stopped at 6 of {len(members)} members "
                    "(empty page at startIndex 7); refusing to sync partial data")
    assert not isinstance(raised.value, ListingChangedError) and idcs.sleeps == []
    with pytest.raises(PartialExtractError, match=r"member listing stopped at 6 of \d+ members"):
        extract_full(idcs.client(), membership="group_side")  # the first group over 6 members


def test_a_member_removed_while_paging_restarts_the_group_after_a_backoff(
        idcs: Idcs, paging: MemberPaging) -> None:
    gid, members = largest_group(idcs)
    leaver = sorted(members)[0]
    paging.cap = 3
    client, send = idcs.client(), writer(idcs)
    remove = {"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": f'members[value eq "{leaver}"]'}]}
    after_pages(client, f"/admin/v1/Groups/{gid}", {1},
                lambda: send("PATCH", f"/admin/v1/Groups/{gid}", remove))
    read = [m["value"] for m in client.list_group_members(gid)]
    assert len(read) == len(set(read)) and set(read) == members - {leaver}
    assert len(idcs.sleeps) == 1  # the first pass saw the count change; one backoff, one re-read


def test_members_removed_on_every_pass_raise_listing_changed(
        idcs: Idcs, paging: MemberPaging) -> None:
    gid, members = largest_group(idcs)
    leaving = iter(sorted(members))
    paging.cap = 3
    client, send = idcs.client(), writer(idcs)

    def remove() -> None:
        send("PATCH", f"/admin/v1/Groups/{gid}", {"schemas": [PATCH_OP], "Operations": [
            {"op": "remove", "path": f'members[value eq "{next(leaving)}"]'}]})

    per_pass = math.ceil(len(members) / 3) + 1
    after_pages(client, f"/admin/v1/Groups/{gid}", {1, per_pass + 1}, remove)
    with pytest.raises(ListingChangedError, match=f"IDCS group {gid} member count changed"):
        client.list_group_members(gid)
    assert len(idcs.sleeps) == 1
