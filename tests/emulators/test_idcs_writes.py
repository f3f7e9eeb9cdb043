"""IDCS emulator writes: Users/Groups POST/PUT/PATCH/DELETE, UserStatusChanger, Bulk, ETags,
dynamic groups, discovery endpoints, and the side effects a delta extract depends on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity_sync.emulators.idcs import (
    ALL_USERS_ID,
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    USER_EXTENSION,
    create_idcs_app,
)

from .test_idcs_emulator import G_ADMINS, G_ENG, GR_ENG, GR_U3, STATE, U1, U2, U3, U4, Api

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DYNAMIC = "urn:ietf:params:scim:schemas:oracle:idcs:extension:dynamic:Group"
STATUS_CHANGER = "urn:ietf:params:scim:schemas:oracle:idcs:UserStatusChanger"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def api() -> Iterator[Api]:
    app = create_idcs_app()
    app.state.emulator.load_dict(STATE)
    with TestClient(app) as client:
        yield Api(client)


def send(api: Api, method: str, path: str, body: Any = None, **headers: str) -> Any:
    return api.client.request(method, path, json=body, headers={**api.headers, **headers})


def new_user(name: str, **extra: Any) -> dict[str, Any]:
    return {"schemas": [CORE_USER], "userName": name,
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": f"{name}@example.com", "type": "work", "primary": True}],
            **extra}


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(ops)}


def scim_error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == str(status)
    assert "urn:ietf:params:scim:api:messages:2.0:Error" in body["schemas"]
    return body


# --- users --------------------------------------------------------------------------------------


def test_create_user_answers_201_with_location_etag_and_idcs_defaults(api: Api) -> None:
    resp = send(api, "POST", "/admin/v1/Users", new_user("ann.lee"))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert HEX32.match(body["id"])
    assert resp.headers["location"] == f"http://testserver/admin/v1/Users/{body['id']}"
    assert resp.headers["etag"] == body["meta"]["version"]
    assert resp.headers["x-oracle-dms-ecid"]
    assert body["meta"]["created"] == body["meta"]["lastModified"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", body["meta"]["lastModified"])
    assert body["active"] is True
    assert [(e["type"], e["value"]) for e in body["emails"]] == [
        ("work", "ann.lee@example.com"), ("recovery", "ann.lee@example.com")]
    assert body["idcsCreatedBy"]["display"] == DEMO_CLIENT_ID
    full = api.ok(f"/admin/v1/Users/{body['id']}", attributes=f"{USER_EXTENSION}:creationMechanism")
    assert full[USER_EXTENSION] == {"creationMechanism": "api"}
    assert api.ok("/admin/v1/Users", count=0)["totalResults"] == 5


def test_create_ignores_read_only_input(api: Api) -> None:
    body = new_user("ro.test", id="f" * 32, groups=[{"value": G_ENG["id"]}],
                    meta={"created": "2000-01-01T00:00:00Z"})
    created = send(api, "POST", "/admin/v1/Users", body).json()
    assert created["id"] != "f" * 32
    assert created["meta"]["created"] != "2000-01-01T00:00:00Z"
    assert "groups" not in api.ok(f"/admin/v1/Users/{created['id']}", attributes="groups")


@pytest.mark.parametrize(("body", "status", "scim_type"), [
    (new_user("JOSE.NUNEZ"), 409, "uniqueness"),  # userName is unique, case-insensitively
    ({"schemas": [CORE_USER], "displayName": "no user name"}, 400, None),
    (new_user("x", active="yes"), 400, "invalidValue"),
    (new_user("x", favouriteColour="blue"), 400, "invalidSyntax"),
    ({"userName": "no.schemas"}, 400, None),
    (new_user("x", emails=[{"value": "x@example.com"}]), 400, None),  # emails.type required
])
def test_create_user_refusals(api: Api, body: dict[str, Any], status: int,
                              scim_type: str | None) -> None:
    err = scim_error(send(api, "POST", "/admin/v1/Users", body), status)
    if scim_type:
        assert err["scimType"] == scim_type
    assert api.ok("/admin/v1/Users", count=0)["totalResults"] == 4


def test_put_replaces_moves_last_modified_and_checks_if_match(api: Api) -> None:
    before = api.client.get(f"/admin/v1/Users/{U4['id']}", headers=api.headers)
    old_version = before.headers["etag"]
    body = new_user("wei.zhang", title="Engineer")
    stale = send(api, "PUT", f"/admin/v1/Users/{U4['id']}", body, **{"If-Match": "v-old"})
    scim_error(stale, 412)
    resp = send(api, "PUT", f"/admin/v1/Users/{U4['id']}", body, **{"If-Match": old_version})
    assert resp.status_code == 200, resp.text
    after = resp.json()
    assert after["title"] == "Engineer"
    assert after["meta"]["version"] != old_version == U4["meta"]["version"]
    assert resp.headers["etag"] == after["meta"]["version"]
    assert after["meta"]["lastModified"] > U4["meta"]["lastModified"]
    assert after["meta"]["created"] == U4["meta"]["created"]
    assert after["name"] == {"givenName": "Ann", "familyName": "Lee"}  # replaced, not merged
    # the old ETag no longer matches
    scim_error(send(api, "PUT", f"/admin/v1/Users/{U4['id']}", body,
                    **{"If-Match": f'W/"{old_version}"'}), 412)


def test_put_cannot_change_an_immutable_attribute(api: Api) -> None:
    body = new_user("jose.nunez", **{USER_EXTENSION: {"creationMechanism": "import"}})
    err = scim_error(send(api, "PUT", f"/admin/v1/Users/{U1['id']}", body), 400)
    assert err["scimType"] == "mutability"


def test_patch_user_operations(api: Api) -> None:
    path = f"/admin/v1/Users/{U1['id']}"
    resp = send(api, "PATCH", path, patch(
        {"op": "replace", "path": "name.givenName", "value": "Josefina"},
        {"op": "add", "path": "emails", "value": [{"value": "jn@home.example", "type": "home"}]},
        {"op": "remove", "path": 'emails[type eq "recovery"]'},
        {"op": "replace", "value": {"title": "Lead", USER_EXTENSION: {"isFederatedUser": True}}},
        {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:"
                             "department", "value": "R&D"},
    ))
    assert resp.status_code == 200, resp.text
    user = resp.json()
    assert user["name"]["givenName"] == "Josefina"
    assert [e["type"] for e in user["emails"]] == ["work", "home"]
    assert user["title"] == "Lead"
    assert user[USER_EXTENSION]["isFederatedUser"] is True
    assert user["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] == {
        "department": "R&D"}
    assert "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" in user["schemas"]
    assert api.ids("/admin/v1/Users", filter='name.givenName eq "josefina"') == [U1["id"]]


@pytest.mark.parametrize(("op", "scim_type"), [
    ({"op": "add", "path": "groups", "value": [{"value": "x"}]}, "mutability"),
    ({"op": "replace", "path": "id", "value": "x"}, "invalidPath"),
    ({"op": "replace", "path": 'emails[type eq "pager"].value', "value": "x"}, "noTarget"),
    ({"op": "remove"}, "noTarget"),
    ({"op": "move", "path": "title", "value": "x"}, "invalidSyntax"),
    ({"op": "replace", "path": "active", "value": "no"}, "invalidValue"),
    ({"op": "replace", "path": "emails[type eq", "value": "x"}, None),
])
def test_patch_refusals_leave_the_user_unchanged(api: Api, op: dict[str, Any],
                                                 scim_type: str | None) -> None:
    err = scim_error(send(api, "PATCH", f"/admin/v1/Users/{U1['id']}", patch(op)), 400)
    if scim_type:
        assert err.get("scimType") == scim_type
    assert api.ok(f"/admin/v1/Users/{U1['id']}")["meta"]["version"] == U1["meta"]["version"]


def test_patch_needs_a_patch_op_body(api: Api) -> None:
    scim_error(send(api, "PATCH", f"/admin/v1/Users/{U1['id']}", {"Operations": []}), 400)


def test_delete_user_removes_memberships_and_grants(api: Api) -> None:
    flt = f'app.value eq "{DEMO_APP_ID}" and grantee.type eq "User"'
    assert U3["id"] in {g["grantee"]["value"] for g in api.ok("/admin/v1/Grants", filter=flt,
                                                             count=100)["Resources"]}
    for uid in (U2["id"], U3["id"]):
        assert send(api, "DELETE", f"/admin/v1/Users/{uid}").status_code == 204
    scim_error(api.get(f"/admin/v1/Users/{U2['id']}"), 404)
    scim_error(send(api, "DELETE", f"/admin/v1/Users/{U2['id']}"), 404)
    eng = api.ok(f"/admin/v1/Groups/{G_ENG['id']}", attributes="members")
    assert [m["value"] for m in eng["members"]] == [U1["id"], U4["id"]]
    assert "members" not in api.ok(f"/admin/v1/Groups/{G_ADMINS['id']}", attributes="members")
    grantees = {g["grantee"]["value"] for g in api.ok("/admin/v1/Grants", filter=flt,
                                                      count=100)["Resources"]}
    assert grantees == {U1["id"], U4["id"]}  # U3's direct grant and U2's derived one are gone
    assert api.ok(f"/admin/v1/Grants/{GR_ENG['id']}")["id"] == GR_ENG["id"]
    scim_error(api.get(f"/admin/v1/Grants/{GR_U3['id']}"), 404)


def test_user_status_changer(api: Api) -> None:
    body = {"active": False, "schemas": [STATUS_CHANGER]}
    resp = send(api, "PUT", f"/admin/v1/UserStatusChanger/{U1['id']}", body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["active"] is False
    assert resp.json()["schemas"] == [STATUS_CHANGER]
    user = api.ok(f"/admin/v1/Users/{U1['id']}")
    assert user["active"] is False
    assert user["meta"]["lastModified"] > U1["meta"]["lastModified"]
    scim_error(send(api, "PUT", f"/admin/v1/UserStatusChanger/{U1['id']}", {"active": True}), 400)
    scim_error(send(api, "PUT", "/admin/v1/UserStatusChanger/nobody", body), 404)


def test_a_write_shows_in_the_next_delta_extract(api: Api) -> None:
    watermark = max(u["meta"]["lastModified"] for u in STATE["users"])
    flt = f'meta.lastModified gt "{watermark}"'
    assert api.ids("/admin/v1/Users", filter=flt) == []
    send(api, "PATCH", f"/admin/v1/Users/{U2['id']}",
         patch({"op": "replace", "path": "title", "value": "CTO"}))
    created = send(api, "POST", "/admin/v1/Users", new_user("new.person")).json()
    assert api.ids("/admin/v1/Users", filter=flt) == [U2["id"], created["id"]]


# --- groups -------------------------------------------------------------------------------------


def test_group_membership_patch_as_oracle_documents_it(api: Api) -> None:
    gid = G_ADMINS["id"]
    before_user = api.ok(f"/admin/v1/Users/{U4['id']}", attributeSets="all")
    add = patch({"op": "add", "path": "members", "value": [{"value": U4["id"], "type": "User"}]})
    resp = send(api, "PATCH", f"/admin/v1/Groups/{gid}", add)
    assert resp.status_code == 200, resp.text
    assert "members" not in resp.json()  # members are returned only on request
    members = api.ok(f"/admin/v1/Groups/{gid}", attributes="members")["members"]
    assert [m["value"] for m in members] == [U2["id"], U4["id"]]
    user = api.ok(f"/admin/v1/Users/{U4['id']}", attributeSets="all")
    assert gid in [g["value"] for g in user["groups"]]
    # membership is dated on the user's extension and the group, not on the user's meta
    assert user[USER_EXTENSION]["groupMembershipLastModified"] > U4["meta"]["lastModified"]
    assert user["meta"]["lastModified"] == before_user["meta"]["lastModified"]
    group = api.ok(f"/admin/v1/Groups/{gid}")
    assert group["meta"]["lastModified"] > G_ADMINS["meta"]["lastModified"]
    remove = patch({"op": "remove", "path": f'members[value eq "{U2["id"]}"]'})
    assert send(api, "PATCH", f"/admin/v1/Groups/{gid}", remove).status_code == 200
    assert api.ids("/admin/v1/Users", filter=f'groups.value eq "{gid}"') == [U4["id"]]


def test_group_writes_refusals(api: Api) -> None:
    unknown = patch({"op": "add", "path": "members", "value": [{"value": "0" * 32,
                                                                  "type": "User"}]})
    scim_error(send(api, "PATCH", f"/admin/v1/Groups/{G_ENG['id']}", unknown), 400)
    dup = {"schemas": [CORE_GROUP], "displayName": "ENGINEERING"}
    assert scim_error(send(api, "POST", "/admin/v1/Groups", dup), 409)["scimType"] == "uniqueness"
    scim_error(send(api, "DELETE", f"/admin/v1/Groups/{ALL_USERS_ID}"), 403)


def test_create_replace_and_delete_group(api: Api) -> None:
    body = {"schemas": [CORE_GROUP], "displayName": "Platform",
            "members": [{"value": U1["id"], "type": "User"}, {"value": U3["id"],
                                                                "type": "User"}]}
    resp = send(api, "POST", "/admin/v1/Groups", body)
    assert resp.status_code == 201, resp.text
    gid = resp.json()["id"]
    assert HEX32.match(gid)
    assert resp.json()["nonUniqueDisplayName"] == "Platform"
    body["members"] = [{"value": U4["id"], "type": "User"}]
    assert send(api, "PUT", f"/admin/v1/Groups/{gid}", body).status_code == 200
    assert api.ids("/admin/v1/Users", filter=f'groups.value eq "{gid}"') == [U4["id"]]
    state = api.client.app.state.emulator  # type: ignore[attr-defined]
    state.load_dict({**state.to_dict(), "grants": [*state.grants, {
        "id": "9" * 32, "app": {"value": DEMO_APP_ID},
        "grantee": {"type": "Group", "value": gid}}]})
    u4_grants = f'grantee.value eq "{U4["id"]}"'
    assert api.ok("/admin/v1/Grants", filter=u4_grants, count=0)["totalResults"] == 2
    assert send(api, "DELETE", f"/admin/v1/Groups/{gid}").status_code == 204
    # the group's grant and U4's derived grant went with it; Engineering's derived one stays
    assert api.ok("/admin/v1/Grants", filter=u4_grants, count=0)["totalResults"] == 1
    assert api.ok("/admin/v1/Groups", count=0)["totalResults"] == 5


def test_dynamic_group_members_follow_the_rule(api: Api) -> None:
    body = {"schemas": [CORE_GROUP, DYNAMIC], "displayName": "Partners",
            DYNAMIC: {"membershipType": "dynamic",
                      "membershipRule": 'emails.value ew "@partner.example.net"'}}
    resp = send(api, "POST", "/admin/v1/Groups", body)
    assert resp.status_code == 201, resp.text
    gid = resp.json()["id"]
    assert api.ids("/admin/v1/Users", filter=f'groups.value eq "{gid}"') == [U3["id"]]
    created = send(api, "POST", "/admin/v1/Users", new_user(
        "p2", emails=[{"value": "p2@partner.example.net", "type": "work", "primary": True}])).json()
    assert api.ids("/admin/v1/Users", filter=f'groups.value eq "{gid}"') == [U3["id"],
                                                                             created["id"]]
    groups = api.ok(f"/admin/v1/Users/{created['id']}", attributes="groups.value,groups.type")
    assert groups["groups"] == [{"value": gid, "type": "indirect"}]
    add = patch({"op": "add", "path": "members", "value": [{"value": U1["id"], "type": "User"}]})
    scim_error(send(api, "PATCH", f"/admin/v1/Groups/{gid}", add), 400)
    bad = {**body, "displayName": "Bad", DYNAMIC: {"membershipType": "dynamic",
                                                   "membershipRule": "emails.value eq"}}
    assert scim_error(send(api, "POST", "/admin/v1/Groups", bad), 400)["scimType"] == \
        "invalidFilter"


# --- bulk, media types, discovery ---------------------------------------------------------------


def test_bulk_with_bulk_id_references_and_the_50_operation_cap(api: Api) -> None:
    ops = [{"method": "POST", "path": "/Users", "bulkId": "u1", "data": new_user("bulk.one")},
           {"method": "POST", "path": "/Groups", "bulkId": "g1",
            "data": {"schemas": [CORE_GROUP], "displayName": "Bulk"}},
           {"method": "PATCH", "path": "/Groups/bulkId:g1", "data": patch(
               {"op": "add", "path": "members", "value": [{"value": U1["id"], "type": "User"}]})},
           {"method": "DELETE", "path": "/Users/nobody"}]
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}
    resp = send(api, "POST", "/admin/v1/Bulk", body)
    assert resp.status_code == 200, resp.text
    assert [o["status"] for o in resp.json()["Operations"]] == ["201", "201", "200", "404"]
    assert api.ids("/admin/v1/Users", filter='userName eq "bulk.one"')
    gid = resp.json()["Operations"][1]["location"].rsplit("/", 1)[1]
    assert api.ids("/admin/v1/Users", filter=f'groups.value eq "{gid}"') == [U1["id"]]
    body["Operations"] = [ops[3]] * 51
    scim_error(send(api, "POST", "/admin/v1/Bulk", body), 413)


def test_media_type_and_payload_size(api: Api) -> None:
    resp = api.client.post("/admin/v1/Users", content=b"userName=x",
                           headers={**api.headers, "Content-Type": "text/plain"})
    scim_error(resp, 415)
    big = new_user("big", title="x" * 1_100_000)
    scim_error(send(api, "POST", "/admin/v1/Users", big), 413)


def test_discovery_endpoints(api: Api) -> None:
    spc = api.ok("/admin/v1/ServiceProviderConfig")
    assert spc["patch"] == {"supported": True}
    assert spc["bulk"] == {"supported": True, "maxOperations": 50, "maxPayloadSize": 1_048_576}
    assert spc["filter"] == {"supported": True, "maxResults": 1000}
    assert spc["etag"]["supported"] and spc["sort"]["supported"]
    assert spc["changePassword"] == {"supported": False}
    types = api.ok("/admin/v1/ResourceTypes")
    assert [t["id"] for t in types["Resources"]] == ["User", "Group"]
    assert DYNAMIC in [e["schema"] for e in types["Resources"][1]["schemaExtensions"]]
    user_schema = api.ok(f"/admin/v1/Schemas/{CORE_USER}")
    by_name = {a["name"]: a for a in user_schema["attributes"]}
    assert by_name["userName"]["uniqueness"] == "global"
    assert by_name["groups"]["mutability"] == "readOnly"
    assert by_name["groups"]["returned"] == "request"
    assert api.get("/admin/v1/Schemas/urn:nope").status_code == 404
    assert api.client.post("/admin/v1/ServiceProviderConfig", headers=api.headers,
                           json={}).status_code == 405
    assert api.client.get("/admin/v1/Schemas").status_code == 401  # needs a token, like all


def test_custom_attributes_are_stored_filterable_and_projectable(api: Api) -> None:
    custom = "urn:ietf:params:scim:schemas:idcs:extension:custom:User"
    created = send(api, "POST", "/admin/v1/Users",
                   new_user("cc.user", **{custom: {"bitbucketGroups": ["devs", "ops"],
                                                   "costCode": "CC-7"}})).json()
    assert custom in created["schemas"]
    assert api.ids("/admin/v1/Users", filter=f'{custom}:costCode eq "cc-7"') == [created["id"]]
    only = api.ok(f"/admin/v1/Users/{created['id']}", attributes=f"{custom}:bitbucketGroups")
    assert only == {"id": created["id"], "userName": "cc.user",
                    custom: {"bitbucketGroups": ["devs", "ops"]}}


def test_excluded_attributes_is_ignored_as_idcs_documents_no_such_parameter(api: Api) -> None:
    plain = api.ok(f"/admin/v1/Users/{U1['id']}")
    assert api.ok(f"/admin/v1/Users/{U1['id']}", excludedAttributes="emails") == plain
    assert "emails" in plain
