"""Behaviour of the Bitbucket DC emulator, checked against the facts in the API reference.

Most tests use Starlette's in-process TestClient; one runs the app on a real socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity_sync.emulators.bitbucket import (
    DEFAULT_GROUP,
    DEMO_ADMIN_USER,
    INTERNAL_DIRECTORY,
    BitbucketState,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from tests.emulators.conftest import ADMIN_AUTH, API

JSON_TYPE = "application/json;charset=UTF-8"


def state_of(app: Starlette) -> BitbucketState:
    return app.state.emulator


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    """Assert the status and the ``errors`` envelope; return the single error."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == JSON_TYPE
    body = resp.json()
    assert set(body) == {"errors"}
    assert len(body["errors"]) == 1
    assert set(body["errors"][0]) == {"context", "message", "exceptionName"}
    return body["errors"][0]


def create(
    client: TestClient, name: str, *, password: str | None = "pw", **extra: str
) -> httpx.Response:
    params = {"name": name, "displayName": f"{name} display", "emailAddress": f"{name}@example.com"}
    if password is not None:
        params["password"] = password
    return client.post(f"{API}/admin/users", params={**params, **extra})


def names(resp: httpx.Response, key: str = "name") -> list[str]:
    assert resp.status_code == 200, resp.text
    return [v[key] for v in resp.json()["values"]]


def members(client: TestClient, group: str) -> list[str]:
    return names(client.get(f"{API}/admin/groups/more-members", params={"context": group}))


def groups_of(client: TestClient, user: str) -> list[str]:
    return names(client.get(f"{API}/admin/users/more-members", params={"context": user}))


def seed_users(app: Starlette, count: int, **user_fields: Any) -> None:
    dump = state_of(app).to_dict()
    dump["users"] += [
        {"name": f"user{i:03d}", "displayName": f"User {i}", "emailAddress": f"u{i}@example.com",
         "password": "pw", **user_fields}
        for i in range(count)
    ]  # fmt: skip
    state_of(app).load_dict(dump)


# ---- fresh instance ------------------------------------------------------------------------


def test_fresh_instance_has_service_account_admin_and_default_group(client: TestClient) -> None:
    assert names(client.get(f"{API}/admin/users")) == ["admin", DEMO_ADMIN_USER]
    assert names(client.get(f"{API}/admin/groups")) == [DEFAULT_GROUP]
    perms = client.get(f"{API}/admin/permissions/groups").json()["values"]
    assert perms == [
        {"group": {"name": DEFAULT_GROUP}, "permission": "LICENSED_USER"}
    ]  # RestPermittedGroup: the group carries its name only
    users = client.get(f"{API}/admin/permissions/users").json()["values"]
    assert {(v["user"]["name"], v["permission"]) for v in users} == {
        ("admin", "SYS_ADMIN"),
        (DEMO_ADMIN_USER, "SYS_ADMIN"),
    }
    settings = client.get("/_emulator/state").json()["settings"]
    assert settings == {"default_group": DEFAULT_GROUP, "license_limit": None}


def test_detailed_user_shape(client: TestClient) -> None:
    assert create(client, "Jane Doe@Corp").status_code == 204
    resp = client.get(f"{API}/admin/users", params={"filter": "jane"})
    assert resp.headers["content-type"] == JSON_TYPE
    (user,) = resp.json()["values"]
    assert user == {
        "name": "Jane Doe@Corp", "emailAddress": "Jane Doe@Corp@example.com", "id": user["id"],
        "displayName": "Jane Doe@Corp display", "active": True, "slug": "jane_doe_corp",
        "type": "NORMAL", "directoryName": INTERNAL_DIRECTORY, "deletable": True,
        "mutableDetails": True, "mutableGroups": True,
        "links": {"self": [{"href": "http://testserver/users/jane_doe_corp"}]},
    }  # fmt: skip
    assert isinstance(user["id"], int)


# ---- authentication and authorisation ------------------------------------------------------


@pytest.mark.parametrize("auth", [None, (DEMO_ADMIN_USER, "wrong"), ("nobody", "pw")])
def test_bad_or_missing_credentials_are_401(app: Starlette, auth: Any) -> None:
    with TestClient(app) as anon:
        anon.auth = auth
        err = error(anon.get(f"{API}/admin/users"), 401)
    assert err == {
        "context": None,
        "message": "Authentication failed. Please check your credentials and try again.",
        "exceptionName": "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
    }


