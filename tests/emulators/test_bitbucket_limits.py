"""The Bitbucket emulator's rate limiter and fault injection (reference §11; design §5)."""

from __future__ import annotations

import pytest
import requests
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from tests.emulators.conftest import ADMIN_AUTH, API


@pytest.fixture
def clock(app: Starlette) -> list[float]:
    now = [100.0]
    app.state.rate_limiter.clock = lambda: now[0]
    return now


def statuses(client: TestClient, n: int, auth: tuple[str, str] = ADMIN_AUTH) -> list[int]:
    return [client.get(f"{API}/admin/groups", auth=auth).status_code for _ in range(n)]


def test_rate_limiting_is_off_by_default(client: TestClient) -> None:
    assert client.get(f"{API}/admin/rate-limit/settings").json() == {
        "enabled": False, "defaultSettings": {"capacity": 60, "fillRate": 5}}
    assert set(statuses(client, 80)) == {200}


def test_token_bucket_per_user_answers_429_with_retry_after(client: TestClient,
                                                             clock: list[float]) -> None:
    client.put(f"{API}/admin/rate-limit/settings",
               json={"enabled": True, "defaultSettings": {"capacity": 3, "fillRate": 2}})
    # the PUT itself was not limited (limiting was off when it arrived)
    assert statuses(client, 4) == [200, 200, 200, 429]
    refused = client.get(f"{API}/admin/groups")
    assert refused.headers["Retry-After"] == "1"  # one token at 2/s is 0.5 s, rounded up to whole seconds
    assert refused.json()["errors"][0]["message"].startswith("You have been rate limited")
    assert statuses(client, 1, ("admin", "admin")) == [200]  # another user has their own bucket
    clock[0] += 1.0  # two tokens back
    assert statuses(client, 3) == [200, 200, 429]
    history = client.get(f"{API}/admin/rate-limit/history", auth=("admin", "admin")).json()
    assert [(v["user"]["name"], v["rejectCount"]) for v in history["values"]] == [
        (DEMO_ADMIN_USER, 3)]


def test_allow_listed_user_is_exempt_and_per_user_settings_apply(client: TestClient,
                                                                 clock: list[float]) -> None:
    client.put(f"{API}/admin/rate-limit/settings",
               json={"enabled": True, "defaultSettings": {"capacity": 2, "fillRate": 1}})
    resp = client.put(f"{API}/admin/rate-limit/settings/users/{DEMO_ADMIN_USER}",
                      json={"whitelisted": True})
    assert resp.status_code == 200 and resp.json()["whitelisted"] is True
    assert set(statuses(client, 50)) == {200}
    bulk = client.post(f"{API}/admin/rate-limit/settings/users",
                       json={"usernames": ["admin"], "settings": {"capacity": 4, "fillRate": 1}})
    assert bulk.status_code == 200
    assert statuses(client, 5, ("admin", "admin")) == [200, 200, 200, 200, 429]
    assert client.delete(f"{API}/admin/rate-limit/settings/users/{DEMO_ADMIN_USER}"
                         ).status_code == 204
    assert statuses(client, 3) == [200, 200, 429]  # back to the default bucket of 2


def test_rate_limit_settings_need_admin_except_reading(app: Starlette,
                                                       client: TestClient) -> None:
    client.post(f"{API}/admin/users", params={"name": "dev", "displayName": "Dev",
                                              "emailAddress": "d@x.io", "password": "p",
                                              "addToDefaultGroup": "true"})
    dev = ("dev", "p")
    assert client.get(f"{API}/admin/rate-limit/settings", auth=dev).status_code == 200
    assert client.put(f"{API}/admin/rate-limit/settings", auth=dev,
                      json={"enabled": True}).status_code == 401
    assert client.put(f"{API}/admin/rate-limit/settings/users/dev", auth=dev,
                      json={"whitelisted": True}).status_code == 401


def test_emulator_control_sets_limits_and_reset_clears_them(app: Starlette, client: TestClient,
                                                            clock: list[float]) -> None:
    resp = client.put("/_emulator/rate-limit",
                      json={"capacity": 2, "fillRate": 1, "whitelist": ["admin"]})
    assert resp.json() == {"enabled": True, "capacity": 2, "fillRate": 1,
                           "whitelist": ["admin"], "rejected": 0}
    assert statuses(client, 3) == [200, 200, 429]
    assert set(statuses(client, 5, ("admin", "admin"))) == {200}
    assert client.get("/_emulator/rate-limit").json()["rejected"] == 1
    assert client.get("/_emulator/responses").json()["responses"]["429"] == 1
    client.post("/_emulator/reset")
    assert client.get("/_emulator/rate-limit").json()["enabled"] is False
    assert client.get("/_emulator/responses").json()["total"] == 0


def test_scripted_faults_hit_exactly_the_matching_requests(client: TestClient) -> None:
    script = [{"fault": "error", "status": 502, "method": "POST", "path": "/admin/groups"},
              {"fault": "error", "status": 500}]
    assert client.put("/_emulator/faults", json={"script": script}).status_code == 200
    first = client.get(f"{API}/admin/groups")
    assert first.status_code == 500 and first.json()["errors"][0]["message"].startswith(
        "An unexpected error")
    assert client.get(f"{API}/admin/groups").status_code == 200
    refused = client.post(f"{API}/admin/groups", params={"name": "devs"})
    assert refused.status_code == 502 and refused.headers["content-type"].startswith("text/plain")
    assert client.post(f"{API}/admin/groups", params={"name": "devs"}).status_code == 200
    assert client.get("/_emulator/responses").json()["injected"] == {"error": 2}


def test_random_faults_are_reproducible_from_the_seed(client: TestClient) -> None:
    def run() -> list[int]:
        client.put("/_emulator/faults", json={"seed": 7, "error_rate": 0.3})
        return statuses(client, 40)

    first, second = run(), run()
    assert first == second
    assert 4 <= first.count(503) <= 20 and set(first) == {200, 503}
    assert client.put("/_emulator/faults", json={"error_rate": 2}).status_code == 400
    assert client.put("/_emulator/faults", json={"nonsense": 1}).status_code == 400


def test_reset_and_late_answer_over_a_real_socket() -> None:
    app = create_bitbucket_app()
    with serving(app) as server:
        control = f"{server.base_url}/_emulator/faults"
        url = f"{server.base_url}{API}/admin/groups"
        requests.put(control, json={"script": [
            {"fault": "reset", "method": "POST"},
            {"fault": "reset", "method": "POST", "after": True},
            {"fault": "timeout", "method": "POST", "seconds": 2}]}, timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.post(url, params={"name": "a"}, auth=ADMIN_AUTH, timeout=5)
        with pytest.raises(requests.ConnectionError):  # dropped after the group was created
            requests.post(url, params={"name": "b"}, auth=ADMIN_AUTH, timeout=5)
        with pytest.raises(requests.ReadTimeout):  # answered too late, but carried out
            requests.post(url, params={"name": "c"}, auth=ADMIN_AUTH, timeout=0.5)
        groups = {g["name"] for g in requests.get(url, auth=ADMIN_AUTH, timeout=5).json()["values"]}
        assert groups == {"b", "c", "stash-users"}
