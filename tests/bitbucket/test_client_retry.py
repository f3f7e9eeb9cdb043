"""The Bitbucket client's retry classification, read-back and pacing, on canned answers.

Sleeping is replaced by a recorder, so the tests assert the delays chosen, never wall time.
"""

from __future__ import annotations

import random

import pytest
import requests
import requests_mock

from identity_sync.bitbucket.client import BitbucketClient, BitbucketError
from identity_sync.http import HttpSettings, TokenBucket, parse_retry_after

BB = "https://bb.example.com"
USERS = f"{BB}/rest/api/1.0/admin/users"
GROUPS = f"{BB}/rest/api/1.0/admin/groups"


def envelope(message: str, exc: str = "x.Y") -> dict:
    return {"errors": [{"context": None, "message": message, "exceptionName": exc}]}


def client(**settings: object) -> tuple[BitbucketClient, list[float]]:
    bb = BitbucketClient(BB, "svc", "pw", settings=HttpSettings(
        rate_limit_fill_rate=0, **settings))  # type: ignore[arg-type]
    sleeps: list[float] = []
    bb.transport.sleep = sleeps.append
    bb.transport.rng = random.Random(1)
    return bb, sleeps


def test_429_honours_retry_after_then_succeeds() -> None:
    bb, sleeps = client()
    with requests_mock.Mocker() as m:
        m.get(GROUPS, [{"status_code": 429, "headers": {"Retry-After": "3"}},
                       {"json": {"values": [{"name": "g"}], "isLastPage": True}}])
        assert list(bb.list_groups()) == ["g"]
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 4.0  # 3 s plus a little jitter
    assert bb.transport.stats["throttled"] == 1 and bb.requests_made == 2


def test_429_without_retry_after_waits_five_seconds() -> None:
    bb, sleeps = client()
    with requests_mock.Mocker() as m:
        m.get(GROUPS, [{"status_code": 429}, {"json": {"values": [], "isLastPage": True}}])
        list(bb.list_groups())
    assert 5.0 <= sleeps[0] <= 6.0


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_with_growing_backoff(status: int) -> None:
    bb, sleeps = client(backoff_factor=1.0)
    with requests_mock.Mocker() as m:
        m.get(GROUPS, [{"status_code": status, "text": "proxy"}] * 3
              + [{"json": {"values": [], "isLastPage": True}}])
        assert list(bb.list_groups()) == []
    assert len(sleeps) == 3
    # attempt n waits between half and all of 2^(n-1) seconds
    assert [0.5 <= sleeps[0] <= 1, 1 <= sleeps[1] <= 2, 2 <= sleeps[2] <= 4] == [True] * 3


def test_retries_run_out_and_the_error_is_transient() -> None:
    bb, sleeps = client(retries=2)
    with requests_mock.Mocker() as m:
        m.get(GROUPS, status_code=503, text="busy")
        with pytest.raises(BitbucketError) as err:
            list(bb.list_groups())
    assert err.value.status == 503 and err.value.transient
    assert len(sleeps) == 2 and m.call_count == 3


def test_500_is_retried_only_a_few_times() -> None:
    bb, sleeps = client(retries=5, retries_500=2)
    with requests_mock.Mocker() as m:
        m.get(GROUPS, status_code=500, json=envelope("boom"))
        with pytest.raises(BitbucketError, match="boom"):
            list(bb.list_groups())
    assert m.call_count == 3 and len(sleeps) == 2


@pytest.mark.parametrize(("status", "says"), [
    (400, "refused the request as invalid"),
    (401, "lacks global ADMIN"),
    (403, "higher permission level"),
    (404, "no such user or group"),
    (409, "already exists"),
])
def test_client_errors_are_permanent_and_readable(status: int, says: str) -> None:
    bb, sleeps = client()
    with requests_mock.Mocker() as m:
        m.delete(USERS, status_code=status, json=envelope("server text"))
        with pytest.raises(BitbucketError) as err:
            bb.delete_user("x")
    assert m.call_count == 1 and sleeps == []
    assert not err.value.transient
    assert "server text" in str(err.value) and says in str(err.value)
    assert f"Bitbucket {status} on DELETE /admin/users" in str(err.value)


def test_licence_limit_403_is_recognised_and_not_blamed_on_rank() -> None:
    bb, _ = client()
    with requests_mock.Mocker() as m:
        m.post(f"{GROUPS}/add-users", status_code=403, json=envelope(
            "Adding the user to the default group would exceed the server's license limit"))
        with pytest.raises(BitbucketError) as err:
            bb.add_users_to_group("g", ["a"])
    assert err.value.licence_limit and "higher permission" not in str(err.value)