def test_licensed_non_admin_may_read_but_not_write(app: Starlette, client: TestClient) -> None:
    assert create(client, "bob", password="bobpw").status_code == 204
    with TestClient(app) as bob:
        bob.auth = ("bob", "bobpw")
        assert bob.get(f"{API}/admin/users").status_code == 200
        assert bob.get(f"{API}/admin/groups").status_code == 200
        err = error(create(bob, "eve"), 401)
        assert err["exceptionName"] == "com.atlassian.bitbucket.AuthorisationException"
        assert err["message"] == "You are not permitted to access this resource"
        error(bob.get(f"{API}/admin/permissions/groups"), 401)
    assert "eve" not in names(client.get(f"{API}/admin/users"))


def test_unlicensed_user_cannot_use_the_api(app: Starlette, client: TestClient) -> None:
    assert create(client, "carol", password="c", addToDefaultGroup="false").status_code == 204
    with TestClient(app) as carol:
        carol.auth = ("carol", "c")
        err = error(carol.get(f"{API}/admin/users"), 401)
    assert err["exceptionName"] == "com.atlassian.bitbucket.auth.NoAccessAuthenticationException"


# ---- create --------------------------------------------------------------------------------


def test_create_takes_query_parameters_and_answers_204_without_body(client: TestClient) -> None:
    resp = create(client, "alice")
    assert resp.status_code == 204
    assert resp.content == b""
    assert "alice" in names(client.get(f"{API}/admin/users"))
    # A JSON body is not read: the required query parameters are missing.
    body = {"name": "bob", "displayName": "Bob", "emailAddress": "b@x.com", "password": "p"}
    err = error(client.post(f"{API}/admin/users", json=body), 400)
    assert err["exceptionName"] == "com.atlassian.bitbucket.validation.ArgumentValidationException"


@pytest.mark.parametrize("missing", ["name", "displayName", "emailAddress"])
def test_create_requires_name_display_name_and_email(client: TestClient, missing: str) -> None:
    params = {"name": "x", "displayName": "X", "emailAddress": "x@example.com", "password": "p"}
    del params[missing]
    err = error(client.post(f"{API}/admin/users", params=params), 400)
    assert err["context"] == missing


def test_create_requires_password_unless_notify(client: TestClient) -> None:
    assert error(create(client, "nopw", password=None), 400)["context"] == "password"
    assert (
        error(create(client, "nopw", password=None, notify="false"), 400)["context"] == "password"
    )
    assert create(client, "nopw", password=None, notify="true").status_code == 204
    assert create(client, "nopw2", password=None, notify="").status_code == 204


def test_create_duplicate_name_is_409_whatever_the_case(client: TestClient) -> None:
    assert create(client, "alice").status_code == 204
    for name in ("alice", "ALICE", "Alice"):
        err = error(create(client, name), 409)
        assert err["message"] == "Another user with the same name already exists."
        assert err["exceptionName"] == "com.atlassian.bitbucket.IntegrityException"


def test_add_to_default_group_defaults_to_true(client: TestClient) -> None:
    assert create(client, "dflt").status_code == 204
    assert create(client, "nodflt", addToDefaultGroup="false").status_code == 204
    assert members(client, DEFAULT_GROUP) == ["dflt"]
    assert groups_of(client, "dflt") == [DEFAULT_GROUP]
    assert groups_of(client, "nodflt") == []


# ---- update, rename, delete ----------------------------------------------------------------


