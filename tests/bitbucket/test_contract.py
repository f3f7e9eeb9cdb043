"""Contract tests: the emulator's answers checked against Atlassian's OpenAPI 3.0 excerpt for
Bitbucket DC 9.4 (status code listed for the operation, body valid against its schema).

The spec's known defects (reference §13) and the emulator's documented guesses are listed in
``EXCEPTIONS`` with the reason; everything else must match the spec as published.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.testclient import TestClient

from identity_sync.emulators.bitbucket import (
    DEFAULT_GROUP,
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)

# Atlassian's published OpenAPI 3 spec for Bitbucket DC 9.4, the admin subset, kept with the tests
# so a fresh clone checks the emulator against it (provenance: the file's x-extracted-from key).
SPEC_FILE = Path(__file__).resolve().parent / "spec" / "bitbucket-dc-9.4-openapi.admin.json"
SPEC: dict[str, Any] = json.loads(SPEC_FILE.read_text())

API = "/rest/api/1.0"
page_of = {"type": "object", "required": ["values", "isLastPage", "size", "start", "limit"]}

# (spec path, method, status) -> (schema to use instead, or None to skip the body check; why)
EXCEPTIONS: dict[tuple[str, str, str], tuple[dict[str, Any] | None, str]] = {
    ("/api/latest/admin/users/more-members", "get", "200"): (
        {"$ref": "#/components/schemas/RestDetailedGroup"},
        "spec defect: values are groups, not RestDetailedUser (reference §5, §13)"),
    ("/api/latest/admin/permissions/users", "get", "200"): (
        {"type": "object", "required": ["user", "permission"],
         "properties": {"user": {"$ref": "#/components/schemas/RestApplicationUser"},
                        "permission": {"type": "string"}}},
        "spec defect: values are {user, permission}, typed RestPermittedGroup (reference §7)"),
    ("/api/latest/users", "get", "200"): (
        {"$ref": "#/components/schemas/RestApplicationUser"},
        "spec defect: typed as one RestApplicationUser without the page wrapper (§13)"),
    ("/api/latest/admin/user-directories", "get", "200"): (
        {"type": "object", "required": ["name", "type"],
         "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                        "isActive": {"type": "boolean"}, "description": {"type": "string"}}},
        "spec defect: typed as a single RestUserDirectory; DC 10.2.2 sends a list of objects "
        "with isActive (reference §6). Paging is UNCERTAIN"),
}
# Statuses the emulator answers that the spec does not list for the operation.
UNLISTED_STATUSES = {
    ("/api/latest/admin/groups/more-members", "get", "404"):
        "missing group: NoSuchGroupException (the spec lists only 401)",
    ("/api/latest/admin/rate-limit/settings/users/{userSlug}", "put", "404"):
        "unknown slug: answered like every other {userSlug} path (spec lists 400/401 only)",
}


# Schema fixes applied before validation, each a documented difference from the spec.
SCHEMA_PATCHES: dict[str, dict[str, Any]] = {
    # Live 401 bodies carry "context": null (reference §12); the spec types it as a string.
    "RestErrorMessage": {"properties": {"context": {"type": "string", "nullable": True},
                                        "exceptionName": {"type": "string"},
                                        "message": {"type": "string"}}},
}


def resolve(schema: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: inline ``$ref``s (with ``SCHEMA_PATCHES``), turn
    ``nullable`` into a type union, drop OpenAPI-only keywords. ``writeOnly`` properties stay
    allowed: ``links`` is marked writeOnly yet every real answer carries it."""
    if isinstance(schema, list):
        return [resolve(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return resolve(copy.deepcopy(SCHEMA_PATCHES.get(name)
                                     or SPEC["components"]["schemas"][name]))
    out = {k: resolve(v) for k, v in schema.items()
           if k not in ("example", "writeOnly", "readOnly", "format")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def response_schema(path: str, method: str, status: str) -> dict[str, Any] | None:
    responses = SPEC["paths"][path][method]["responses"]
    assert status in responses or (path, method, status) in UNLISTED_STATUSES, (
        f"{method.upper()} {path} answered {status}; the spec lists {sorted(responses)}")
    if status not in responses:  # an unlisted error: it must still be the errors envelope
        status = "401"
    content = responses.get(status, {}).get("content") or {}
    return next(iter(content.values()), {}).get("schema")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Objects in answers must not carry properties the spec does not define."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("properties"):
                node.setdefault("additionalProperties", False)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def check(resp: httpx.Response, path: str, method: str) -> None:
    status = str(resp.status_code)
    key = (path, method, status)
    schema = response_schema(path, method, status)
    if key in EXCEPTIONS:
        item, _why = EXCEPTIONS[key]
        body = resp.json()
        if path == "/api/latest/users" or "values" in body:
            jsonschema.validate(body, page_of)
            for value in body["values"]:
                jsonschema.validate(value, strict(resolve(item)))
        return
    if schema is None:
        assert resp.content == b"", f"{method.upper()} {path} {status}: expected no body"
        return
    body = resp.json()
    if status >= "400":
        assert body["errors"], "the errors envelope must hold at least one error"
    jsonschema.validate(body, strict(resolve(schema)))
    if "values" in (schema.get("properties") or {}):
        jsonschema.validate(body, page_of)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_bitbucket_app()) as test_client:
        test_client.auth = (DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD)
        yield test_client


def call(client: TestClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send to the real path; validate against the spec path (``/api/latest`` prefix)."""
    spec_path = kwargs.pop("spec_path", path)
    url = API + path.format(**kwargs.pop("path_params", {}))
    resp = client.request(method, url, **kwargs)
    check(resp, f"/api/latest{spec_path}", method.lower())
    return resp


def test_user_lifecycle_answers_match_the_spec(client: TestClient) -> None:
    new = {"name": "alice", "displayName": "Alice", "emailAddress": "a@x.io", "password": "p"}
    assert call(client, "POST", "/admin/users", params=new).status_code == 204
    assert call(client, "POST", "/admin/users", params=new).status_code == 409
    assert call(client, "POST", "/admin/users", params={"name": "b"}).status_code == 400
    assert call(client, "GET", "/admin/users", params={"limit": 1}).json()["nextPageStart"] == 1
    body = {"name": "alice", "displayName": "Alice A", "email": "aa@x.io"}
    assert call(client, "PUT", "/admin/users", json=body).json()["emailAddress"] == "aa@x.io"
    assert call(client, "PUT", "/admin/users", json={"name": "ghost"}).status_code == 404
    assert call(client, "POST", "/admin/users/rename",
                json={"name": "alice", "newName": "alicia"}).status_code == 200
    creds = {"name": "alicia", "password": "n", "passwordConfirm": "n"}
    assert call(client, "PUT", "/admin/users/credentials", json=creds).status_code == 204
    assert call(client, "PUT", "/admin/users/credentials",
                json={**creds, "passwordConfirm": "x"}).status_code == 400
    assert call(client, "PUT", "/admin/users/credentials",
                json={**creds, "name": "ghost"}).status_code == 404
    assert call(client, "GET", "/users/{userSlug}", spec_path="/users/{userSlug}",
                path_params={"userSlug": "alicia"}).json()["name"] == "alicia"
    assert call(client, "GET", "/users/{userSlug}", path_params={"userSlug": "nope"},
                ).status_code == 404
    assert call(client, "GET", "/users", params={"permission": "ADMIN"}).status_code == 200
    assert call(client, "GET", "/users", params={"permission": "BOSS"}).status_code == 400
    assert call(client, "DELETE", "/admin/users", params={"name": DEMO_ADMIN_USER}
                ).status_code == 409
    assert call(client, "DELETE", "/admin/users", params={"name": "alicia"}).status_code == 200
    assert call(client, "DELETE", "/admin/users", params={"name": "alicia"}).status_code == 404


def test_group_and_membership_answers_match_the_spec(client: TestClient) -> None:
    client.post(f"{API}/admin/users", params={"name": "bob", "displayName": "Bob",
                                              "emailAddress": "b@x.io", "password": "p"})
    assert call(client, "POST", "/admin/groups", params={"name": "devs"}).status_code == 200
    assert call(client, "POST", "/admin/groups", params={"name": "DEVS"}).status_code == 409
    assert call(client, "GET", "/admin/groups").status_code == 200
    assert call(client, "GET", "/groups").json()["values"] == ["devs", DEFAULT_GROUP]
    add = {"group": "devs", "users": ["bob"]}
    assert call(client, "POST", "/admin/groups/add-users", json=add).status_code == 200
    assert call(client, "POST", "/admin/groups/add-users",
                json={**add, "users": ["bob", "ghost"]}).status_code == 404
    assert call(client, "POST", "/admin/users/add-groups",
                json={"user": "bob", "groups": ["devs"]}).status_code == 200
    assert call(client, "GET", "/admin/groups/more-members",
                params={"context": "devs"}).json()["values"][0]["name"] == "bob"
    assert call(client, "GET", "/admin/groups/more-members",
                params={"context": "nope"}).status_code == 404
    assert call(client, "GET", "/admin/groups/more-non-members",
                params={"context": "devs"}).status_code == 200
    assert call(client, "GET", "/admin/users/more-members",
                params={"context": "bob"}).json()["values"][0]["name"] == "devs"
    assert call(client, "GET", "/admin/users/more-non-members",
                params={"context": "bob"}).status_code == 200
    assert call(client, "POST", "/admin/users/remove-group",
                json={"context": "bob", "itemName": "devs"}).status_code == 200
    assert call(client, "POST", "/admin/groups/add-user",
                json={"context": "devs", "itemName": "bob"}).status_code == 200
    assert call(client, "POST", "/admin/groups/remove-user",
                json={"context": "devs", "itemName": "bob"}).status_code == 200
    assert call(client, "POST", "/admin/users/add-group",
                json={"context": "bob", "itemName": "devs"}).status_code == 200
    assert call(client, "DELETE", "/admin/groups", params={"name": "devs"}).status_code == 200
    assert call(client, "DELETE", "/admin/groups", params={"name": "devs"}).status_code == 404


def test_permission_answers_match_the_spec(client: TestClient) -> None:
    client.post(f"{API}/admin/groups", params={"name": "devs"})
    grant = {"name": "devs", "permission": "PROJECT_CREATE"}
    assert call(client, "PUT", "/admin/permissions/groups", params=grant).status_code == 204
    assert call(client, "PUT", "/admin/permissions/groups",
                params={**grant, "permission": "BOSS"}).status_code == 400
    assert call(client, "GET", "/admin/permissions/groups").json()["size"] == 2
    assert call(client, "GET", "/admin/permissions/groups/none").status_code == 200
    assert call(client, "DELETE", "/admin/permissions/groups", params={"name": "devs"}
                ).status_code == 204
    assert call(client, "DELETE", "/admin/permissions/groups", params={"name": "nope"}
                ).status_code == 404
    user = {"name": "admin", "permission": "LICENSED_USER"}  # a sysadmin is not below us
    assert call(client, "PUT", "/admin/permissions/users", params=user).status_code == 204
    assert call(client, "GET", "/admin/permissions/users").status_code == 200
    assert call(client, "GET", "/admin/permissions/users/none").status_code == 200
    assert call(client, "DELETE", "/admin/permissions/users", params={"name": DEMO_ADMIN_USER}
                ).status_code == 409


def test_directory_and_rate_limit_answers_match_the_spec(client: TestClient) -> None:
    assert call(client, "GET", "/admin/user-directories").json()["values"][0]["isActive"]
    settings = {"enabled": True, "defaultSettings": {"capacity": 100, "fillRate": 10}}
    assert call(client, "PUT", "/admin/rate-limit/settings", json=settings).json() == settings
    assert call(client, "GET", "/admin/rate-limit/settings").json() == settings
    assert call(client, "PUT", "/admin/rate-limit/settings",
                json={"defaultSettings": {"capacity": 0}}).status_code == 400
    slug = {"userSlug": DEMO_ADMIN_USER}
    path = "/admin/rate-limit/settings/users/{userSlug}"
    assert call(client, "GET", path, path_params=slug).status_code == 404  # nothing set yet
    put = call(client, "PUT", path, path_params=slug, json={"whitelisted": True})
    assert put.json()["whitelisted"] is True and put.json()["user"]["name"] == DEMO_ADMIN_USER
    assert call(client, "PUT", path, path_params={"userSlug": "ghost"},
                json={"whitelisted": True}).status_code == 404
    assert call(client, "PUT", path, path_params=slug, json={}).status_code == 400
    assert call(client, "GET", path, path_params=slug).json()["whitelisted"] is True
    bulk = {"usernames": ["admin"], "settings": {"capacity": 5, "fillRate": 1}}
    assert call(client, "POST", "/admin/rate-limit/settings/users", json=bulk).json() == {
        "whitelisted": False, "settings": {"capacity": 5, "fillRate": 1}}
    listed = call(client, "GET", "/admin/rate-limit/settings/users").json()["values"]
    assert [e["user"]["name"] for e in listed] == ["admin", DEMO_ADMIN_USER]
    assert call(client, "GET", "/admin/rate-limit/history").status_code == 200
    assert call(client, "DELETE", path, path_params=slug).status_code == 204
    assert call(client, "DELETE", path, path_params=slug).status_code == 404


def test_auth_failures_match_the_spec(client: TestClient) -> None:
    client.auth = ("sync-admin", "wrong")
    for path, method in [("/admin/users", "GET"), ("/admin/groups", "POST"),
                         ("/admin/rate-limit/settings", "GET")]:
        assert call(client, method, path, params={"name": "x"}).status_code == 401


def test_resolve_handles_nullable_and_refs() -> None:
    schema = resolve({"type": "object", "properties": {
        "a": {"type": "string", "nullable": True},
        "b": {"$ref": "#/components/schemas/RestDetailedGroup"}}})
    jsonschema.validate({"a": None, "b": {"name": "g", "deletable": True}}, strict(schema))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"b": {"name": 1}}, schema)
    with pytest.raises(jsonschema.ValidationError):  # strict: no undocumented properties
        jsonschema.validate({"b": {"name": "g", "extra": 1}}, strict(schema))
