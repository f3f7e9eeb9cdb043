"""The IDCS emulator over HTTP: tokens, paging, projection, members, filters, grants, controls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.testclient import TestClient

from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    ALL_USERS_ID,
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    GROUP_SCHEMA,
    SCOPE,
    USER_EXTENSION,
    USER_SCHEMA,
    IdcsState,
    create_idcs_app,
    derived_grant_id,
)
from identity_sync.emulators.orggen import generate_idcs_org

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
JIRA_APP_ID = "b" * 32


# --- a small hand-made tenant whose every value the tests know ---------------------------------


def user(n: int, user_name: str, given: str, family: str, **extra: Any) -> dict[str, Any]:
    uid = f"{n:032x}"
    federated = extra.pop("federated", False)
    return {
        "id": uid,
        "ocid": f"ocid1.user.oc1..aaaa{n:04d}",
        "userName": user_name,
        "displayName": f"{given} {family}",
        "name": {"givenName": given, "familyName": family, "formatted": f"{given} {family}"},
        "active": extra.pop("active", True),
        "emails": [
            {
                "value": extra.pop("email", f"{user_name.lower()}@example.com"),
                "type": "work",
                "primary": True,
                "secondary": False,
                "verified": True,
            },
            {
                "value": f"{user_name.lower()}@mail.example.org",
                "type": "recovery",
                "primary": False,
                "secondary": False,
                "verified": False,
            },
        ],
        USER_EXTENSION: {
            "isFederatedUser": federated,
            "creationMechanism": "api",
            "isAuthenticationDelegated": False,
        },
        "meta": {
            "created": f"2024-0{n}-01T08:00:00.000Z",
            "lastModified": extra.pop("modified", f"2024-0{n}-02T08:00:00.000Z"),
            "version": f"v{n}",
            "resourceType": "User",
            "location": "https://old/Users/x",
        },
        "schemas": [USER_SCHEMA, USER_EXTENSION],
        "password": "never-returned",
        **extra,
    }


U1 = user(1, "jose.nunez", "José", "Núñez", modified="2025-02-01T00:00:00.000Z")
U2 = user(2, "Zoe.Muller", "Zoë", "Müller", federated=True)
U3 = user(
    3, "siobhan.obrien", "Siobhán", "O'Brien", active=False, email="s.obrien@partner.example.net"
)
U4 = user(4, "wei.zhang", "Wei", "Zhang", modified="2026-01-15T12:00:00.000Z")


def group(n: int, name: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    gid = f"{n:x}" * 32
    return {
        "id": gid,
        "displayName": name,
        "schemas": [GROUP_SCHEMA],
        "meta": {
            "created": "2024-01-01T00:00:00.000Z",
            "lastModified": "2024-01-01T00:00:00.000Z",
            "resourceType": "Group",
            "version": f"g{n}",
        },
        "members": [
            {"value": m["id"], "type": "User", "display": m["displayName"], "name": m["userName"]}
            for m in members
        ],
    }


G_ENG = group(10, "Engineering", [U1, U2, U4])
G_ADMINS = group(11, "Bitbucket Admins", [U2])
G_EMPTY = group(12, "Empty Team", [])
G_JIRA = group(13, "Jira Users", [U1, U3])


def grant(n: int, app: str, grantee: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": f"{n:x}" * 32,
        "schemas": ["urn:ietf:params:scim:schemas:oracle:idcs:Grant"],
        "grantee": {"value": grantee["id"], "type": kind, "display": grantee["displayName"]},
        "app": {"value": app, "display": "Bitbucket" if app == DEMO_APP_ID else "Jira"},
        "grantMechanism": f"ADMINISTRATOR_TO_{kind.upper()}",
        "isFulfilled": True,
        "meta": {
            "created": "2024-05-01T00:00:00.000Z",
            "lastModified": "2024-05-01T00:00:00.000Z",
            "resourceType": "Grant",
        },
    }


GR_ENG = grant(1, DEMO_APP_ID, G_ENG, "Group")
GR_U3 = grant(2, DEMO_APP_ID, U3, "User")
GR_JIRA = grant(3, JIRA_APP_ID, G_JIRA, "Group")

STATE: dict[str, Any] = {
    "users": [U1, U2, U3, U4],
    "groups": [G_ENG, G_ADMINS, G_EMPTY, G_JIRA],
    "apps": [
        {
            "id": DEMO_APP_ID,
            "displayName": "Bitbucket",
            "name": "bitbucket-dc",
            "active": True,
            "schemas": ["urn:ietf:params:scim:schemas:oracle:idcs:App"],
        },
        {
            "id": JIRA_APP_ID,
            "displayName": "Jira",
            "name": "jira-dc",
            "active": True,
            "schemas": ["urn:ietf:params:scim:schemas:oracle:idcs:App"],
        },
    ],
    "grants": [GR_ENG, GR_U3, GR_JIRA],
}


def bearer(client: TestClient) -> dict[str, str]:
    resp = client.post(
        "/oauth2/v1/token",
        data={"grant_type": "client_credentials", "scope": SCOPE},
        auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


class Api:
    """A TestClient plus a valid token, so tests read like the requests a sync makes."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.headers = bearer(client)

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers)

    def ok(self, path: str, **params: Any) -> dict[str, Any]:
        resp = self.get(path, **params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.headers)

    def ids(self, path: str, **params: Any) -> list[str]:
        return [r["id"] for r in self.ok(path, count=1000, **params).get("Resources", [])]


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_idcs_app()
    app.state.emulator.load_dict(STATE)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