def test_update_uses_email_not_email_address(client: TestClient) -> None:
    create(client, "alice")
    resp = client.put(f"{API}/admin/users", json={"name": "alice", "emailAddress": "ignored@x.com"})
    assert resp.status_code == 200
    assert resp.json()["emailAddress"] == "alice@example.com"
    resp = client.put(
        f"{API}/admin/users", json={"name": "ALICE", "displayName": "Alice A", "email": "a@x.com"}
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == JSON_TYPE
    user = resp.json()
    assert (user["name"], user["displayName"], user["emailAddress"]) == (
        "alice",
        "Alice A",
        "a@x.com",
    )
    assert user["directoryName"] == INTERNAL_DIRECTORY


def test_update_errors(client: TestClient) -> None:
    err = error(client.put(f"{API}/admin/users", json={"name": "ghost", "email": "g@x.com"}), 404)
    assert err["message"] == "User ghost does not exist."
    assert err["exceptionName"] == "com.atlassian.bitbucket.user.NoSuchUserException"
    error(client.put(f"{API}/admin/users", content=b"not json"), 400)
    error(client.put(f"{API}/admin/users", json=["alice"]), 400)
    error(client.put(f"{API}/admin/users", json={"email": "x@x.com"}), 400)


def test_rename_keeps_id_memberships_and_frees_old_name(client: TestClient) -> None:
    create(client, "alice")
    old_id = client.get(f"{API}/admin/users", params={"filter": "alice"}).json()["values"][0]["id"]
    resp = client.post(f"{API}/admin/users/rename", json={"name": "ALICE", "newName": "Alice.New"})
    assert resp.status_code == 200
    user = resp.json()
    assert (user["name"], user["slug"], user["id"]) == ("Alice.New", "alice.new", old_id)
    assert members(client, DEFAULT_GROUP) == ["Alice.New"]
    error(client.post(f"{API}/admin/users/rename", json={"name": "alice", "newName": "x"}), 404)
    assert create(client, "alice").status_code == 204
    err = error(
        client.post(f"{API}/admin/users/rename", json={"name": "alice", "newName": "ALICE.new"}),
        409,
    )
    assert err["exceptionName"] == "com.atlassian.bitbucket.IntegrityException"
    case_only = client.post(f"{API}/admin/users/rename", json={"name": "alice", "newName": "Alice"})
    assert case_only.status_code == 200


def test_listing_order_follows_every_create_delete_and_rename_between_pages(
    client: TestClient,
) -> None:
    """The emulator keeps the sorted user list between pages; any write must show at once."""

    def listed() -> list[str]:
        return names(client.get(f"{API}/admin/users", params={"limit": 1000}))

    def group_listed() -> list[str]:
        return members(client, DEFAULT_GROUP)

    for name in ("mike", "bob", "zoe"):
        create(client, name)
    assert listed() == sorted(listed(), key=str.casefold) and "bob" in listed()
    before = group_listed()
    client.delete(f"{API}/admin/users", params={"name": "bob"})
    create(client, "Carl")  # one out, one in: same count as before
    assert "bob" not in listed() and "Carl" in listed()
    assert listed() == sorted(listed(), key=str.casefold)
    client.post(f"{API}/admin/users/rename", json={"name": "zoe", "newName": "aaron"})
    assert listed()[0] == "aaron"
    assert group_listed() == sorted(group_listed(), key=str.casefold) != before
    assert "aaron" in group_listed() and "zoe" not in group_listed()
    client.post(f"{API}/admin/users/remove-group", json={"context": "mike",
                                                          "itemName": DEFAULT_GROUP})
    assert "mike" not in group_listed() and "mike" in listed()
    client.post(f"{API}/admin/groups/add-users", json={"group": DEFAULT_GROUP,
                                                       "users": ["mike"]})
    assert "mike" in group_listed()


def test_delete_returns_user_and_removes_memberships_and_permissions(
    app: Starlette, client: TestClient
) -> None:
    create(client, "alice")
    client.put(f"{API}/admin/permissions/users", params={"name": "alice", "permission": "ADMIN"})
    resp = client.delete(f"{API}/admin/users", params={"name": "Alice"})
    assert resp.status_code == 200
    assert resp.json()["name"] == "alice"
    assert resp.json()["directoryName"] == INTERNAL_DIRECTORY
    dump = state_of(app).to_dict()
    assert "alice" not in dump["user_permissions"]
    assert dump["memberships"] == {}
    error(client.delete(f"{API}/admin/users", params={"name": "alice"}), 404)


def test_delete_yourself_is_409(client: TestClient) -> None:
    err = error(client.delete(f"{API}/admin/users", params={"name": DEMO_ADMIN_USER}), 409)
    assert err["exceptionName"] == "com.atlassian.bitbucket.IntegrityException"


# ---- groups and memberships ----------------------------------------------------------------


def test_group_create_conflict_and_delete(client: TestClient) -> None:
    resp = client.post(f"{API}/admin/groups", params={"name": "devs"})
    assert resp.status_code == 200
    assert resp.json() == {"name": "devs", "deletable": True}
    err = error(client.post(f"{API}/admin/groups", params={"name": "DEVS"}), 409)
    assert err["message"] == "A group with this name already exists."
    error(client.post(f"{API}/admin/groups", json={"name": "body-ignored"}), 400)
    assert (
        error(client.post(f"{API}/admin/groups", params={"name": "  "}), 400)["context"] == "name"
    )
    client.put(
        f"{API}/admin/permissions/groups", params={"name": "devs", "permission": "PROJECT_CREATE"}
    )
    resp = client.delete(f"{API}/admin/groups", params={"name": "Devs"})
    assert resp.status_code == 200
    assert resp.json() == {"name": "devs", "deletable": True}
    assert names(client.get(f"{API}/admin/groups")) == [DEFAULT_GROUP]
    assert names(client.get(f"{API}/admin/permissions/groups"), "permission") == ["LICENSED_USER"]
    err = error(client.delete(f"{API}/admin/groups", params={"name": "devs"}), 404)
    assert err["exceptionName"] == "com.atlassian.bitbucket.user.NoSuchGroupException"


def test_group_members_and_non_members(client: TestClient) -> None:
    for name in ("bob", "alice", "carol"):
        create(client, name)
    client.post(f"{API}/admin/groups", params={"name": "devs"})
    resp = client.post(
        f"{API}/admin/groups/add-users", json={"group": "devs", "users": ["carol", "Alice"]}
    )
    assert resp.status_code == 200
    assert resp.content == b""
    assert members(client, "DEVS") == ["alice", "carol"]
    values = client.get(f"{API}/admin/groups/more-members", params={"context": "devs"}).json()[
        "values"
    ]
    assert values[0]["directoryName"] == INTERNAL_DIRECTORY  # RestDetailedUser
    filtered = client.get(
        f"{API}/admin/groups/more-members", params={"context": "devs", "filter": "CAR"}
    )
    assert names(filtered) == ["carol"]
    non = client.get(f"{API}/admin/groups/more-non-members", params={"context": "devs"})
    assert names(non) == ["admin", "bob", DEMO_ADMIN_USER]
    err = error(client.get(f"{API}/admin/groups/more-members", params={"context": "ghost"}), 404)
    assert err["exceptionName"] == "com.atlassian.bitbucket.user.NoSuchGroupException"
    error(client.get(f"{API}/admin/groups/more-members"), 400)


def test_user_more_members_returns_groups(client: TestClient) -> None:
    create(client, "alice")
    for group in ("devs", "ops", "qa"):
        client.post(f"{API}/admin/groups", params={"name": group})
    resp = client.post(
        f"{API}/admin/users/add-groups", json={"user": "ALICE", "groups": ["ops", "devs"]}
    )
    assert resp.status_code == 200
    values = client.get(f"{API}/admin/users/more-members", params={"context": "alice"}).json()[
        "values"
    ]
    assert values == [
        {"name": "devs", "deletable": True},
        {"name": "ops", "deletable": True},
        {"name": DEFAULT_GROUP, "deletable": True},
    ]
    non = client.get(f"{API}/admin/users/more-non-members", params={"context": "alice"})
    assert non.json()["values"] == [{"name": "qa", "deletable": True}]
    error(client.get(f"{API}/admin/users/more-members", params={"context": "ghost"}), 404)


def test_add_users_is_all_or_nothing(app: Starlette, client: TestClient) -> None:
    create(client, "alice")
    client.post(f"{API}/admin/groups", params={"name": "devs"})
    before = state_of(app).to_dict()
    err = error(
        client.post(
            f"{API}/admin/groups/add-users", json={"group": "devs", "users": ["alice", "ghost"]}
        ),
        404,
    )
    assert err["exceptionName"] == "com.atlassian.bitbucket.user.NoSuchUserException"
    err = error(
        client.post(f"{API}/admin/groups/add-users", json={"group": "ghosts", "users": ["alice"]}),
        404,
    )
    assert err["exceptionName"] == "com.atlassian.bitbucket.user.NoSuchGroupException"
    err = error(
        client.post(
            f"{API}/admin/users/add-groups", json={"user": "alice", "groups": ["devs", "nope"]}
        ),
        404,
    )
    assert state_of(app).to_dict() == before
    error(client.post(f"{API}/admin/groups/add-users", json={"group": "devs"}), 400)
    ok = {"group": "devs", "users": ["alice"]}
    assert client.post(f"{API}/admin/groups/add-users", json=ok).status_code == 200
    assert client.post(f"{API}/admin/groups/add-users", json=ok).status_code == 200  # no-op
    assert members(client, "devs") == ["alice"]


def test_remove_group_context_is_the_user(client: TestClient) -> None:
    create(client, "alice")
    client.post(f"{API}/admin/groups", params={"name": "devs"})
    client.post(f"{API}/admin/groups/add-users", json={"group": "devs", "users": ["alice"]})
    swapped = {"context": "devs", "itemName": "alice"}
    err = error(client.post(f"{API}/admin/users/remove-group", json=swapped), 404)
    assert err["exceptionName"] == "com.atlassian.bitbucket.user.NoSuchUserException"
    right = {"context": "Alice", "itemName": "DEVS"}
    resp = client.post(f"{API}/admin/users/remove-group", json=right)
    assert resp.status_code == 200
    assert resp.content == b""
    assert members(client, "devs") == []
    assert client.post(f"{API}/admin/users/remove-group", json=right).status_code == 200  # no-op
    missing_group = {"context": "alice", "itemName": "ghosts"}
    error(client.post(f"{API}/admin/users/remove-group", json=missing_group), 404)


# ---- global permissions --------------------------------------------------------------------


def test_group_permissions_grant_list_revoke(client: TestClient) -> None:
    for group in ("devs", "ops", "qa"):
        client.post(f"{API}/admin/groups", params={"name": group})
    none = client.get(f"{API}/admin/permissions/groups/none")
    assert none.json()["values"] == [{"name": g, "deletable": True} for g in ("devs", "ops", "qa")]
    resp = client.put(
        f"{API}/admin/permissions/groups?name=devs&name=OPS&permission=PROJECT_CREATE"
    )
    assert resp.status_code == 204
    assert resp.content == b""
    values = client.get(f"{API}/admin/permissions/groups").json()["values"]
    assert values == [
        {"group": {"name": "devs"}, "permission": "PROJECT_CREATE"},
        {"group": {"name": "ops"}, "permission": "PROJECT_CREATE"},
        {"group": {"name": DEFAULT_GROUP}, "permission": "LICENSED_USER"},
    ]
    filtered = client.get(f"{API}/admin/permissions/groups", params={"filter": "OP"})
    assert names(filtered, "permission") == ["PROJECT_CREATE"]
    assert names(client.get(f"{API}/admin/permissions/groups/none")) == ["qa"]
    bad = client.put(f"{API}/admin/permissions/groups", params={"name": "qa", "permission": "GOD"})
    assert error(bad, 400)["context"] == "permission"
    missing = {"name": "ghosts", "permission": "LICENSED_USER"}
    error(client.put(f"{API}/admin/permissions/groups", params=missing), 404)
    assert (
        client.delete(f"{API}/admin/permissions/groups", params={"name": "devs"}).status_code == 204
    )
    assert names(client.get(f"{API}/admin/permissions/groups/none")) == ["devs", "qa"]
    error(client.delete(f"{API}/admin/permissions/groups", params={"name": "ghosts"}), 404)


def test_user_permissions_grant_list_revoke(client: TestClient) -> None:
    create(client, "alice")
    create(client, "bob")
    none = client.get(f"{API}/admin/permissions/users/none").json()["values"]
    assert [u["name"] for u in none] == ["alice", "bob"]
    resp = client.put(f"{API}/admin/permissions/users?name=alice&name=BOB&permission=ADMIN")
    assert resp.status_code == 204
    values = client.get(f"{API}/admin/permissions/users").json()["values"]
    alice = next(v for v in values if v["user"]["name"] == "alice")
    assert alice["permission"] == "ADMIN"
    assert set(alice["user"]) == {
        "name", "emailAddress", "id", "displayName", "active", "slug", "type", "links"
    }  # fmt: skip
    assert (
        client.delete(f"{API}/admin/permissions/users", params={"name": "bob"}).status_code == 204
    )
    assert names(client.get(f"{API}/admin/permissions/users/none")) == ["bob"]
    error(
        client.put(f"{API}/admin/permissions/users", params={"name": "x", "permission": "ADMIN"}),
        404,
    )
    error(client.put(f"{API}/admin/permissions/users", params={"permission": "ADMIN"}), 400)


def test_permission_rank_rules(app: Starlette, client: TestClient) -> None:
    create(client, "ada", password="adapw", addToDefaultGroup="false")
    create(client, "bob")
    client.put(f"{API}/admin/permissions/users", params={"name": "ada", "permission": "ADMIN"})
    with TestClient(app) as ada:
        ada.auth = ("ada", "adapw")
        grant_sys = ada.put(
            f"{API}/admin/permissions/users", params={"name": "bob", "permission": "SYS_ADMIN"}
        )
        assert (
            error(grant_sys, 401)["exceptionName"]
            == "com.atlassian.bitbucket.AuthorisationException"
        )
        demote_higher = ada.put(
            f"{API}/admin/permissions/users",
            params={"name": "admin", "permission": "LICENSED_USER"},
        )
        error(demote_higher, 409)
        error(ada.delete(f"{API}/admin/permissions/users", params={"name": "admin"}), 409)
        error(ada.delete(f"{API}/admin/permissions/users", params={"name": "ada"}), 409)  # self
        lower_self = ada.put(
            f"{API}/admin/permissions/users", params={"name": "ada", "permission": "LICENSED_USER"}
        )
        error(lower_self, 409)
        error(ada.delete(f"{API}/admin/users", params={"name": "admin"}), 403)
        error(ada.put(f"{API}/admin/users", json={"name": "admin", "email": "a@b.c"}), 401)
        grant_admin = ada.put(
            f"{API}/admin/permissions/users", params={"name": "bob", "permission": "ADMIN"}
        )
        assert grant_admin.status_code == 204
    assert state_of(app).to_dict()["user_permissions"]["ada"] == "ADMIN"


def test_cannot_revoke_or_delete_the_group_that_makes_you_admin(
    app: Starlette, client: TestClient
) -> None:
    create(client, "ada", password="adapw", addToDefaultGroup="false")
    client.post(f"{API}/admin/groups", params={"name": "admins"})
    client.put(f"{API}/admin/permissions/groups", params={"name": "admins", "permission": "ADMIN"})
    client.post(f"{API}/admin/groups/add-users", json={"group": "admins", "users": ["ada"]})
    with TestClient(app) as ada:
        ada.auth = ("ada", "adapw")
        error(ada.delete(f"{API}/admin/permissions/groups", params={"name": "admins"}), 409)
        error(ada.delete(f"{API}/admin/groups", params={"name": "admins"}), 409)
    assert state_of(app).to_dict()["group_permissions"]["admins"] == "ADMIN"


# ---- paging --------------------------------------------------------------------------------


def test_paging_defaults_and_clamp(app: Starlette, client: TestClient) -> None:
    seed_users(app, 58)  # 60 users with admin and sync-admin
    first = client.get(f"{API}/admin/users").json()
    assert list(first) == ["size", "limit", "isLastPage", "values", "start", "nextPageStart"]
    assert (first["size"], first["limit"], first["isLastPage"], first["start"]) == (
        25,
        25,
        False,
        0,
    )
    assert first["nextPageStart"] == 25
    everything = client.get(f"{API}/admin/users", params={"limit": 5000}).json()
    assert (everything["limit"], everything["size"], everything["isLastPage"]) == (1000, 60, True)
    assert "nextPageStart" not in everything
    beyond = client.get(f"{API}/admin/users", params={"start": 100}).json()
    assert (beyond["size"], beyond["isLastPage"], beyond["values"]) == (0, True, [])
    error(client.get(f"{API}/admin/users", params={"limit": "many"}), 400)


def test_walking_pages_covers_every_user_once(app: Starlette, client: TestClient) -> None:
    seed_users(app, 40)
    seen: list[str] = []
    start: int | None = 0
    while start is not None:
        page = client.get(f"{API}/admin/users", params={"start": start, "limit": 7}).json()
        assert page["start"] == start
        seen += [v["name"] for v in page["values"]]
        start = page.get("nextPageStart")
        assert page["isLastPage"] == (start is None)
    assert seen == sorted(seen, key=str.lower)
    assert len(seen) == len(set(seen)) == 42


# ---- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{API}/admin/nothing", "/rest/api/2.0/admin/users", "/x"])
def test_unknown_route_is_a_non_envelope_404(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404
    assert resp.json() == {"message": "HTTP 404 Not Found", "status-code": 404, "sub-code": -1}


def test_latest_is_the_same_api_and_wrong_method_is_405(client: TestClient) -> None:
    assert create(client, "alice").status_code == 204
    assert "alice" in names(client.get("/rest/api/latest/admin/users"))
    resp = client.patch(f"{API}/admin/users")
    assert resp.status_code == 405
    assert set(resp.headers["allow"].split(", ")) >= {"GET", "POST", "PUT", "DELETE"}


def test_names_are_case_insensitive_but_keep_their_case(client: TestClient) -> None:
    create(client, "MixedCase")
    client.post(f"{API}/admin/groups", params={"name": "Team-A"})
    add = {"group": "team-a", "users": ["mixedcase"]}
    assert client.post(f"{API}/admin/groups/add-users", json=add).status_code == 200
    assert members(client, "TEAM-A") == ["MixedCase"]
    assert groups_of(client, "MIXEDCASE") == ["stash-users", "Team-A"]
    assert names(client.get(f"{API}/admin/users", params={"filter": "XEDc"})) == ["MixedCase"]
    assert names(client.get(f"{API}/admin/groups", params={"filter": "TEAM"})) == ["Team-A"]


# ---- licence limit -------------------------------------------------------------------------


def test_licence_limit_is_403_and_changes_nothing(app: Starlette, client: TestClient) -> None:
    create(client, "unlicensed", addToDefaultGroup="false")
    client.post(f"{API}/admin/groups", params={"name": "devs"})
    client.post(f"{API}/admin/groups/add-users", json={"group": "devs", "users": ["unlicensed"]})
    dump = state_of(app).to_dict()
    dump["settings"]["license_limit"] = 2  # admin and sync-admin already hold licences
    assert client.post("/_emulator/seed", json=dump).status_code == 200
    before = state_of(app).to_dict()

    assert error(create(client, "newbie"), 403)["message"].startswith("This action would exceed")
    to_default = {"group": DEFAULT_GROUP, "users": ["unlicensed"]}
    error(client.post(f"{API}/admin/groups/add-users", json=to_default), 403)
    grant = {"name": "devs", "permission": "LICENSED_USER"}
    error(client.put(f"{API}/admin/permissions/groups", params=grant), 403)
    grant_user = {"name": "unlicensed", "permission": "LICENSED_USER"}
    error(client.put(f"{API}/admin/permissions/users", params=grant_user), 403)
    assert state_of(app).to_dict() == before

    assert create(client, "newbie", addToDefaultGroup="false").status_code == 204
    # Already-licensed users may join licensed groups.
    admins = {"group": DEFAULT_GROUP, "users": ["admin"]}
    assert client.post(f"{API}/admin/groups/add-users", json=admins).status_code == 200


# ---- read-only directory -------------------------------------------------------------------


def test_read_only_directory_users_cannot_be_changed(app: Starlette, client: TestClient) -> None:
    seed_users(app, 1, directoryName="Corporate LDAP")
    (user,) = client.get(f"{API}/admin/users", params={"filter": "user000"}).json()["values"]
    assert (user["directoryName"], user["mutableDetails"], user["mutableGroups"]) == (
        "Corporate LDAP", False, False,
    )  # fmt: skip
    assert user["deletable"] is False
    before = state_of(app).to_dict()
    error(client.put(f"{API}/admin/users", json={"name": "user000", "email": "n@x.com"}), 400)
    error(client.post(f"{API}/admin/users/rename", json={"name": "user000", "newName": "u"}), 400)
    add = {"group": DEFAULT_GROUP, "users": ["user000"]}
    error(client.post(f"{API}/admin/groups/add-users", json=add), 400)
    remove = {"context": "user000", "itemName": DEFAULT_GROUP}
    error(client.post(f"{API}/admin/users/remove-group", json=remove), 400)
    error(client.delete(f"{API}/admin/users", params={"name": "user000"}), 400)
    assert state_of(app).to_dict() == before


# ---- control routes and persistence --------------------------------------------------------


def test_control_routes(app: Starlette, client: TestClient) -> None:
    assert client.get("/_emulator/health").json() == {"status": "ok"}
    client.get(f"{API}/admin/users", params={"limit": 1})
    client.get(f"{API}/admin/users", params={"filter": "x"})
    create(client, "alice")
    client.get(f"{API}/admin/nothing")
    calls = client.get("/_emulator/calls").json()
    assert calls == {
        f"GET {API}/admin/users": 2,
        f"POST {API}/admin/users": 1,
        f"GET {API}/admin/nothing": 1,
    }
    assert client.delete("/_emulator/calls").status_code == 204
    assert client.get("/_emulator/calls").json() == {}

    dump = client.get("/_emulator/state").json()
    assert set(dump) == {
        "users", "groups", "memberships", "group_permissions", "user_permissions", "next_id",
        "settings",
    }  # fmt: skip
    alice = next(u for u in dump["users"] if u["name"] == "alice")
    assert (alice["password"], alice["directoryName"], alice["type"]) == (
        "pw",
        INTERNAL_DIRECTORY,
        "NORMAL",
    )
    assert dump["memberships"] == {DEFAULT_GROUP: ["alice"]}

    dump["users"].append({"name": "seeded", "password": "s", "emailAddress": "s@x.com"})
    assert client.post("/_emulator/seed", json=dump).status_code == 200
    assert "seeded" in names(client.get(f"{API}/admin/users"))
    assert client.post("/_emulator/reset").status_code == 200
    assert names(client.get(f"{API}/admin/users")) == ["admin", DEMO_ADMIN_USER]
    assert state_of(app).to_dict() == BitbucketState().to_dict()


def test_load_dict_round_trips_and_rejects_dangling_names() -> None:
    state = BitbucketState()
    dump = state.to_dict()
    dump["users"].append({"name": "new", "displayName": "New", "emailAddress": "n@x.com"})
    dump["memberships"] = {DEFAULT_GROUP: ["NEW"]}
    state.load_dict(dump)
    again = state.to_dict()
    assert json.loads(json.dumps(again)) == again
    new = next(u for u in again["users"] if u["name"] == "new")
    assert new["id"] == dump["next_id"]
    assert again["next_id"] == new["id"] + 1
    assert again["memberships"] == {DEFAULT_GROUP: ["new"]}
    with pytest.raises(ValueError, match="unknown user"):
        state.load_dict({**dump, "memberships": {DEFAULT_GROUP: ["ghost"]}})
    assert state.to_dict() == again  # a failed load changes nothing


def test_state_persists_across_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "bitbucket.json"
    with TestClient(create_bitbucket_app(state_file=state_file)) as first:
        first.auth = ADMIN_AUTH
        assert create(first, "persisted").status_code == 204
    assert state_file.exists()
    with TestClient(create_bitbucket_app(state_file=state_file)) as second:
        second.auth = ADMIN_AUTH
        assert "persisted" in names(second.get(f"{API}/admin/users"))
        assert members(second, DEFAULT_GROUP) == ["persisted"]


def test_over_a_real_socket() -> None:
    with serving(create_bitbucket_app()) as server:
        base = f"{server.base_url}{API}"
        session = requests.Session()
        session.auth = ADMIN_AUTH
        params = {"name": "sock", "displayName": "Sock", "emailAddress": "s@x.com", "password": "p"}
        resp = session.post(f"{base}/admin/users", params=params, timeout=10)
        assert resp.status_code == 204
        page = session.get(f"{base}/admin/users", params={"filter": "sock"}, timeout=10).json()
        assert page["values"][0]["links"]["self"][0]["href"] == f"{server.base_url}/users/sock"
        assert requests.get(f"{base}/admin/users", timeout=10).status_code == 401
        missing = session.get(f"{server.base_url}/rest/api/1.0/nope", timeout=10)
        assert missing.json()["status-code"] == 404
