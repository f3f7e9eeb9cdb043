"""Bitbucket paging is all or nothing: a page without a boolean ``isLastPage`` (a proxy that
strips it, a wrong type) is an error naming the path, never "the last page"; the emulator, like
the real API, always sends it, so paging through it works at any page size."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from identity_sync.bitbucket.client import BitbucketClient, BitbucketError
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings

SETTINGS = HttpSettings(timeout=5.0, retries=0, rate_limit_fill_rate=0)
MISSING = object()


def wrapper(last: Any, **extra: Any) -> dict[str, Any]:
    body = {"size": 1, "limit": 1, "values": [{"name": "g"}], "start": 0, **extra}
    if last is not MISSING:
        body["isLastPage"] = last
    return body


# ?case= picks the answer; in "second_page" only page 2 (start=1) lacks isLastPage
CASES: dict[str, dict[str, Any]] = {
    "missing": wrapper(MISSING),
    "null": wrapper(None),
    "string": wrapper("true"),
    "number": wrapper(1),
    "missing_with_next": wrapper(MISSING, nextPageStart=1),
}


async def proxy_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A proxy in front of Bitbucket that mangles the paging wrapper, per ``?case=``."""
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    case, start = query.get("case", ""), int(query.get("start", "0"))
    if case == "second_page":
        body = (wrapper(False, nextPageStart=1) if start == 0 else wrapper(MISSING))
    else:
        body = CASES[case]
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json;charset=UTF-8"),
        (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def proxy() -> Iterator[BitbucketClient]:
    with serving(proxy_app) as server:
        yield BitbucketClient(server.base_url, "svc", "pw", settings=SETTINGS)


@pytest.mark.parametrize("case", ["missing", "null", "string", "number", "missing_with_next"])
def test_a_page_without_a_boolean_is_last_page_is_an_error(
        proxy: BitbucketClient, case: str) -> None:
    with pytest.raises(BitbucketError) as raised:
        list(proxy.iter_pages("/admin/groups", {"case": case}))
    text = str(raised.value)
    assert "\n" not in text and "/admin/groups" in text and "isLastPage" in text
    assert "start=0" in text and "partial" in text
    assert ("(absent)" in text) == case.startswith("missing")


def test_a_later_page_without_is_last_page_fails_the_whole_listing(
        proxy: BitbucketClient) -> None:
    read: list[str] = []
    with pytest.raises(BitbucketError, match=r"/admin/groups page at start=1 has no boolean"):
        read.extend(g["name"] for g in proxy.iter_pages("/admin/groups", {"case": "second_page"}))
    assert read == ["g"]  # the first page only: the caller never sees a "complete" listing


@pytest.fixture(scope="module")
def emulator() -> Iterator[BitbucketClient]:
    """The Bitbucket emulator with 7 users in 3 groups."""
    with serving(create_bitbucket_app()) as server:
        bb = BitbucketClient(server.base_url, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                             settings=SETTINGS)
        for i in range(7):
            bb.create_user(f"user{i}", f"User {i}", f"user{i}@example.com")
        for group in ("devs", "ops", "qa"):
            bb.create_group(group)
            bb.set_group_permission(group, "LICENSED_USER")
        bb.add_users_to_group("devs", [f"user{i}" for i in range(7)])
        yield bb


@pytest.mark.parametrize(("path", "params"), [
    ("/admin/users", {}),
    ("/admin/groups", {}),
    ("/admin/groups/more-members", {"context": "devs"}),
    ("/admin/users/more-members", {"context": "user0"}),
    ("/admin/permissions/groups", {}),
    ("/admin/permissions/users", {}),
    ("/users", {"permission": "LICENSED_USER"}),
])
def test_the_emulator_always_sends_is_last_page(
        emulator: BitbucketClient, path: str, params: dict[str, str]) -> None:
    whole = list(emulator.iter_pages(path, params))
    assert whole  # something to page through
    for limit in (1, 2):  # many pages, each checked for a boolean isLastPage
        assert list(emulator.iter_pages(path, params, limit=limit)) == whole
    raw = emulator.request_json("GET", path, params={**params, "limit": 1})
    assert isinstance(raw["isLastPage"], bool)