# --- tokens and auth ----------------------------------------------------------------------------


def test_token_with_basic_auth(client: TestClient) -> None:
    resp = client.post(
        "/oauth2/v1/token",
        data={"grant_type": "client_credentials", "scope": SCOPE},
        auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
    )
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}  # no refresh_token
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    assert resp.headers["x-oracle-dms-ecid"]


def test_token_with_credentials_in_form_and_custom_expiry(client: TestClient) -> None:
    resp = client.post(
        "/oauth2/v1/token",
        data={
            "grant_type": "client_credentials",
            "scope": f"{SCOPE} urn:opc:resource:expiry=120",
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
        },
    )
    assert resp.status_code == 200
    assert resp.json()["expires_in"] == 120


@pytest.mark.parametrize(
    "auth", [(DEMO_CLIENT_ID, "wrong"), ("other-client", DEMO_CLIENT_SECRET), None]
)
def test_token_bad_client_is_401_invalid_client(
    client: TestClient, auth: tuple[str, str] | None
) -> None:
    resp = client.post(
        "/oauth2/v1/token", data={"grant_type": "client_credentials", "scope": SCOPE}, auth=auth
    )
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"] == "Client authentication failed."
    assert body["ecid"] == resp.headers["x-oracle-dms-ecid"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"grant_type": "password", "scope": SCOPE}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "invalid_scope"),
        (
            {"grant_type": "client_credentials", "scope": "urn:opc:resource:consumer::all"},
            "invalid_scope",
        ),
        ({"grant_type": "client_credentials", "scope": f"{SCOPE} openid"}, "invalid_scope"),
        ({"scope": SCOPE}, "invalid_request"),
    ],
)
def test_token_request_errors_are_400(client: TestClient, data: dict[str, str], error: str) -> None:
    resp = client.post("/oauth2/v1/token", data=data, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET))
    assert resp.status_code == 400
    assert resp.json()["error"] == error


@pytest.mark.parametrize(
    "header", [None, "Bearer not-a-token", "Basic c3luYy1jbGllbnQ6c3luYy1zZWNyZXQ="]
)
def test_admin_api_needs_a_valid_bearer_token(client: TestClient, header: str | None) -> None:
    resp = client.get("/admin/v1/Users", headers={"Authorization": header} if header else {})
    assert resp.status_code == 401
    body = resp.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == "401"
    assert body["detail"]
    assert resp.headers["x-oracle-dms-ecid"]
    assert resp.headers["content-type"].startswith("application/scim+json")


def test_tokens_expire_after_token_ttl() -> None:
    app = create_idcs_app(token_ttl=1)
    with TestClient(app) as c:
        headers = bearer(c)
        assert c.get("/admin/v1/Users", headers=headers).status_code == 200
        time.sleep(1.2)
        resp = c.get("/admin/v1/Users", headers=headers)
        assert resp.status_code == 401
        assert resp.json()["status"] == "401"
        assert c.get("/admin/v1/Users", headers=bearer(c)).status_code == 200


# --- paging -------------------------------------------------------------------------------------


def test_list_response_shape_and_item_per_page_echo(api: Api) -> None:
    body = api.ok("/admin/v1/Users", count=10)
    assert list(body) == ["schemas", "totalResults", "Resources", "startIndex", "itemsPerPage"]
    assert body["schemas"] == [LIST]
    assert body["totalResults"] == 4
    assert len(body["Resources"]) == 4
    assert body["itemsPerPage"] == 10  # the requested size, not the number returned
    assert body["startIndex"] == 1
    assert api.ok("/admin/v1/Users")["itemsPerPage"] == 50


def test_start_index_below_one_is_one(api: Api) -> None:
    zero = api.ok("/admin/v1/Users", startIndex=0, count=2)
    negative = api.ok("/admin/v1/Users", startIndex=-5, count=2)
    assert zero["startIndex"] == negative["startIndex"] == 1
    assert [r["id"] for r in zero["Resources"]] == [U1["id"], U2["id"]]
    assert negative["Resources"] == zero["Resources"]


