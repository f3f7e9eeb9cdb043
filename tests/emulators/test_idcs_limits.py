"""IDCS emulator under pressure: rate limits per tier, overload 503, token revocation, injected
faults (shared with the Bitbucket emulator) and ``X-ORACLE-DMS-ECID`` on every answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    SCOPE,
    create_idcs_app,
)
from identity_sync.emulators.idcs_limits import TIERS, api_group

from .test_idcs_emulator import STATE, Api

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app() -> Starlette:
    app = create_idcs_app()
    app.state.emulator.load_dict(STATE)
    return app


@pytest.fixture
def api(app: Starlette) -> Iterator[Api]:
    with TestClient(app) as client:
        yield Api(client)


@pytest.fixture
def clock(app: Starlette) -> FakeClock:
    fake = FakeClock(6_000_000.25)  # a quarter second into a second, at the start of a minute
    app.state.limiter.clock = fake
    return fake


def statuses(api: Api, n: int, path: str = "/admin/v1/Users") -> list[int]:
    return [api.get(path, count=1).status_code for _ in range(n)]


def test_tier_table_matches_the_reference() -> None:
    assert TIERS["free"]["others"] == (20, 150)
    assert TIERS["premium"]["token"] == (65, 3400)
    assert TIERS["oracle_apps"]["others"] == (50, 1500)
    assert {t["bulk"] for t in TIERS.values()} == {(5, 200)}
    assert [api_group(p) for p in ("/oauth2/v1/token", "/admin/v1/Users", "/admin/v1/Bulk",
                                   "/_emulator/state")] == ["token", "others", "bulk", None]


def test_per_second_limit_answers_429_scim_error_without_retry_after(
        api: Api, clock: FakeClock) -> None:
    assert api.client.put("/_emulator/rate-limits",
                          json={"enabled": True, "tier": "free"}).status_code == 200
    assert statuses(api, 20) == [200] * 20
    refused = api.get("/admin/v1/Users")
    assert refused.status_code == 429
    body = refused.json()
    assert body["schemas"] == [ERROR] and body["status"] == "429"
    assert "retry-after" not in refused.headers  # IDCS documents none
    assert refused.headers["x-oracle-dms-ecid"]
    clock.now += 1  # the next second
    assert statuses(api, 20) == [200] * 20
    stats = api.client.get("/_emulator/rate-limits").json()
    assert stats["rejected"] == {"others:second": 1}
    assert stats["effective"]["others"] == {"per_second": 20, "per_minute": 150}


def test_per_minute_limit_with_retry_after_and_separate_token_group(
        api: Api, clock: FakeClock) -> None:
    settings = {"enabled": True, "tier": "premium", "retry_after": True,
                "groups": {"others": {"per_minute": 3}, "token": {"per_second": 1}}}
    assert api.client.put("/_emulator/rate-limits", json=settings).status_code == 200
    assert statuses(api, 3) == [200, 200, 200]
    clock.now += 5  # a new second, same minute
    refused = api.get("/admin/v1/Users")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "55"  # seconds to the end of the minute, rounded up
    data = {"grant_type": "client_credentials", "scope": SCOPE}
    auth = (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    assert api.client.post("/oauth2/v1/token", data=data, auth=auth).status_code == 200
    token_refused = api.client.post("/oauth2/v1/token", data=data, auth=auth)
    assert token_refused.status_code == 429
    assert token_refused.headers["x-oracle-dms-ecid"]
    clock.now += 60
    assert statuses(api, 3) == [200, 200, 200]


def test_rate_limit_control_validation_and_reset(api: Api, clock: FakeClock) -> None:
    for bad in ({"tier": "gold"}, {"groups": {"others": {"per_second": 0}}},
                {"max_concurrent": 0}, {"speed": 1}):
        assert api.client.put("/_emulator/rate-limits", json=bad).status_code == 400
    api.client.put("/_emulator/rate-limits", json={"enabled": True,
                                                   "groups": {"others": {"per_second": 1}}})
    assert statuses(api, 2) == [200, 429]
    api.client.post("/_emulator/reset")
    assert api.client.get("/_emulator/rate-limits").json()["enabled"] is False


def test_overload_answers_503(app: Starlette, api: Api) -> None:
    api.client.put("/_emulator/rate-limits", json={"max_concurrent": 2})
    app.state.limiter.in_flight = 2  # two slow requests still being served
    refused = api.get("/admin/v1/Users")
    assert refused.status_code == 503
    assert refused.json()["status"] == "503"
    assert refused.headers["x-oracle-dms-ecid"]
    app.state.limiter.in_flight = 1
    assert api.get("/admin/v1/Users").status_code == 200
    assert app.state.limiter.in_flight == 1  # the answered request left the count as it was


def test_token_revocation_and_a_fresh_token(api: Api) -> None:
    assert api.get("/admin/v1/Users").status_code == 200
    assert api.client.post("/_emulator/tokens/revoke").json() == {"revoked": 1}
    revoked = api.get("/admin/v1/Users")
    assert revoked.status_code == 401
    assert revoked.json()["schemas"] == [ERROR] and revoked.json()["status"] == "401"
    assert revoked.headers["x-oracle-dms-ecid"]
    assert Api(api.client).get("/admin/v1/Users").status_code == 200


def test_injected_errors_are_scim_shaped_with_ecid_and_optional_retry_after(api: Api) -> None:
    settings = {"seed": 3, "error_rate": 1.0, "error_statuses": [429, 503, 502],
                "retry_after": 1.5}
    assert api.client.put("/_emulator/faults", json=settings).status_code == 200
    answers = [api.get("/admin/v1/Users") for _ in range(30)]
    codes = [a.status_code for a in answers]
    assert set(codes) == {429, 503, 502}
    for answer in answers:
        assert answer.headers["x-oracle-dms-ecid"]
        if answer.status_code == 429:
            assert answer.headers["retry-after"] == "1.5"
            assert answer.json()["status"] == "429"
        elif answer.status_code == 503:
            assert answer.json()["schemas"] == [ERROR]
            assert "retry-after" not in answer.headers
        else:  # a proxy's 502 is not SCIM
            assert answer.headers["content-type"].startswith("text/plain")
    stats = api.client.get("/_emulator/responses").json()
    assert stats["injected"] == {"error": 30}
    assert sum(stats["injected_statuses"].values()) == 30
    assert stats["injected_statuses"]["429"] == codes.count(429)


def _get(base: str, token: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{base}/admin/v1/Users", params={"count": 200, "attributes": "userName"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs)


def test_resets_and_slow_bodies_over_a_real_socket() -> None:
    app = create_idcs_app()
    app.state.emulator.load_dict(STATE)
    with serving(app) as server:
        base = server.base_url
        token = requests.post(f"{base}/oauth2/v1/token",
                              data={"grant_type": "client_credentials", "scope": SCOPE},
                              auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET), timeout=10)
        assert token.headers["x-oracle-dms-ecid"]
        tok = token.json()["access_token"]
        script = [{"fault": "reset", "path": "/admin/v1/Users"},
                  {"fault": "slow_body", "seconds": 0.4, "path": "/admin/v1/Users"}]
        assert requests.put(f"{base}/_emulator/faults", json={"script": script},
                            timeout=5).status_code == 200
        with pytest.raises(requests.ConnectionError):
            _get(base, tok)
        slow = _get(base, tok, stream=True)
        chunks = []
        while piece := slow.raw.read1(65536):  # whatever has arrived so far
            chunks.append(piece)
        assert len(chunks) >= 2  # the body was dripped, not sent at once
        body = requests.models.complexjson.loads(b"".join(chunks))
        assert body["totalResults"] == 4
        assert slow.headers["x-oracle-dms-ecid"]
        assert _get(base, tok).status_code == 200
        injected = requests.get(f"{base}/_emulator/responses", timeout=5).json()["injected"]
        assert injected == {"reset": 1, "slow_body": 1}