def test_timed_out_create_that_landed_is_read_back_not_resent() -> None:
    bb, sleeps = client()
    with requests_mock.Mocker() as m:
        m.post(USERS, exc=requests.exceptions.ReadTimeout)
        m.get(USERS, json={"values": [{"name": "Alice"}], "isLastPage": True})
        assert bb.create_user("alice", "Alice", "a@x.io") is True
        posts = [r for r in m.request_history if r.method == "POST"]
        reads = [r for r in m.request_history if r.method == "GET"]
    assert len(posts) == 1 and reads[0].qs["filter"] == ["alice"]
    assert len(sleeps) == 1 and bb.transport.stats["read_backs"] == 1


def test_timed_out_create_that_did_not_land_is_sent_again() -> None:
    bb, _ = client()
    with requests_mock.Mocker() as m:
        m.post(USERS, [{"exc": requests.exceptions.ConnectionError("reset by peer")},
                       {"status_code": 204}])
        m.get(USERS, json={"values": [{"name": "alicia"}], "isLastPage": True})
        assert bb.create_user("alice", "Alice", "a@x.io") is False
        assert [r.method for r in m.request_history] == ["POST", "GET", "POST"]


def test_create_group_after_a_502_reads_back() -> None:
    bb, _ = client()
    with requests_mock.Mocker() as m:
        m.post(GROUPS, status_code=502, text="bad gateway")
        m.get(GROUPS, json={"values": [{"name": "DEVS", "deletable": True}], "isLastPage": True})
        assert bb.create_group("devs") is True
        assert m.call_count == 2


def test_connect_timeout_is_retried_without_read_back() -> None:
    bb, _ = client(retries=1)
    with requests_mock.Mocker() as m:
        m.post(USERS, [{"exc": requests.exceptions.ConnectTimeout}, {"status_code": 204}])
        assert bb.create_user("alice", "Alice", "a@x.io") is False
        assert [r.method for r in m.request_history] == ["POST", "POST"]


def test_no_answer_after_every_retry_is_a_transient_error_without_status() -> None:
    bb, sleeps = client(retries=2)
    with requests_mock.Mocker() as m:
        m.get(GROUPS, exc=requests.exceptions.ConnectionError("refused"))
        with pytest.raises(BitbucketError, match="no answer") as err:
            list(bb.list_groups())
    assert err.value.status is None and err.value.transient and len(sleeps) == 2


def test_total_wait_is_capped() -> None:
    bb, sleeps = client(retries=10, retry_max_wait=12)
    with requests_mock.Mocker() as m:
        m.get(GROUPS, status_code=429, headers={"Retry-After": "5"})
        with pytest.raises(BitbucketError) as err:
            list(bb.list_groups())
    assert err.value.status == 429 and len(sleeps) == 2 and sum(sleeps) <= 12


def test_429_pauses_the_shared_bucket() -> None:
    """After a 429 the bucket hands out nothing until Retry-After has passed, for every thread."""
    bb, sleeps = client()
    now = [0.0]
    bb.transport.limiter = TokenBucket(10, 5, clock=lambda: now[0])

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    bb.transport.sleep = sleep
    with requests_mock.Mocker() as m:
        m.get(GROUPS, [{"status_code": 429, "headers": {"Retry-After": "2"}},
                       {"json": {"values": [], "isLastPage": True}}])
        list(bb.list_groups())
    # the retry's own wait (2 s + jitter), then one token's refill (1/5 s) from empty
    assert len(sleeps) == 2 and 2.0 <= sleeps[0] <= 3.0 and sleeps[1] == pytest.approx(0.2)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_token_bucket_arithmetic() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 4, clock=lambda: now[0])
    assert [bucket.try_take(), bucket.try_take()] == [0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.25)  # empty: one token takes 1/4 s
    now[0] = 0.5
    assert bucket.try_take() == 0.0 and bucket.try_take() == 0.0  # refilled two tokens
    bucket.pause(3)
    assert bucket.try_take() == pytest.approx(3.0)
    now[0] = 3.75  # paused until 3.5, then 0.25 s of refill = one token
    assert bucket.try_take() == 0.0 and bucket.try_take() > 0
    waited: list[float] = []
    now[0] = 10.0
    bucket = TokenBucket(1, 2, clock=lambda: now[0])
    bucket.try_take()

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    assert bucket.acquire(sleep) == pytest.approx(0.5) and waited == [pytest.approx(0.5)]