def test_count_zero_returns_only_total(api: Api) -> None:
    body = api.ok("/admin/v1/Users", count=0, filter="active eq true")
    assert body == {"schemas": [LIST], "totalResults": 3, "startIndex": 1, "itemsPerPage": 0}


def test_negative_count_means_default(api: Api) -> None:
    body = api.ok("/admin/v1/Users", count=-3)
    assert body["itemsPerPage"] == 50
    assert len(body["Resources"]) == 4


def test_resources_omitted_when_page_is_empty(api: Api) -> None:
    past_end = api.ok("/admin/v1/Users", startIndex=5)
    assert "Resources" not in past_end
    assert past_end["totalResults"] == 4
    no_match = api.ok("/admin/v1/Users", filter='userName eq "nobody"')
    assert "Resources" not in no_match
    assert no_match["totalResults"] == 0


def test_bad_paging_values_are_400(api: Api) -> None:
    resp = api.get("/admin/v1/Users", count="ten")
    assert resp.status_code == 400
    assert resp.json()["status"] == "400"


@pytest.fixture(scope="module")
def big_org() -> dict[str, Any]:
    return generate_idcs_org(5, 1_234, 60)


@pytest.fixture
def big_api(big_org: dict[str, Any]) -> Iterator[Api]:
    app = create_idcs_app()
    app.state.emulator.load_dict(big_org)
    with TestClient(app) as c:
        yield Api(c)


def test_count_above_1000_is_clamped(big_api: Api) -> None:
    body = big_api.ok("/admin/v1/Users", count=5000)
    assert body["totalResults"] == 1_234
    assert body["itemsPerPage"] == 1000
    assert len(body["Resources"]) == 1000


def test_walking_all_pages_returns_each_user_once_in_creation_order(
    big_api: Api, big_org: dict[str, Any]
) -> None:
    seen, start = [], 1
    while True:
        body = big_api.ok("/admin/v1/Users", startIndex=start, count=97, attributes="userName")
        page = body.get("Resources", [])
        seen += [r["id"] for r in page]
        start += len(page)
        if not page or start > body["totalResults"]:
            break
    assert seen == [u["id"] for u in big_org["users"]]
    created = [u["meta"]["created"] for u in big_org["users"]]
    assert created == sorted(created)


# --- projection ---------------------------------------------------------------------------------


def test_default_attribute_set(api: Api) -> None:
    u1 = api.ok(f"/admin/v1/Users/{U1['id']}")
    assert u1["userName"] == "jose.nunez"
    assert u1["name"] == {"givenName": "José", "familyName": "Núñez", "formatted": "José Núñez"}
    assert u1["schemas"] == [USER_SCHEMA, USER_EXTENSION]
    assert [e["type"] for e in u1["emails"]] == ["work", "recovery"]
    assert u1["meta"]["location"] == f"http://testserver/admin/v1/Users/{U1['id']}"
    assert "groups" not in u1  # returned: request
    assert "password" not in u1  # returned: never
    # extension: default sub-attributes only (creationMechanism is request, the other never)
    assert u1[USER_EXTENSION] == {"isFederatedUser": False}


def test_attributes_projection_with_sub_attributes(api: Api) -> None:
    body = api.ok("/admin/v1/Users", attributes="userName,name.givenName,emails.value", count=1)
    assert body["Resources"] == [
        {
            "id": U1["id"],
            "userName": "jose.nunez",
            "name": {"givenName": "José"},
            "emails": [
                {"value": "jose.nunez@example.com"},
                {"value": "jose.nunez@mail.example.org"},
            ],
        }
    ]


def test_id_and_always_attributes_come_with_any_projection(api: Api) -> None:
    r = api.ok(f"/admin/v1/Users/{U2['id']}", attributes="displayName")
    assert r == {"id": U2["id"], "userName": "Zoe.Muller", "displayName": "Zoë Müller"}
    r = api.ok(f"/admin/v1/Users/{U2['id']}", attributes="DISPLAYNAME")  # names ignore case
    assert r["displayName"] == "Zoë Müller"


def test_extension_projection(api: Api) -> None:
    sub = api.ok(f"/admin/v1/Users/{U2['id']}", attributes=f"{USER_EXTENSION}:isFederatedUser")
    assert sub == {
        "id": U2["id"],
        "userName": "Zoe.Muller",
        USER_EXTENSION: {"isFederatedUser": True},
    }
    whole = api.ok(f"/admin/v1/Users/{U2['id']}", attributes=USER_EXTENSION)
    assert whole[USER_EXTENSION] == {"isFederatedUser": True}
    requested = api.ok(
        f"/admin/v1/Users/{U2['id']}", attributes=f"{USER_EXTENSION}:creationMechanism"
    )
    assert requested[USER_EXTENSION] == {"creationMechanism": "api"}


