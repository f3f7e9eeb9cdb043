"""Preflight: the client reads the server's rate limiting and paces itself, or not at all."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings


@pytest.mark.parametrize(("limits", "allow", "pace"), [
    (None, False, None),  # limiting off: no pacing
    ({"capacity": 100, "fillRate": 10}, True, None),  # allow-listed: no pacing
    ({"capacity": 100, "fillRate": 10}, False, (95.0, 9.5)),  # the server's bucket less 5%
])
def test_preflight_paces_to_the_server(limits, allow, pace, caplog) -> None:
    app = create_bitbucket_app()
    with serving(app) as server, TestClient(app) as control:
        if limits:
            control.put("/_emulator/rate-limit",
                        json={**limits, "whitelist": [DEMO_ADMIN_USER] if allow else []})
        base = server.base_url
        client = BitbucketClient(base, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD)
        with caplog.at_level(logging.WARNING):
            report = client.preflight()
        assert client.preflight() is report  # once per client
    assert report.allow_listed is (allow if limits else None)
    assert report.client_rate == pace
    limiter = client.transport.limiter
    assert (None if limiter is None else (limiter.capacity, limiter.fill_rate)) == pace
    warned = [r.getMessage() for r in caplog.records if "allow-listed" in r.getMessage()]
    if pace:
        assert len(warned) == 1
        assert (f"-X PUT -H 'Content-Type: application/json' -d '{{\"whitelisted\": true}}' "
                f"{base}/rest/api/1.0/admin/rate-limit/settings/users/"
                f"{DEMO_ADMIN_USER}") in warned[0]
    else:
        assert warned == []


def test_hand_set_pace_is_kept_and_unreadable_settings_only_warn(caplog) -> None:
    app = create_bitbucket_app()
    with serving(app) as server:
        client = BitbucketClient(server.base_url, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                                 settings=HttpSettings(rate_limit_capacity=7,
                                                       rate_limit_fill_rate=2))
        client.preflight()
        assert client.transport.limiter is not None
        assert (client.transport.limiter.capacity, client.transport.limiter.fill_rate) == (7, 2)
        ldap = BitbucketClient(server.base_url, "nobody", "x")
        with caplog.at_level(logging.WARNING):
            report = ldap.preflight()
    assert report.rate_limiting is None and len(report.warnings) == 2
    assert "cannot read Bitbucket's rate-limit settings" in report.warnings[1]
    assert ldap.transport.limiter is not None  # unknown: keep Bitbucket's documented default
