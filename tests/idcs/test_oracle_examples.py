"""The client parses payloads shaped exactly like Oracle's documented examples
(reference/idcs-api.md §5.3, §3.3, §6 and the SDK attribute metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests_mock

from identity_sync.http import HttpSettings
from identity_sync.idcs.client import IdcsApiError, IdcsClient
from identity_sync.idcs.extract import BASE_USER_ATTRIBUTES, extract_full, parse_user

IDCS = "https://idcs-0123456789abcdef0123456789abcdef.identity.oraclecloud.com"
METADATA = Path("/work/shared/reference/idcs-attribute-metadata.json")

# §5.3: GET /admin/v1/Users/{id} in identity domains (placeholders as in the docs)
USER = {
    "idcsCreatedBy": {"type": "App", "display": "Confidential App", "value": "<app_id>",
                      "ocid": "ocid1.domainapp.oc1.<unique_id>",
                      "$ref": "https://<domain_url>/admin/v1/Apps/<app_id>"},
    "id": "<user_id>",
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User": {
        "isFederatedUser": False, "preferredUiLandingPage": "MyApps"},
    "meta": {"created": "2024-10-24T19:07:26.810Z", "lastModified": "2024-10-24T19:07:26.810Z",
             "version": "ddf2b4979d704f3d813e2636630da678", "resourceType": "User",
             "location": "https://<domain_url>/admin/v1/Users/ocid1.user.oc1..<unique_id>"},
    "active": True, "displayName": "Barbara Jensen",
    "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Barbara Jensen"},
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:userState:User": {"locked": {"on": False}},
    "ocid": "ocid1.user.oc1..<unique_id>", "userName": "bjensen",
    "emails": [{"value": "bjensen@example.com", "type": "work", "secondary": False,
                "verified": False, "primary": True},
               {"value": "bjensen@example.com", "type": "recovery", "secondary": False,
                "verified": False, "primary": False}],
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:userState:User",
                "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"],
    "domainOcid": "ocid1.domain.oc1..<unique_id>", "compartmentOcid": "...", "tenancyOcid": "...",
    "urn:ietf:params:scim:schemas:oracle:idcs:extension:capabilities:User": {
        "canUseApiKeys": True, "...": "..."},
}
# §5.3: group list with members (D-PAM)
GROUPS = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 2,
    "Resources": [
        {"displayName": "Marketing", "id": "8c1f45fee6354e20aa9e57079082d6a2",
         "urn:ietf:params:scim:schemas:oracle:idcs:extension:posix:Group": {"gidNumber": 11020},
         "members": [{"value": "e5438fce80374d539b8638c289036ecd", "type": "User",
                      "display": "Mark Smith", "name": "msmith",
                      "$ref": "https://identity-cloud-service-instance-url/admin/v1/Users/"
                              "e5438fce80374d539b8638c289036ecd"}]},
        {"displayName": "All Tenant Users", "id": "AllUsersId"}],
    "startIndex": 1, "itemsPerPage": 50}
# §3.3: POST /admin/v1/Users/.search with attributes (itemsPerPage echoes the request)
SEARCH = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1,
          "Resources": [{"displayName": "Barbara Jensen", "userName": "bjensen",
                         "id": "<user_id>"}],
          "startIndex": 1, "itemsPerPage": 10}
# §6: error bodies (status is a string)
ERROR = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
         "detail": "Request failed: HTTP 400 Bad Request.", "status": "400"}
TOKEN = {"access_token": "eyJ4NXQjUzIc....", "token_type": "Bearer", "expires_in": 3600}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed.",
                  "ecid": "xxxx-ecid"}


def client(m: requests_mock.Mocker) -> IdcsClient:
    m.post(f"{IDCS}/oauth2/v1/token", json=TOKEN)
    return IdcsClient(IDCS, "cid", "secret", settings=HttpSettings(retries=0))


def test_documented_user_parses() -> None:
    user = parse_user(USER)
    assert (user.id, user.user_name, user.display_name, user.given_name, user.family_name,
            user.email, user.active, user.federated, user.group_ids) == (
        "<user_id>", "bjensen", "Barbara Jensen", "Barbara", "Jensen", "bjensen@example.com",
        True, False, ())


def test_documented_listings_page_by_resources_and_skip_all_tenant_users() -> None:
    with requests_mock.Mocker() as m:
        idcs = client(m)
        m.get(f"{IDCS}/admin/v1/Groups", json=GROUPS)
        m.get(f"{IDCS}/admin/v1/Users", json={**SEARCH, "Resources": [USER]})
        result = extract_full(idcs)
    assert [g.display_name for g in result.snapshot.groups] == ["Marketing"]
    assert [u.user_name for u in result.snapshot.users] == ["bjensen"]


def test_audit_events_list_urn_and_absent_resources_are_accepted() -> None:
    with requests_mock.Mocker() as m:
        idcs = client(m)
        m.get(f"{IDCS}/admin/v1/AuditEvents", json={
            "schemas": ["urn:scim:api:messages:2.0:ListResponse"], "totalResults": 0,
            "startIndex": 1, "itemsPerPage": 50})
        assert idcs.list_all("/admin/v1/AuditEvents") == []


def test_documented_error_bodies_become_one_line_errors() -> None:
    with requests_mock.Mocker() as m:
        idcs = client(m)
        m.get(f"{IDCS}/admin/v1/Users", status_code=400, json=ERROR,
              headers={"X-ORACLE-DMS-ECID": "005abc-def"})
        with pytest.raises(IdcsApiError) as raised:
            idcs.get("/admin/v1/Users")
    assert str(raised.value) == ("IDCS 400 on GET /admin/v1/Users: HTTP 400: Request failed: "
                                 "HTTP 400 Bad Request. [X-ORACLE-DMS-ECID: 005abc-def]")
    with requests_mock.Mocker() as m:
        m.post(f"{IDCS}/oauth2/v1/token", status_code=401, json=INVALID_CLIENT)
        with pytest.raises(IdcsApiError, match="invalid_client: Client authentication failed"):
            IdcsClient(IDCS, "cid", "bad", settings=HttpSettings(retries=0)).token()


def test_the_attributes_requested_exist_in_oracles_metadata() -> None:
    """Every attribute the extract projects is a documented User (or Oracle extension)
    attribute, so a real tenant returns what the emulator does."""
    models = json.loads(METADATA.read_text())["models"]
    documented = set(models["User"]["attributes"])
    extension = set(models["ExtensionUserUser"]["attributes"])
    for attribute in (*BASE_USER_ATTRIBUTES, "groups"):
        urn, _, name = attribute.rpartition(":")
        assert (name in extension) if urn else (name in documented), attribute