def test_attribute_sets(api: Api) -> None:
    always = api.ok(f"/admin/v1/Users/{U1['id']}", attributeSets="always")
    assert always == {"id": U1["id"], "userName": "jose.nunez"}
    everything = api.ok(f"/admin/v1/Users/{U1['id']}", attributeSets="all")
    assert everything[USER_EXTENSION] == {"isFederatedUser": False, "creationMechanism": "api"}
    assert {g["value"] for g in everything["groups"]} == {G_ENG["id"], G_JIRA["id"]}
    assert "password" not in everything
    union = api.ok(f"/admin/v1/Users/{U1['id']}", attributeSets="default", attributes="groups")
    assert "emails" in union
    assert len(union["groups"]) == 2
    assert api.get("/admin/v1/Users", attributeSets="bogus").status_code == 400


def test_users_groups_only_on_request(api: Api) -> None:
    assert all("groups" not in r for r in api.ok("/admin/v1/Users")["Resources"])
    body = api.ok("/admin/v1/Users", attributes="userName,groups")
    by_name = {r["userName"]: r for r in body["Resources"]}
    assert by_name["jose.nunez"]["groups"] == [
        {
            "value": G_ENG["id"],
            "display": "Engineering",
            "type": "direct",
            "$ref": f"http://testserver/admin/v1/Groups/{G_ENG['id']}",
        },
        {
            "value": G_JIRA["id"],
            "display": "Jira Users",
            "type": "direct",
            "$ref": f"http://testserver/admin/v1/Groups/{G_JIRA['id']}",
        },
    ]
    assert [g["value"] for g in by_name["Zoe.Muller"]["groups"]] == [G_ENG["id"], G_ADMINS["id"]]
    assert all(g["value"] != ALL_USERS_ID for r in body["Resources"] for g in r.get("groups", []))


# --- groups and members -------------------------------------------------------------------------


def test_groups_list_members_only_on_request_and_all_users_group(api: Api) -> None:
    body = api.ok("/admin/v1/Groups")
    assert body["totalResults"] == 5
    names = [r["displayName"] for r in body["Resources"]]
    assert names == [
        "Engineering",
        "Bitbucket Admins",
        "Empty Team",
        "Jira Users",
        "All Tenant Users",
    ]
    assert body["Resources"][-1]["id"] == ALL_USERS_ID
    assert all("members" not in r for r in body["Resources"])


def test_members_on_request_and_empty_members_omitted(api: Api) -> None:
    body = api.ok("/admin/v1/Groups", attributes="displayName,members")
    by_name = {r["displayName"]: r for r in body["Resources"]}
    assert by_name["Bitbucket Admins"] == {
        "id": G_ADMINS["id"],
        "displayName": "Bitbucket Admins",
        "members": [
            {
                "value": U2["id"],
                "type": "User",
                "display": "Zoë Müller",
                "name": "Zoe.Muller",
                "$ref": f"http://testserver/admin/v1/Users/{U2['id']}",
                "ocid": U2["ocid"],
            }
        ],
    }
    assert "members" not in by_name["Empty Team"]
    assert [m["value"] for m in by_name["Engineering"]["members"]] == [U1["id"], U2["id"], U4["id"]]
    assert [m["name"] for m in by_name["All Tenant Users"]["members"]] == [
        "jose.nunez",
        "Zoe.Muller",
        "siobhan.obrien",
        "wei.zhang",
    ]


def test_members_value_projection_and_bracket_filter(api: Api) -> None:
    r = api.ok(f"/admin/v1/Groups/{G_ENG['id']}", attributes="members.value")
    # members.ocid is "returned: always", so it comes along with members.value
    assert r["members"] == [{"value": u["id"], "ocid": u["ocid"]} for u in (U1, U2, U4)]
    r = api.ok(f"/admin/v1/Groups/{G_ENG['id']}", attributes=f'members[value eq "{U4["id"]}"]')
    assert [m["name"] for m in r["members"]] == ["wei.zhang"]


def test_get_group_and_user_by_id_and_404(api: Api) -> None:
    assert api.ok(f"/admin/v1/Groups/{G_EMPTY['id']}")["displayName"] == "Empty Team"
    assert api.ok(f"/admin/v1/Groups/{ALL_USERS_ID}")["displayName"] == "All Tenant Users"
    assert api.ok(f"/admin/v1/Users/{U3['ocid']}")["id"] == U3["id"]  # by ocid too
    for path in ("/admin/v1/Users/ffff", "/admin/v1/Groups/ffff", "/admin/v1/Grants/ffff"):
        resp = api.get(path)
        assert resp.status_code == 404
        assert resp.json()["status"] == "404"
        assert ERROR in resp.json()["schemas"]


