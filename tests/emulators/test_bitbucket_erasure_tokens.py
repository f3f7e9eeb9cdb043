"""GDPR erasure, CAPTCHA reset and personal access tokens in the Bitbucket DC emulator
(reference §2), checked for behaviour and against the OpenAPI excerpt where it has schemas.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_USER,
    BitbucketState,
    create_bitbucket_app,
)
from identity_sync.emulators.common import CONTROL_PREFIX
from tests.bitbucket.test_contract import check
from tests.emulators.conftest import ADMIN_AUTH, API
from tests.emulators.test_bitbucket_emulator import error, state_of

TOKENS = "/rest/access-tokens/latest"
NO_SUCH_USER = "com.atlassian.bitbucket.user.NoSuchUserException"


def create(client: TestClient, name: str, password: str = "pw") -> None:
    resp = client.post(f"{API}/admin/users", params={
        "name": name, "displayName": name.title(), "emailAddress": f"{name}@x.io",
        "password": password})  # fmt: skip
    assert resp.status_code == 204, resp.text


def grant(client: TestClient, name: str, permission: str) -> None:
    resp = client.put(f"{API}/admin/permissions/users",
                      params={"name": name, "permission": permission})
    assert resp.status_code == 204, resp.text


def tokens(n: int) -> list[dict[str, Any]]:
    return [{"id": f"10{i}", "name": f"token {i}", "createdDate": f"2026-01-0{i + 1}T00:00:00Z"}
            for i in range(n)]


def seed(app: Starlette, **extra: Any) -> None:
    state = state_of(app)
    state.load_dict({**state.to_dict(), **extra})


# ---- erasure -------------------------------------------------------------------------------


def test_only_a_deleted_user_can_be_erased_once(client: TestClient) -> None:
    create(client, "Bob")
    for method in ("GET", "POST"):
        err = error(client.request(method, f"{API}/admin/users/erasure", params={"name": "bob"}),
                    409)
        assert "is the username of a not deleted user" in err["message"]
    assert client.delete(f"{API}/admin/users", params={"name": "bob"}).status_code == 200

    check_resp = client.get(f"{API}/admin/users/erasure", params={"name": "BOB"})
    assert check_resp.status_code == 204 and check_resp.content == b""
    erased = client.post(f"{API}/admin/users/erasure", params={"name": "bob"})
    assert erased.status_code == 200, erased.text
    assert set(erased.json()) == {"newIdentifier"}
    assert re.fullmatch(r"user-[0-9a-f]{5}", erased.json()["newIdentifier"])

    for method in ("GET", "POST"):  # the deleted name is forgotten
        err = error(client.request(method, f"{API}/admin/users/erasure", params={"name": "bob"}),
                    404)
        assert err["exceptionName"] == NO_SUCH_USER


def test_new_identifier_is_deterministic_per_name() -> None:
    ids = []
    for _ in range(2):
        with TestClient(create_bitbucket_app()) as client:
            client.auth = ADMIN_AUTH
            create(client, "carol")
            client.delete(f"{API}/admin/users", params={"name": "carol"})
            ids.append(client.post(f"{API}/admin/users/erasure",
                                   params={"name": "carol"}).json()["newIdentifier"])
    assert ids[0] == ids[1]


def test_erasure_errors(client: TestClient) -> None:
    err = error(client.get(f"{API}/admin/users/erasure", params={"name": "ghost"}), 404)
    assert err["exceptionName"] == NO_SUCH_USER
    for method in ("GET", "POST"):
        assert error(client.request(method, f"{API}/admin/users/erasure"), 400)["context"] == "name"
        error(client.request(method, f"{API}/admin/users/erasure", params={"name": " "}), 400)


def test_a_recreated_name_is_a_live_user_again(client: TestClient) -> None:
    create(client, "dan")
    client.delete(f"{API}/admin/users", params={"name": "dan"})
    create(client, "dan")
    error(client.post(f"{API}/admin/users/erasure", params={"name": "dan"}), 409)
    client.delete(f"{API}/admin/users", params={"name": "dan"})
    assert client.get(f"{API}/admin/users/erasure", params={"name": "dan"}).status_code == 204


def test_erasure_and_captcha_need_admin(client: TestClient) -> None:
    create(client, "erin", password="erin-pw")  # licensed through the default group only
    client.auth = ("erin", "erin-pw")
    error(client.get(f"{API}/admin/users/erasure", params={"name": "x"}), 401)
    error(client.post(f"{API}/admin/users/erasure", params={"name": "x"}), 401)
    error(client.delete(f"{API}/admin/users/captcha", params={"name": "erin"}), 401)
    client.auth = (DEMO_ADMIN_USER, "wrong")
    error(client.get(f"{API}/admin/users/erasure", params={"name": "x"}), 401)


# ---- CAPTCHA -------------------------------------------------------------------------------


def test_clear_captcha(app: Starlette, client: TestClient) -> None:
    create(client, "fay")
    seed(app, captcha=["fay", "admin"])
    resp = client.delete(f"{API}/admin/users/captcha", params={"name": "FAY"})
    assert resp.status_code == 204 and resp.content == b""
    assert state_of(app).to_dict()["captcha"] == ["admin"]
    # Clearing again (nothing pending) is still 204.
    assert client.delete(f"{API}/admin/users/captcha", params={"name": "fay"}).status_code == 204
    assert error(client.delete(f"{API}/admin/users/captcha", params={"name": "ghost"}),
                 404)["exceptionName"] == NO_SUCH_USER
    assert error(client.delete(f"{API}/admin/users/captcha"), 400)["context"] == "name"


def test_clear_captcha_of_a_higher_ranked_user_is_403(app: Starlette, client: TestClient) -> None:
    create(client, "gus", password="gus-pw")
    grant(client, "gus", "ADMIN")
    seed(app, captcha=["admin"])
    client.auth = ("gus", "gus-pw")
    error(client.delete(f"{API}/admin/users/captcha", params={"name": "admin"}), 403)
    assert state_of(app).captcha  # unchanged
    assert client.delete(f"{API}/admin/users/captcha", params={"name": "gus"}).status_code == 204


# ---- access tokens -------------------------------------------------------------------------


def test_no_tokens_is_an_empty_page(client: TestClient) -> None:
    resp = client.get(f"{TOKENS}/users/{DEMO_ADMIN_USER}")
    assert resp.status_code == 200
    assert resp.json() == {"size": 0, "limit": 25, "isLastPage": True, "values": [], "start": 0}


def test_tokens_are_paged_and_deleted(app: Starlette, client: TestClient) -> None:
    create(client, "Hal")
    seed(app, access_tokens={"hal": tokens(3)})
    first = client.get(f"{TOKENS}/users/hal", params={"limit": 2}).json()
    assert [t["id"] for t in first["values"]] == ["100", "101"]
    assert first["nextPageStart"] == 2 and first["isLastPage"] is False
    assert first["values"][0] == tokens(1)[0]

    resp = client.delete(f"{TOKENS}/users/hal/101")
    assert resp.status_code == 204 and resp.content == b""
    error(client.delete(f"{TOKENS}/users/hal/101"), 404)
    assert [t["id"] for t in client.get(f"{TOKENS}/users/hal").json()["values"]] == ["100", "102"]
    # the 1.0 version of the plugin's path serves the same resource
    assert client.get("/rest/access-tokens/1.0/users/hal").json()["size"] == 2


def test_token_errors(app: Starlette, client: TestClient) -> None:
    assert error(client.get(f"{TOKENS}/users/ghost"), 404)["exceptionName"] == NO_SUCH_USER
    error(client.delete(f"{TOKENS}/users/ghost/1"), 404)
    error(client.delete(f"{TOKENS}/users/{DEMO_ADMIN_USER}/999"), 404)
    # not under /rest/api: there it is an unknown route (no errors envelope)
    resp = client.get(f"{API}/access-tokens/latest/users/{DEMO_ADMIN_USER}")
    assert resp.status_code == 404 and "errors" not in resp.json()
    client.auth = (DEMO_ADMIN_USER, "wrong")
    error(client.get(f"{TOKENS}/users/{DEMO_ADMIN_USER}"), 401)


def test_who_may_manage_tokens(app: Starlette, client: TestClient) -> None:
    create(client, "ivy", password="ivy-pw")
    create(client, "jon", password="jon-pw")
    grant(client, "jon", "ADMIN")
    seed(app, access_tokens={"ivy": tokens(1), "admin": tokens(1)})
    client.auth = ("ivy", "ivy-pw")  # a licensed user: own tokens only
    assert client.get(f"{TOKENS}/users/ivy").json()["size"] == 1
    error(client.get(f"{TOKENS}/users/admin"), 401)
    error(client.delete(f"{TOKENS}/users/admin/100"), 401)
    client.auth = ("jon", "jon-pw")  # an ADMIN: others' tokens, but not a SYS_ADMIN's
    assert client.get(f"{TOKENS}/users/ivy").json()["size"] == 1
    error(client.get(f"{TOKENS}/users/admin"), 401)
    assert client.delete(f"{TOKENS}/users/ivy/100").status_code == 204


# ---- state ---------------------------------------------------------------------------------


def test_new_state_keys_are_optional_and_round_trip(app: Starlette, client: TestClient) -> None:
    fresh = BitbucketState().to_dict()
    assert not {"deleted_users", "captcha", "access_tokens"} & set(fresh)
    legacy = BitbucketState()
    legacy.load_dict(fresh)  # a dump without the new keys loads with nothing pending
    assert legacy.deleted_names == {} and legacy.captcha == set() and legacy.tokens == {}

    create(client, "kim")
    create(client, "Lee")
    seed(app, captcha=["kim"], access_tokens={"kim": tokens(2)})
    client.delete(f"{API}/admin/users", params={"name": "lee"})
    dump = state_of(app).to_dict()
    assert dump["deleted_users"] == ["Lee"]
    assert dump["captcha"] == ["kim"]
    assert dump["access_tokens"] == {"kim": tokens(2)}
    copy = BitbucketState()
    copy.load_dict(dump)
    assert copy.to_dict() == dump

    with pytest.raises(ValueError, match="unknown user"):
        copy.load_dict({**dump, "captcha": ["ghost"]})
    with pytest.raises(ValueError, match="id and a name"):
        copy.load_dict({**dump, "access_tokens": {"kim": [{"name": "x"}]}})


def test_deleting_a_user_drops_tokens_and_captcha(app: Starlette, client: TestClient) -> None:
    create(client, "max")
    seed(app, captcha=["max"], access_tokens={"max": tokens(1)})
    client.delete(f"{API}/admin/users", params={"name": "max"})
    state = state_of(app)
    assert state.captcha == set() and state.tokens == {}
    assert state.deleted_names == {"max": "max"}


def test_reset_forgets_deleted_names(app: Starlette, client: TestClient) -> None:
    create(client, "ned")
    client.delete(f"{API}/admin/users", params={"name": "ned"})
    assert client.post(f"{CONTROL_PREFIX}/reset").status_code in (200, 204)
    error(client.get(f"{API}/admin/users/erasure", params={"name": "ned"}), 404)


# ---- contract ------------------------------------------------------------------------------


def spec_call(client: TestClient, method: str, url: str, spec_path: str,
              **kwargs: Any) -> httpx.Response:
    resp = client.request(method, url, **kwargs)
    check(resp, spec_path, method.lower())
    return resp


def test_erasure_and_captcha_answers_match_the_spec(app: Starlette, client: TestClient) -> None:
    erasure, captcha = "/api/latest/admin/users/erasure", "/api/latest/admin/users/captcha"
    create(client, "oz", password="oz-pw")
    for method in ("GET", "POST"):
        url = f"{API}/admin/users/erasure"
        assert spec_call(client, method, url, erasure, params={"name": "oz"}).status_code == 409
        assert spec_call(client, method, url, erasure, params={"name": "no"}).status_code == 404
        assert spec_call(client, method, url, erasure).status_code == 400
    client.delete(f"{API}/admin/users", params={"name": "oz"})
    assert spec_call(client, "GET", f"{API}/admin/users/erasure", erasure,
                     params={"name": "oz"}).status_code == 204
    assert spec_call(client, "POST", f"{API}/admin/users/erasure", erasure,
                     params={"name": "oz"}).status_code == 200

    create(client, "pam", password="pam-pw")
    url = f"{API}/admin/users/captcha"
    assert spec_call(client, "DELETE", url, captcha, params={"name": "pam"}).status_code == 204
    assert spec_call(client, "DELETE", url, captcha, params={"name": "no"}).status_code == 404
    assert spec_call(client, "DELETE", url, captcha).status_code == 400
    grant(client, "pam", "ADMIN")
    client.auth = ("pam", "pam-pw")
    assert spec_call(client, "DELETE", url, captcha, params={"name": "admin"}).status_code == 403
    client.auth = ("nobody", "x")
    assert spec_call(client, "DELETE", url, captcha, params={"name": "pam"}).status_code == 401
    assert spec_call(client, "GET", f"{API}/admin/users/erasure", erasure,
                     params={"name": "pam"}).status_code == 401


def test_access_token_answers_match_the_spec(app: Starlette, client: TestClient) -> None:
    listing = "/access-tokens/latest/users/{userSlug}"
    one = "/access-tokens/latest/users/{userSlug}/{tokenId}"
    create(client, "quinn")
    assert spec_call(client, "GET", f"{TOKENS}/users/quinn", listing).json()["size"] == 0
    seed(app, access_tokens={"quinn": tokens(2)})
    assert spec_call(client, "GET", f"{TOKENS}/users/quinn", listing,
                     params={"limit": 1}).json()["nextPageStart"] == 1
    assert spec_call(client, "GET", f"{TOKENS}/users/ghost", listing).status_code == 404
    assert spec_call(client, "DELETE", f"{TOKENS}/users/quinn/100", one).status_code == 204
    assert spec_call(client, "DELETE", f"{TOKENS}/users/quinn/100", one).status_code == 404
    client.auth = (DEMO_ADMIN_USER, "wrong")
    assert spec_call(client, "GET", f"{TOKENS}/users/quinn", listing).status_code == 401
    assert spec_call(client, "DELETE", f"{TOKENS}/users/quinn/101", one).status_code == 401
