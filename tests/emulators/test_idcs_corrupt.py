"""The IDCS emulator's broken-answer controls (``/_emulator/corruptions``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from identity_sync.emulators.idcs import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, create_idcs_app
from identity_sync.emulators.idcs_corpus import CASES, base_state, table

USERS = "/admin/v1/Users"


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_idcs_app()
    app.state.emulator.load_dict(base_state())
    with TestClient(app) as c:
        token = c.post("/oauth2/v1/token", auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET),
                       data={"grant_type": "client_credentials",
                             "scope": "urn:opc:idm:__myscopes__"}).json()["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def corrupt(client: TestClient, body: dict[str, Any]) -> None:
    assert client.put("/_emulator/corruptions", json=body).status_code == 200


def test_page_cap_pages_small_tenants_and_reset_clears_it(client: TestClient) -> None:
    corrupt(client, {"page_cap": 4})
    page = client.get(USERS, params={"startIndex": 9, "count": 1000}).json()
    assert page["totalResults"] == 10 and [r["id"] for r in page["Resources"]] == ["u09", "u10"]
    assert client.get("/_emulator/corruptions").json()["page_cap"] == 4
    client.post("/_emulator/reset")
    assert client.get("/_emulator/corruptions").json() == {"rules": [], "page_cap": None}


@pytest.mark.parametrize(("kind", "ctype", "check"), [
    ("not_json", "application/scim+json", lambda body: not body.startswith(b"{")),
    ("truncated", "application/scim+json", lambda body: body.startswith(b"{")
     and not body.endswith(b"}")),
    ("html_200", "text/html", lambda body: body.startswith(b"<!DOCTYPE html>")),
    ("content_type", "text/plain", lambda body: body.endswith(b"}")),
])
def test_broken_pages_are_served_with_status_200(client: TestClient, kind: str, ctype: str,
                                                 check: Any) -> None:
    corrupt(client, {"rules": [{"kind": kind, "start_index": 1, "times": 1}]})
    resp = client.get(USERS)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(ctype)
    assert check(resp.content)
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert client.get(USERS).json()["totalResults"] == 10  # times: 1 → healthy again


def test_repeat_previous_total_results_patch_and_append(client: TestClient) -> None:
    corrupt(client, {"page_cap": 3, "rules": [
        {"kind": "repeat_previous", "start_index": 4},
        {"kind": "patch", "match": {"id": "u02"}, "set": {"userName": None, "emails": "x"}},
        {"kind": "append", "value": [{"userName": "ghost"}]},
    ]})
    first = client.get(USERS, params={"startIndex": 1}).json()
    assert first["totalResults"] == 11
    assert [r.get("id") for r in first["Resources"]] == ["u01", "u02", "u03", None]
    assert "userName" not in first["Resources"][1] and first["Resources"][1]["emails"] == "x"
    second = client.get(USERS, params={"startIndex": 4}).json()
    assert second["startIndex"] == 4
    assert [r["id"] for r in second["Resources"]] == ["u01", "u02", "u03"]
    corrupt(client, {"rules": [{"kind": "total_results", "value": 99}]})
    assert client.get(USERS).json()["totalResults"] == 99


def test_unknown_kind_is_refused(client: TestClient) -> None:
    resp = client.put("/_emulator/corruptions", json={"rules": [{"kind": "explode"}]})
    assert resp.status_code == 400 and "explode" in resp.json()["error"]


def test_corpus_table_lists_every_case() -> None:
    text = table()
    assert all(f"`{c.name}`" in text for c in CASES)
    assert len(text.splitlines()) == len(CASES) + 2