@pytest.fixture
def crowded() -> Iterator[tuple[Api, str]]:
    """A group of 10,001 members (so "All Tenant Users" is over the cap too)."""
    users = [
        user(1, f"user{i}", "U", f"N{i}") | {"id": f"{i:032x}", "ocid": f"o{i}"}
        for i in range(10_001)
    ]
    big = group(14, "Everyone", users)
    app = create_idcs_app()
    app.state.emulator.load_dict({"users": users, "groups": [big, group(15, "Small", users[:2])]})
    with TestClient(app) as c:
        yield Api(c), big["id"]


def test_more_than_10000_members_fails_the_whole_request(crowded: tuple[Api, str]) -> None:
    api, big_id = crowded
    resp = api.get("/admin/v1/Groups", attributes="displayName,members")
    assert resp.status_code == 400
    body = resp.json()
    assert body["status"] == "400"
    assert ERROR in body["schemas"]
    assert "Resources" not in body
    assert api.get(f"/admin/v1/Groups/{big_id}", attributes="members").status_code == 400
    # without members, or for a small group, all is well
    assert api.ok("/admin/v1/Groups")["totalResults"] == 3
    assert (
        api.ok("/admin/v1/Groups", filter='displayName eq "Small"', attributes="members")[
            "Resources"
        ][0]["members"][1]["name"]
        == "user1"
    )


def test_paged_members(crowded: tuple[Api, str]) -> None:
    api, big_id = crowded
    # the raw query as clients send it: the inner "&" encoded as %26
    resp = api.client.get(
        f"/admin/v1/Groups/{big_id}?attributes=members[startIndex=9999%26count=5]",
        headers=api.headers,
    )
    assert resp.status_code == 200, resp.text
    assert [m["name"] for m in resp.json()["members"]] == ["user9998", "user9999", "user10000"]
    first = api.ok(f"/admin/v1/Groups/{big_id}", attributes="members[startIndex=1&count=2]")
    assert [m["value"] for m in first["members"]] == [f"{0:032x}", f"{1:032x}"]
    # an unencoded "&" splits the parameter: the real service rejects it
    raw = api.client.get(
        f"/admin/v1/Groups/{big_id}?attributes=members[startIndex=1&count=2]", headers=api.headers
    )
    assert raw.status_code == 400


# --- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ('userName eq "JOSE.NUNEZ"', [U1]),
        ('userName ne "jose.nunez"', [U2, U3, U4]),
        ('displayName co "müll"', [U2]),
        ('userName sw "s"', [U3]),
        ('emails.value ew "@partner.example.net"', [U3]),
        ('name.familyName eq "o\'brien"', [U3]),
        ("active eq false", [U3]),
        ("title pr", []),
        ("name.givenName pr", [U1, U2, U3, U4]),
        ('meta.lastModified gt "2025-01-01T00:00:00Z"', [U1, U4]),
        ('meta.lastModified ge "2025-02-01T00:00:00.000Z"', [U1, U4]),
        ('meta.lastModified lt "2024-03-01T00:00:00Z"', [U2]),
        ('meta.lastModified le "2024-03-02T08:00:00Z"', [U2, U3]),
        ('active eq true and meta.lastModified gt "2025-06-01T00:00:00Z"', [U4]),
        ('userName eq "wei.zhang" or userName eq "zoe.muller"', [U2, U4]),
        ('not (userName sw "j") and active eq true', [U2, U4]),
        ('emails[type eq "work" and value co "@partner"]', [U3]),
        ('emails[type eq "recovery" and value co "@partner"]', []),
        (f"{USER_EXTENSION}:isFederatedUser eq true", [U2]),
        (f'groups.value eq "{G_ENG["id"]}"', [U1, U2, U4]),
        (f'groups[value eq "{G_JIRA["id"]}"] and active eq false', [U3]),
    ],
)
def test_user_filters(api: Api, flt: str, expected: list[dict[str, Any]]) -> None:
    assert api.ids("/admin/v1/Users", filter=flt) == [u["id"] for u in expected]


def test_group_filters(api: Api) -> None:
    assert api.ids("/admin/v1/Groups", filter=f'members[value eq "{U2["id"]}"]') == [
        G_ENG["id"],
        G_ADMINS["id"],
        ALL_USERS_ID,
    ]
    assert api.ids(
        "/admin/v1/Groups", filter=f'members[type eq "User" and value eq "{U3["id"]}"]'
    ) == [G_JIRA["id"], ALL_USERS_ID]
    assert api.ids("/admin/v1/Groups", filter='displayName eq "all tenant users"') == [ALL_USERS_ID]
    assert api.ids("/admin/v1/Groups", filter="members pr") == [
        G_ENG["id"],
        G_ADMINS["id"],
        G_JIRA["id"],
        ALL_USERS_ID,
    ]


