"""The IDCS client against the emulator over a real socket, with injected faults: revoked
tokens mid-extract, 429 storms with and without Retry-After, 503s, 500s, resets, a bounded
total wait, and one-line errors that carry the ECID."""

from __future__ import annotations

import logging
import re

import pytest
import requests

from identity_sync.http import HttpSettings
from identity_sync.idcs.client import IdcsApiError, PartialExtractError
from identity_sync.idcs.extract import extract_full

from .conftest import FAST, Idcs, page_cap

USERS = "/admin/v1/Users"
ECID = re.compile(r"X-ORACLE-DMS-ECID: ([0-9a-f]+-[0-9a-f]+-[0-9a-f]+)\]")


def user_ids(idcs: Idcs) -> set[str]:
    return {u["id"] for u in idcs.dump()["users"]}


def test_token_revoked_mid_extract_is_replaced_once_and_never_logged(
        idcs: Idcs, caplog: pytest.LogCaptureFixture) -> None:
    page_cap(idcs, 10)  # 60 users: 6 pages
    client = idcs.client()
    pages = 0

    def revoke_after_second_page(resp: requests.Response, *args: object, **kwargs: object) -> None:
        nonlocal pages
        if resp.request.path_url.startswith(USERS) and resp.status_code == 200:
            pages += 1
            if pages == 2:
                idcs.control("POST", "tokens/revoke")

    client.session.hooks["response"].append(revoke_after_second_page)
    for name in ("identity_sync", "identity_sync.idcs", "identity_sync.idcs.client"):
        # an earlier test's Airflow logging config may have disabled loggers created before it
        logging.getLogger(name).disabled = False
        logging.getLogger(name).propagate = True
    caplog.set_level(logging.DEBUG)
    result = extract_full(client)
    first_token = None
    assert {u.id for u in result.snapshot.users} == user_ids(idcs)
    endpoints = client.metrics.snapshot()["endpoints"]
    assert endpoints["POST /oauth2/v1/token"]["requests"] == 2  # first token, then one more
    assert endpoints[f"GET {USERS}"]["errors"] == 1  # the one 401
    first_token = client.token()
    assert first_token not in caplog.text and "sync-secret" not in caplog.text
    assert "requesting a new one" in caplog.text


def test_429_storm_with_retry_after_waits_at_least_what_the_server_asks(idcs: Idcs) -> None:
    # 4 waits of 5 s plus jitter stay inside the 30 s budget of the test client
    storm = [{"fault": "error", "status": 429, "retry_after": 5, "path": USERS}] * 4
    idcs.faults(script=storm)
    client = idcs.client()
    result = extract_full(client)
    assert len(result.snapshot.users) == 60
    assert len(idcs.sleeps) == 4 and all(5 <= s <= 6 for s in idcs.sleeps)
    stats = client.metrics.snapshot()
    assert (stats["throttled"], stats["retries"]) == (4, 4)
    assert idcs.responses()["429"] == 4


def test_429_storm_without_retry_after_backs_off_exponentially_with_jitter(idcs: Idcs) -> None:
    idcs.faults(script=[{"fault": "error", "status": 429, "path": USERS}] * 5)
    settings = HttpSettings(retries=6, backoff_factor=1.0, backoff_max=64.0,
                            retry_max_wait=300.0, timeout=5.0)
    client = idcs.client(settings)
    extract_full(client)
    assert len(idcs.sleeps) == 5
    for attempt, slept in enumerate(idcs.sleeps, start=1):
        base = 2 ** (attempt - 1)  # backoff_factor * 2^(n-1): half fixed, half random
        assert base / 2 <= slept <= base
    assert len(set(idcs.sleeps)) == 5  # jittered: no two equal


def test_503_is_retried_then_extract_completes(idcs: Idcs) -> None:
    idcs.faults(script=[{"fault": "error", "status": 503, "path": USERS}] * 3)
    client = idcs.client()
    assert len(extract_full(client).snapshot.users) == 60
    assert client.metrics.snapshot()["endpoints"][f"GET {USERS}"]["retries"] == 3


