"""API clients against recorded-shape responses (requests-mock): paging quirks and errors."""

from __future__ import annotations

import pytest
import requests
import requests_mock

from identity_sync.bitbucket.client import BitbucketClient, BitbucketError
from identity_sync.http import HttpSettings, make_plain_session, make_session
from identity_sync.idcs.client import IdcsApiError, IdcsClient, PartialExtractError
from identity_sync.idcs.extract import parse_user, primary_email

IDCS = "https://idcs.example.com"
BB = "https://bb.example.com"
NO_RETRY = HttpSettings(retries=0)


def idcs(m: requests_mock.Mocker, ttl: int = 3600) -> IdcsClient:
    m.post(f"{IDCS}/oauth2/v1/token", json={"access_token": "t1", "token_type": "Bearer",
                                            "expires_in": ttl})
    return IdcsClient(IDCS, "cid", "secret", settings=NO_RETRY)


def test_token_request_shape_and_caching() -> None:
    with requests_mock.Mocker() as m:
        client = idcs(m)
        m.get(f"{IDCS}/admin/v1/Users", json={"totalResults": 0, "itemsPerPage": 50,
                                               "startIndex": 1})
        client.get("/admin/v1/Users")
        client.get("/admin/v1/Users")
        token_calls = [r for r in m.request_history if r.path == "/oauth2/v1/token"]
        assert len(token_calls) == 1
        assert token_calls[0].headers["Authorization"].startswith("Basic ")
        assert token_calls[0].text == ("grant_type=client_credentials&scope="
                                       "urn%3Aopc%3Aidm%3A__myscopes__")
        assert m.request_history[-1].headers["Authorization"] == "Bearer t1"


def test_token_is_renewed_before_it_expires() -> None:
    with requests_mock.Mocker() as m:
        client = idcs(m, ttl=0)  # expires at once: every request needs a fresh token
        m.get(f"{IDCS}/admin/v1/Users", json={"totalResults": 0})
        client.get("/admin/v1/Users")
        client.get("/admin/v1/Users")
        assert [r.path for r in m.request_history] == ["/oauth2/v1/token", "/admin/v1/users"] * 2


def test_401_fetches_a_new_token_once() -> None:
    with requests_mock.Mocker() as m:
        client = idcs(m)
        m.get(f"{IDCS}/admin/v1/Users", [
            {"status_code": 401, "json": {"status": "401", "detail": "expired"}},
            {"json": {"totalResults": 0}}])
        assert client.get("/admin/v1/Users") == {"totalResults": 0}
        assert sum(r.path == "/oauth2/v1/token" for r in m.request_history) == 2


def test_bad_client_secret_is_a_readable_error() -> None:
    with requests_mock.Mocker() as m:
        m.post(f"{IDCS}/oauth2/v1/token", status_code=401, json={
            "error": "invalid_client", "error_description": "Client authentication failed."})
        with pytest.raises(Exception, match="invalid_client: Client authentication failed"):
            IdcsClient(IDCS, "cid", "bad", settings=NO_RETRY).token()


def test_paging_advances_by_resources_not_items_per_page() -> None:
    pages = {1: ["a", "b"], 3: ["c"]}
    with requests_mock.Mocker() as m:
        client = idcs(m)

        def page(request, context):
            start = int(request.qs["startindex"][0])
            body = {"totalResults": 3, "itemsPerPage": 1000, "startIndex": start}
            if pages.get(start):
                body["Resources"] = [{"id": i} for i in pages[start]]
            return body

        m.get(f"{IDCS}/admin/v1/Users", json=page)
        assert [r["id"] for r in client.iter_resources("/admin/v1/Users")] == ["a", "b", "c"]


def test_listing_that_comes_up_short_is_refused() -> None:
    with requests_mock.Mocker() as m:
        client = idcs(m)
        m.get(f"{IDCS}/admin/v1/Users", [
            {"json": {"totalResults": 3, "Resources": [{"id": "a"}]}},
            {"json": {"totalResults": 3}}])  # Resources absent: the listing shrank mid-way
        with pytest.raises(PartialExtractError, match="stopped at 1 of 3"):
            list(client.iter_resources("/admin/v1/Users"))


def test_user_parsing_prefers_primary_email_and_skips_all_users_group() -> None:
    user = parse_user({
        "id": "u1", "userName": "Jo", "active": False, "name": {"givenName": "J"},
        "emails": [{"value": "r@x.io", "type": "recovery"},
                   {"value": "w@x.io", "type": "work", "primary": True}],
        "groups": [{"value": "AllUsersId"}, {"value": "g1"}],
        "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User": {"isFederatedUser": True}})
    assert (user.email, user.active, user.federated, user.group_ids) == ("w@x.io", False, True,
                                                                          ("g1",))
    assert primary_email([{"value": "r@x.io", "type": "recovery"}]) is None


def test_connection_errors_are_retried_with_recorded_backoff() -> None:
    sleeps: list[float] = []
    with requests_mock.Mocker() as m:
        m.post(f"{IDCS}/oauth2/v1/token", json={"access_token": "t1", "expires_in": 3600})
        m.get(f"{IDCS}/admin/v1/Users", [{"exc": requests.ConnectionError("reset by peer")},
                                         {"exc": requests.ReadTimeout("read timed out")},
                                         {"json": {"totalResults": 0}}])
        client = IdcsClient(IDCS, "cid", "secret", sleep=sleeps.append,
                            settings=HttpSettings(retries=3, backoff_factor=1.0))
        assert client.get("/admin/v1/Users") == {"totalResults": 0}
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    assert client.metrics.snapshot()["retries"] == 2