@pytest.mark.parametrize(
    "flt", ["userName eq", 'userName eq "a" and', "(active eq true", "x[y[z eq 1]]"]
)
def test_bad_filter_is_400_invalid_filter(api: Api, flt: str) -> None:
    resp = api.get("/admin/v1/Users", filter=flt)
    assert resp.status_code == 400
    body = resp.json()
    assert body["status"] == "400"
    assert body["scimType"] == "invalidFilter"
    assert ERROR in body["schemas"]


def test_sort_by(api: Api) -> None:
    assert api.ids("/admin/v1/Users", sortBy="name.familyName") == [
        U2["id"],
        U1["id"],
        U3["id"],
        U4["id"],
    ]
    assert api.ids("/admin/v1/Users", sortBy="userName", sortOrder="descending") == [
        U2["id"],
        U4["id"],
        U3["id"],
        U1["id"],
    ]


# --- .search ------------------------------------------------------------------------------------


def test_search_matches_get(api: Api) -> None:
    body = {
        "schemas": [SEARCH],
        "filter": "active eq true",
        "attributes": ["displayName"],
        "startIndex": 2,
        "count": 10,
    }
    resp = api.post("/admin/v1/Users/.search", body)
    assert resp.status_code == 200
    assert resp.json() == api.ok(
        "/admin/v1/Users", filter="active eq true", attributes="displayName", startIndex=2, count=10
    )
    assert resp.json()["Resources"] == [
        {"id": U2["id"], "userName": "Zoe.Muller", "displayName": "Zoë Müller"},
        {"id": U4["id"], "userName": "wei.zhang", "displayName": "Wei Zhang"},
    ]
    assert resp.json()["itemsPerPage"] == 10


def test_search_on_groups_and_grants(api: Api) -> None:
    groups = api.post(
        "/admin/v1/Groups/.search", {"schemas": [SEARCH], "filter": 'displayName sw "bit"'}
    )
    assert [r["id"] for r in groups.json()["Resources"]] == [G_ADMINS["id"]]
    grants = api.post(
        "/admin/v1/Grants/.search",
        {"schemas": [SEARCH], "filter": 'grantee.type eq "Group"', "count": 0},
    )
    assert grants.json()["totalResults"] == 2


@pytest.mark.parametrize(
    "body", [{"filter": "active eq true"}, [], {"schemas": [SEARCH], "count": "x"}]
)
def test_search_rejects_bad_bodies(api: Api, body: Any) -> None:
    resp = api.post("/admin/v1/Users/.search", body)
    assert resp.status_code == 400
    assert resp.json()["status"] == "400"


def test_search_rejects_invalid_json(api: Api) -> None:
    resp = api.client.post(
        "/admin/v1/Users/.search",
        content=b"{nope",
        headers={**api.headers, "Content-Type": "application/scim+json"},
    )
    assert resp.status_code == 400


# --- grants and apps ----------------------------------------------------------------------------


def test_grants_include_derived_group_membership_grants(api: Api) -> None:
    flt = f'app.value eq "{DEMO_APP_ID}"'
    grants = api.ok(
        "/admin/v1/Grants", filter=flt, attributes="grantee,app,grantMechanism", count=100
    )["Resources"]
    rows = [(g["grantee"]["type"], g["grantee"]["value"], g["grantMechanism"]) for g in grants]
    assert rows == [
        ("Group", G_ENG["id"], "ADMINISTRATOR_TO_GROUP"),
        ("User", U1["id"], "GROUP_MEMBERSHIP"),
        ("User", U2["id"], "GROUP_MEMBERSHIP"),
        ("User", U4["id"], "GROUP_MEMBERSHIP"),
        ("User", U3["id"], "ADMINISTRATOR_TO_USER"),
    ]
    assert grants[1]["id"] == derived_grant_id(GR_ENG["id"], U1["id"])
    assert grants[1]["grantee"]["display"] == "José Núñez"
    assert grants[1]["app"]["$ref"] == f"http://testserver/admin/v1/Apps/{DEMO_APP_ID}"


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (f'app.value eq "{DEMO_APP_ID}" and grantee.type eq "Group"', {G_ENG["id"]}),
        (
            f'app.value eq "{DEMO_APP_ID}" and grantee.type eq "User"',
            {U1["id"], U2["id"], U3["id"], U4["id"]},
        ),
        (
            f'app.value eq "{DEMO_APP_ID}" and grantee.type eq "User" and grantMechanism ne "GROUP_MEMBERSHIP"',
            {U3["id"]},
        ),
        (
            f'app.value eq "{JIRA_APP_ID}" and grantMechanism eq "GROUP_MEMBERSHIP"',
            {U1["id"], U3["id"]},
        ),
        (
            f'grantee[value eq "{G_JIRA["id"]}" and type eq "Group"] and app.value eq "{JIRA_APP_ID}"',
            {G_JIRA["id"]},
        ),
        (f'grantee.value eq "{U2["id"]}"', {U2["id"]}),
        ('grantee.type eq "user"', set()),  # grantee.type is caseExact
    ],
)
def test_grant_filters(api: Api, flt: str, expected: set[str]) -> None:
    body = api.ok("/admin/v1/Grants", filter=flt, count=1000)
    assert {g["grantee"]["value"] for g in body.get("Resources", [])} == expected