def test_persistent_503_gives_up_with_one_line_error_and_the_last_ecid(idcs: Idcs) -> None:
    client = idcs.client()
    client.token()  # before the faults, which hit the token endpoint too
    idcs.faults(error_rate=1.0, error_statuses=[503])
    with pytest.raises(IdcsApiError) as raised:
        client.get(USERS, {"count": 1})
    message = str(raised.value)
    assert "\n" not in message and "gave up after 7 attempts" in message
    assert "HTTP 503" in message and raised.value.status == 503
    match = ECID.search(message)
    assert match and raised.value.ecid == match.group(1)


def test_token_endpoint_faults_are_retried_like_any_other(idcs: Idcs) -> None:
    idcs.faults(script=[{"fault": "error", "status": 503, "path": "/oauth2/v1/token"}] * 2)
    client = idcs.client()
    assert client.token()
    assert client.metrics.snapshot()["endpoints"]["POST /oauth2/v1/token"]["requests"] == 3


def test_500_is_retried_only_a_few_times(idcs: Idcs) -> None:
    idcs.faults(error_rate=1.0, error_statuses=[500], script=[])
    client = idcs.client()
    with pytest.raises(IdcsApiError, match="gave up after 3 attempts"):
        client.token()
    assert idcs.responses()["500"] == 3  # the first try and retries_500 = 2


def test_total_wait_is_bounded_even_when_the_server_asks_for_more(idcs: Idcs) -> None:
    idcs.faults(script=[{"fault": "error", "status": 429, "retry_after": 20, "path": USERS}] * 5)
    client = idcs.client(HttpSettings(retries=10, retry_max_wait=45.0, timeout=5.0))
    with pytest.raises(IdcsApiError, match="the server asked to wait 20s more") as raised:
        client.get(USERS)
    assert sum(idcs.sleeps) <= 45.0 and len(idcs.sleeps) == 2
    assert raised.value.status == 429 and ECID.search(str(raised.value))


def test_connection_resets_are_retried(idcs: Idcs) -> None:
    idcs.faults(script=[{"fault": "reset", "path": USERS}] * 3)
    client = idcs.client()
    assert {u.id for u in extract_full(client).snapshot.users} == user_ids(idcs)
    stats = client.metrics.snapshot()["endpoints"][f"GET {USERS}"]
    assert stats["retries"] == 3 and stats["errors"] == 3


def test_resets_that_never_stop_end_in_a_clear_error(idcs: Idcs) -> None:
    client = idcs.client()
    client.token()
    idcs.faults(reset_rate=1.0)
    with pytest.raises(IdcsApiError, match=r"no answer \(ConnectionError") as raised:
        client.get(USERS)
    assert raised.value.status is None and "\n" not in str(raised.value)


def test_slow_body_within_the_read_timeout_is_read_whole(idcs: Idcs) -> None:
    idcs.faults(script=[{"fault": "slow_body", "seconds": 0.3, "path": USERS}])
    client = idcs.client()
    assert len(extract_full(client).snapshot.users) == 60


def test_a_bad_request_is_not_retried_and_names_the_ecid(idcs: Idcs) -> None:
    client = idcs.client()
    with pytest.raises(IdcsApiError, match="HTTP 400") as raised:
        client.get(USERS, {"filter": 'userName eq "unterminated'})
    assert raised.value.ecid and idcs.sleeps == []


def test_total_changing_mid_listing_restarts_once(idcs: Idcs) -> None:
    page_cap(idcs, 10, rules=[{"kind": "total_results", "path": USERS, "start_index": 21,
                               "value": 61, "times": 1}])
    client = idcs.client()
    users = client.list_all(USERS, {"attributes": "userName"})
    assert len(users) == 60 and len({u["id"] for u in users}) == 60
    assert client.metrics.snapshot()["endpoints"][f"GET {USERS}"]["pages"] == 2 + 6


def test_total_changing_again_after_the_restart_fails_clearly(idcs: Idcs) -> None:
    page_cap(idcs, 10, rules=[{"kind": "total_results", "path": USERS, "start_index": 21,
                               "value": 61}])
    with pytest.raises(PartialExtractError, match="totalResults changed from 60 to 61"):
        idcs.client().list_all(USERS)


def test_fast_settings_keep_real_retry_counts() -> None:
    assert FAST.retries == 6 and FAST.timeouts == (2.0, 5.0)