def test_retry_after_http_date_is_honoured_and_the_secret_never_shows() -> None:
    sleeps: list[float] = []
    with requests_mock.Mocker() as m:
        m.post(f"{IDCS}/oauth2/v1/token", json={"access_token": "tok-XYZ", "expires_in": 3600})
        m.get(f"{IDCS}/admin/v1/Users", status_code=429,
              headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT",
                       "X-ORACLE-DMS-ECID": "e-1"}, json={"detail": "slow down"})
        client = IdcsClient(IDCS, "cid", "s3cret", sleep=sleeps.append,
                            settings=HttpSettings(retries=3, retry_max_wait=60))
        with pytest.raises(IdcsApiError) as raised:
            client.get("/admin/v1/Users")
    message = str(raised.value)
    assert sleeps == [] and "asked to wait" in message and "e-1" in message
    assert "tok-XYZ" not in message and "s3cret" not in message and "s3cret" not in repr(client)


def test_sessions_take_verify_and_connect_read_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = HttpSettings(timeout=12.0, connect_timeout=3.0)
    plain = make_plain_session(settings, "/etc/ssl/ca.pem")
    assert plain.verify == "/etc/ssl/ca.pem"
    assert plain.get_adapter("https://x").default_timeout == (3.0, 12.0)
    assert make_plain_session(None, False, (1.0, 2.0)).get_adapter("http://x").default_timeout \
        == (1.0, 2.0)
    assert make_session(settings).verify is True
    sent: dict[str, object] = {}

    def send(self: object, request: object, **kwargs: object) -> None:
        sent.update(kwargs)
        raise requests.ConnectionError("not sent")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    with pytest.raises(requests.ConnectionError):  # no timeout given: the default applies
        plain.get("https://x/ping")
    assert sent["timeout"] == (3.0, 12.0) and sent["verify"] == "/etc/ssl/ca.pem"


def bb_client() -> BitbucketClient:
    return BitbucketClient(BB, "svc", "pw", settings=NO_RETRY)


def test_bitbucket_paging_follows_next_page_start() -> None:
    with requests_mock.Mocker() as m:
        m.get(f"{BB}/rest/api/1.0/admin/groups", [
            {"json": {"values": [{"name": "a"}], "isLastPage": False, "nextPageStart": 7}},
            {"json": {"values": [{"name": "b"}], "isLastPage": True}}])
        assert list(bb_client().list_groups()) == ["a", "b"]
        assert m.request_history[1].qs["start"] == ["7"]
        assert m.request_history[0].qs["limit"] == ["1000"]


def test_bitbucket_paging_guards_against_missing_next_page_start() -> None:
    with requests_mock.Mocker() as m:
        m.get(f"{BB}/rest/api/1.0/admin/groups",
              json={"values": [], "isLastPage": False})  # BSERV-12725
        with pytest.raises(BitbucketError, match="paging of /admin/groups stalled"):
            list(bb_client().list_groups())


def test_entity_404_and_route_404_are_told_apart() -> None:
    with requests_mock.Mocker() as m:
        m.post(f"{BB}/rest/api/1.0/admin/users/remove-group", status_code=404, json={
            "errors": [{"context": None, "message": "User x does not exist.",
                        "exceptionName": "com.atlassian.bitbucket.user.NoSuchUserException"}]})
        m.delete(f"{BB}/rest/api/1.0/admin/users", status_code=404,
                 json={"message": "HTTP 404 Not Found", "status-code": 404, "sub-code": -1})
        with pytest.raises(BitbucketError) as entity:
            bb_client().remove_user_from_group("x", "g")
        assert entity.value.entity_missing and not entity.value.transient
        assert m.request_history[0].json() == {"context": "x", "itemName": "g"}
        with pytest.raises(BitbucketError, match="no such REST route") as route:
            bb_client().delete_user("x")
        assert not route.value.entity_missing


def test_create_user_uses_query_parameters_and_no_default_group() -> None:
    with requests_mock.Mocker() as m:
        m.post(f"{BB}/rest/api/1.0/admin/users", status_code=204)
        bb_client().create_user("alice", "Alice", "a@x.io")
        req = m.request_history[0]
        assert req.body is None
        assert req.qs["name"] == ["alice"]
        assert req.qs["addtodefaultgroup"] == ["false"]  # requests-mock lower-cases keys
        assert len(req.qs["password"][0]) >= 24


def test_update_user_sends_email_key() -> None:
    with requests_mock.Mocker() as m:
        m.put(f"{BB}/rest/api/1.0/admin/users", json={"name": "alice"})
        bb_client().update_user("alice", "Alice", "a@x.io")
        assert m.request_history[0].json() == {"name": "alice", "displayName": "Alice",
                                               "email": "a@x.io"}


def test_server_errors_are_classified_transient() -> None:
    with requests_mock.Mocker() as m:
        m.get(f"{BB}/rest/api/1.0/admin/groups", status_code=503,
              json={"errors": [{"message": "busy"}]})
        with pytest.raises(BitbucketError) as err:
            list(bb_client().list_groups())
        assert err.value.transient and err.value.status == 503
