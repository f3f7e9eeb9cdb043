"""IDCS answers are read under the same bounds as Bitbucket's (``BodyLimits``: a size cap and a
deadline for the whole body), on the token, a listing page and a group's member page; and an id
taken from an answer is percent-encoded when it becomes a path segment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.bitbucket.transport import BodyLimits
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings
from identity_sync.idcs.client import IdcsApiError, IdcsClient

CAP = 256 * 1024
TOKEN = json.dumps({"access_token": "t0k", "expires_in": 3600}).encode()
LISTING = json.dumps({"totalResults": 1, "Resources": [{"id": "u1", "userName": "a"}]}).encode()
GROUP = json.dumps({"id": "g1", "members": [{"value": "u1", "type": "User"}]}).encode()


class Hostile:
    """An IDCS double: ``cases[endpoint]`` picks how it answers; ``paths`` keeps each raw path."""

    def __init__(self) -> None:
        self.cases: dict[str, str] = {}
        self.paths: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope.get("raw_path") or scope["path"].encode())
        path = scope["path"]
        endpoint, body = (("token", TOKEN) if path == "/oauth2/v1/token"
                          else ("list", LISTING) if path == "/admin/v1/Users"
                          else ("group", GROUP))
        case = self.cases.get(endpoint, "fine")
        json_type = (b"content-type", b"application/scim+json")
        if case == "huge_declared":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [json_type, (b"content-length", b"900000000")]})
            await send({"type": "http.response.body", "body": b"{" * 1000})
        elif case == "endless":  # no length given, far past the cap, never-ending in effect
            await send({"type": "http.response.start", "status": 200, "headers": [json_type]})
            for _ in range(64):
                await send({"type": "http.response.body", "body": b" " * 65536,
                            "more_body": True})
            await send({"type": "http.response.body", "body": body})
        elif case == "drip":  # a byte every 50 ms: no single read times out, the whole body does
            await send({"type": "http.response.start", "status": 200,
                        "headers": [json_type, (b"content-length", b"10000")]})
            for _ in range(200):
                await send({"type": "http.response.body", "body": b" ", "more_body": True})
                await asyncio.sleep(0.05)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [
                json_type, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Hostile, str]]:
    app = Hostile()
    with serving(app) as server:
        yield app, server.base_url


@pytest.fixture
def hostile(served: tuple[Hostile, str]) -> Iterator[tuple[Hostile, str]]:
    app, url = served
    app.cases.clear()
    app.paths.clear()
    yield app, url
    app.cases.clear()


def client(url: str, retries: int = 1) -> IdcsClient:
    return IdcsClient(url, "cid", "secret", sleep=lambda _s: None,
                      settings=HttpSettings(timeout=2.0, retries=retries, backoff_factor=0.001,
                                            backoff_max=0.002),
                      limits=BodyLimits(max_bytes=CAP, deadline=0.5))


def read(idcs: IdcsClient, endpoint: str) -> Any:
    if endpoint == "token":
        return idcs.token()
    if endpoint == "list":
        return idcs.list_all("/admin/v1/Users")
    return list(idcs.iter_group_members("g1"))


def test_idcs_client_uses_the_bitbucket_limits_by_default() -> None:
    assert IdcsClient("http://127.0.0.1:1", "cid", "secret").limits == BodyLimits()


@pytest.mark.parametrize("endpoint", ["token", "list", "group"])
@pytest.mark.parametrize(("case", "says"), [
    ("huge_declared", "answer of 900000000 bytes refused (limit 262144)"),
    ("endless", "answer larger than 262144 bytes refused"),
])
def test_oversized_answer_is_refused_at_once(hostile: tuple[Hostile, str], endpoint: str,
                                             case: str, says: str) -> None:
    app, url = hostile
    app.cases[endpoint] = case
    idcs = client(url, retries=3)
    with pytest.raises(IdcsApiError) as err:
        read(idcs, endpoint)
    message = str(err.value)
    assert says in message and "\n" not in message and len(message) < 400
    assert "secret" not in message and "t0k" not in message
    # refused once, not retried (a group's members are counted first: one more request)
    assert len(app.paths) == {"token": 1, "list": 2, "group": 3}[endpoint]
    app.cases.clear()
    assert read(idcs, endpoint)  # and the client is still usable


@pytest.mark.parametrize("endpoint", ["token", "list", "group"])
def test_body_slower_than_the_deadline_is_given_up(hostile: tuple[Hostile, str],
                                                   endpoint: str) -> None:
    app, url = hostile
    app.cases[endpoint] = "drip"
    idcs = client(url, retries=1)
    with pytest.raises(IdcsApiError) as err:
        read(idcs, endpoint)
    message = str(err.value)
    assert err.value.status is None and "\n" not in message
    assert "gave up after 2 attempts" in message and "still arriving after 0.5s" in message
    # one retry, then the error
    assert idcs.requests_made == {"token": 2, "list": 3, "group": 4}[endpoint]


# ---- ids in paths ------------------------------------------------------------------------------

CRAFTED = "../Users?attributes=password"


def test_group_id_is_percent_encoded_in_the_member_path(hostile: tuple[Hostile, str]) -> None:
    app, url = hostile
    assert [m["value"] for m in client(url).iter_group_members(CRAFTED)] == ["u1"]
    sent = [p for p in app.paths if p.startswith(b"/admin/v1/Groups/")]
    assert sent == [b"/admin/v1/Groups/..%2FUsers%3Fattributes%3Dpassword"]
    # the only Users request is the member count, the id inside its (encoded) filter value
    assert [p for p in app.paths if p.startswith(b"/admin/v1/Users")] == [b"/admin/v1/Users"]


def test_bitbucket_slug_is_percent_encoded(hostile: tuple[Hostile, str]) -> None:
    app, url = hostile
    bb = BitbucketClient(url, "svc", "pw", settings=HttpSettings(timeout=2.0, retries=0,
                                                                 rate_limit_fill_rate=0))
    bb.allow_list("a/b?c")
    assert app.paths == [b"/rest/api/1.0/admin/rate-limit/settings/users/a%2Fb%3Fc"]