def test_grant_default_projection_and_get_by_id(api: Api) -> None:
    default = api.ok(f"/admin/v1/Grants/{GR_U3['id']}")
    assert "display" not in default["grantee"]  # grantee.display is returned: request
    assert default["grantee"]["value"] == U3["id"]
    derived_id = derived_grant_id(GR_JIRA["id"], U3["id"])
    derived = api.ok(f"/admin/v1/Grants/{derived_id}", attributes="grantee.display,grantMechanism")
    assert derived == {
        "id": derived_id,
        "grantee": {"display": "Siobhán O'Brien"},
        "grantMechanism": "GROUP_MEMBERSHIP",
    }


def test_apps(api: Api) -> None:
    body = api.ok("/admin/v1/Apps", filter='displayName eq "bitbucket"')
    assert [a["id"] for a in body["Resources"]] == [DEMO_APP_ID]
    assert api.ok(f"/admin/v1/Apps/{JIRA_APP_ID}")["name"] == "jira-dc"


# --- unknown paths, methods, headers ------------------------------------------------------------


def test_unknown_path_and_method(api: Api) -> None:
    resp = api.get("/admin/v1/Nothing")
    assert resp.status_code == 404
    assert resp.json()["schemas"] == [ERROR]
    assert resp.json()["status"] == "404"
    assert resp.headers["x-oracle-dms-ecid"]
    resp = api.client.delete("/admin/v1/Users", headers=api.headers)  # writes go to /Users/{id}
    assert resp.status_code == 405
    assert resp.json()["status"] == "405"


def test_every_response_has_a_fresh_ecid(api: Api) -> None:
    a = api.get("/admin/v1/Users").headers["x-oracle-dms-ecid"]
    b = api.get("/admin/v1/Users").headers["x-oracle-dms-ecid"]
    assert a and b and a != b


# --- control routes and persistence -------------------------------------------------------------


def test_control_routes_seed_state_reset_and_calls() -> None:
    app = create_idcs_app()
    with TestClient(app) as c:
        assert c.post("/_emulator/seed", json=STATE).json() == {"status": "seeded"}
        dump = c.get("/_emulator/state").json()
        assert [u["id"] for u in dump["users"]] == [U1["id"], U2["id"], U3["id"], U4["id"]]
        assert [g["displayName"] for g in dump["groups"]] == [
            "Engineering",
            "Bitbucket Admins",
            "Empty Team",
            "Jira Users",
        ]  # AllUsersId not stored
        assert dump["groups"][1]["members"] == G_ADMINS["members"]
        assert dump["clients"] == [
            {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}
        ]

        c.delete("/_emulator/calls")
        api = Api(c)
        api.ok(f"/admin/v1/Users/{U1['id']}")
        api.ok(f"/admin/v1/Users/{U2['id']}")
        api.ok("/admin/v1/Groups")
        api.post("/admin/v1/Users/.search", {"schemas": [SEARCH]})
        assert c.get("/_emulator/calls").json() == {
            "GET /admin/v1/Groups": 1,
            "GET /admin/v1/Users/{id}": 2,
            "POST /admin/v1/Users/.search": 1,
            "POST /oauth2/v1/token": 1,
        }

        assert c.post("/_emulator/reset").json() == {"status": "reset"}
        assert c.get("/_emulator/calls").json() == {}
        assert api.ok("/admin/v1/Users")["totalResults"] == 0
        assert api.ok("/admin/v1/Groups")["Resources"][0]["id"] == ALL_USERS_ID


def test_seed_generate_loads_an_org() -> None:
    app = create_idcs_app()
    with TestClient(app) as c:
        resp = c.post("/_emulator/seed", json={"generate": {"seed": 3, "users": 120, "groups": 15}})
        assert resp.status_code == 200
        state: IdcsState = app.state.emulator
        assert state.to_dict() == generate_idcs_org(3, 120, 15)
        assert Api(c).ok("/admin/v1/Users", count=0)["totalResults"] == 120


def test_custom_clients_from_the_dump() -> None:
    app = create_idcs_app()
    app.state.emulator.load_dict({"clients": [{"client_id": "c2", "client_secret": "s2"}]})
    with TestClient(app) as c:
        data = {"grant_type": "client_credentials", "scope": SCOPE}
        assert c.post("/oauth2/v1/token", data=data, auth=("c2", "s2")).status_code == 200
        assert (
            c.post(
                "/oauth2/v1/token", data=data, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
            ).status_code
            == 401
        )


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "idcs" / "state.json"
    with TestClient(create_idcs_app(state_file=state_file)) as c:
        c.post("/_emulator/seed", json=STATE)
    assert state_file.exists()
    with TestClient(create_idcs_app(state_file=state_file)) as c:
        api = Api(c)
        assert api.ids("/admin/v1/Users") == [U1["id"], U2["id"], U3["id"], U4["id"]]
        assert api.ids("/admin/v1/Users", filter=f'groups.value eq "{G_ADMINS["id"]}"') == [
            U2["id"]
        ]
        c.post("/_emulator/reset")
        assert c.post("/_emulator/save").json()["status"] == "saved"
    with TestClient(create_idcs_app(state_file=state_file)) as c:
        assert Api(c).ok("/admin/v1/Users")["totalResults"] == 0


# --- over a real socket -------------------------------------------------------------------------


def test_full_extract_over_a_real_socket() -> None:
    with serving(create_idcs_app()) as server:
        base = server.base_url
        seeded = requests.post(
            f"{base}/_emulator/seed",
            json={"generate": {"seed": 11, "users": 2_500, "groups": 80}},
            timeout=30,
        )
        assert seeded.status_code == 200
        token = requests.post(
            f"{base}/oauth2/v1/token",
            data={"grant_type": "client_credentials", "scope": SCOPE},
            auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
            timeout=10,
        )
        assert token.status_code == 200
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        ids, start = [], 1
        while True:
            resp = session.get(
                f"{base}/admin/v1/Users",
                params={"attributes": "userName,groups", "startIndex": start, "count": 1000},
                timeout=30,
            )
            assert resp.status_code == 200
            assert resp.headers["X-ORACLE-DMS-ECID"]
            body = resp.json()
            assert body["itemsPerPage"] == 1000
            ids += [r["id"] for r in body.get("Resources", [])]
            start += len(body.get("Resources", []))
            if start > body["totalResults"]:
                break
        expected = generate_idcs_org(11, 2_500, 80)
        assert ids == [u["id"] for u in expected["users"]]
        grants = session.get(
            f"{base}/admin/v1/Grants",
            params={
                "filter": f'app.value eq "{DEMO_APP_ID}" and grantee.type eq "Group"',
                "count": 0,
            },
            timeout=30,
        ).json()
        assert grants["totalResults"] == sum(
            1
            for g in expected["grants"]
            if g["app"]["value"] == DEMO_APP_ID and g["grantee"]["type"] == "Group"
        )
        calls = requests.get(f"{base}/_emulator/calls", timeout=10).json()
        assert calls["GET /admin/v1/Users"] == 3
        assert calls["GET /admin/v1/Grants"] == 1


def test_a_bad_dump_leaves_the_state_unchanged() -> None:
    state = IdcsState()
    state.load_dict(STATE)
    with pytest.raises(ValueError, match="duplicate"):
        state.load_dict({"users": [U1], "grants": [GR_ENG, GR_ENG]})
    assert [u["id"] for u in state.users] == [U1["id"], U2["id"], U3["id"], U4["id"]]
    assert state.member_ids(G_ENG["id"]) == [U1["id"], U2["id"], U4["id"]]


def test_grantee_filter_uses_the_index_and_agrees_with_a_full_scan(api: Api) -> None:
    """``grantee.value eq`` narrows through an index; the answer must equal the scan's
    (``grantee.value pr and ...`` cannot use it), for users, groups, direct and derived grants."""
    everyone = {g["grantee"]["value"] for g in api.ok("/admin/v1/Grants", count=1000)["Resources"]}
    assert {U1["id"], U3["id"], G_ENG["id"]} <= everyone
    for grantee in [*sorted(everyone), "0" * 32]:
        for app in (DEMO_APP_ID, JIRA_APP_ID):
            indexed = api.ok("/admin/v1/Grants", count=1000,
                             filter=f'app.value eq "{app}" and grantee.value eq "{grantee}"')
            scanned = api.ok("/admin/v1/Grants", count=1000,
                             filter=f'app.value eq "{app}" and grantee.value pr and '
                                    f'grantee.value sw "{grantee}" and grantee.value ew "{grantee}"')
            assert [g["id"] for g in indexed.get("Resources", [])] == [
                g["id"] for g in scanned.get("Resources", [])]
            assert indexed["totalResults"] == scanned["totalResults"]
    upper = api.ok("/admin/v1/Grants", filter=f'grantee.value eq "{U2["id"].upper()}"')
    assert {g["grantee"]["value"] for g in upper.get("Resources", [])} == {U2["id"]}
