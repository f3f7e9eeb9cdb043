"""The "Identity sync" page app with Starlette's TestClient: what it shows for a known audit
history, its filters, the timeline, escaping of hostile names, and the empty-database notice.
Authentication is replaced here; ``test_page_auth.py`` checks the real one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from identity_sync.audit.store import AuditStore
from identity_sync_airflow.ui.airflow_auth import airflow_user
from identity_sync_airflow.ui.sync_page import SECURITY_HEADERS, create_app

from .conftest import ERROR_TEXT, IMG_NAME, SCRIPT_NAME, Seeded
from .html_tables import PageReader

COLUMNS = ["run", "status", "started", "operations", "done", "failed", "pending",
           "users", "groups", "memberships", "quarantined", "message"]


def client_for(store_factory) -> TestClient:
    app = create_app(store_factory)
    app.dependency_overrides[airflow_user] = lambda: "tester"
    return TestClient(app, root_path="/identity-sync")


@pytest.fixture
def client(seeded: Seeded) -> Iterator[TestClient]:
    with client_for(lambda: seeded.store) as c:
        yield c


def page(client: TestClient, path: str, **params: str) -> PageReader:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert "text/html" in response.headers["content-type"]
    return PageReader(response.text)


def test_overview_lists_runs_newest_first_with_counts_and_links(client, seeded) -> None:
    reader = page(client, "/")
    rows = {r.attrs["data-run-id"]: r for r in reader.tables["runs"]}
    assert list(rows) == [seeded.second, seeded.first]
    def cells(run_id: str) -> dict[str, str]:
        return {col: row.cells[i] for row in [rows[run_id]]
                for i, col in enumerate(COLUMNS)}

    first, second = cells(seeded.first), cells(seeded.second)
    assert (first["status"], first["operations"], first["done"], first["failed"]) == (
        "succeeded", "4", "4", "0")
    # one group, two users created, and the batch add counts each of its two members
    assert (first["users"], first["groups"], first["memberships"]) == ("2", "1", "2")
    assert (second["status"], second["done"], second["failed"], second["quarantined"]) == (
        "failed", "2", "1", "1")
    assert (second["users"], second["groups"], second["memberships"]) == ("1", "0", "1")
    assert IMG_NAME in second["message"]
    hrefs = [a["href"] for a in reader.tags("a")]
    assert f"/dags/idcs_bitbucket_sync/runs/{quote(seeded.second, safe='')}" in hrefs
    assert f"/identity-sync/run?id={quote(seeded.first, safe='')}" in hrefs
    bars = [g["data-run-id"] for g in reader.tags("g")]
    assert bars == [seeded.first, seeded.second]  # oldest on the left
    assert {r["class"] for r in reader.tags("rect") if r.get("class")} == {
        "users", "groups", "memberships", "failed"}


def test_run_page_shows_operations_with_old_new_values_errors_dq_and_quarantine(
        client, seeded) -> None:
    reader = page(client, "/run", id=seeded.second)
    ops = reader.tables["operations"]
    assert [r.attrs["data-kind"] for r in ops] == ["rename_user", "create_user",
                                                  "remove_membership"]
    rename, create, remove = (r.cells for r in ops)
    assert "name: alice → alice.smith" in rename[7]
    assert create[8:12] == ["failed", "2", "400", ERROR_TEXT]
    assert remove[5] == "ops" and "member: true → false" in remove[7]
    assert reader.tables["dq"][0].cells[:5] == ["idcs_users", "email_format", "record",
                                                "failed", "1"]
    assert reader.tables["quarantine"][0].cells[:4] == ["user", "id-quarantined",
                                                        "invalid email", "email_format"]
    by_kind = {r.cells[0]: r.cells[1:] for r in reader.tables["by-kind"]}
    assert set(by_kind) == {"rename_user", "create_user", "remove_membership"}


@pytest.mark.parametrize(("filters", "kinds"), [
    ({"user": "ALICE"}, ["rename_user"]),             # case-insensitive, old or new name
    ({"user": "smith"}, ["rename_user"]),
    ({"user": "id-img"}, ["create_user"]),            # an IDCS id
    ({"user": "bob"}, ["remove_membership"]),
    ({"group": "ops"}, ["remove_membership"]),
    ({"kind": "create_user"}, ["create_user"]),
    ({"status": "done"}, ["rename_user", "remove_membership"]),
    ({"status": "done", "user": "bob"}, ["remove_membership"]),
    ({"user": "nobody"}, []),
])
def test_operation_filters(client, seeded, filters, kinds) -> None:
    reader = page(client, "/run", id=seeded.second, **filters)
    assert [r.attrs["data-kind"] for r in reader.tables["operations"]] == kinds
    selected = {o.get("value", "") for o in reader.tags("option") if "selected" in o}
    assert filters.get("kind", "") in selected or not filters.get("kind")


def test_batch_add_is_found_by_each_member_and_by_group(client, seeded) -> None:
    by_member = page(client, "/run", id=seeded.first, user=SCRIPT_NAME)
    assert [r.attrs["data-kind"] for r in by_member.tables["operations"]] == [
        "create_user", "add_members"]
    by_group = page(client, "/run", id=seeded.first, group="dev")
    assert [r.attrs["data-kind"] for r in by_group.tables["operations"]] == [
        "create_group", "add_members"]


def test_user_timeline_follows_a_rename(client, seeded) -> None:
    reader = page(client, "/user", who="alice.smith")
    events = [(r.attrs["data-event"], r.attrs["data-kind"]) for r in reader.tables["timeline"]]
    assert ("planned", "create_user") in events and ("planned", "rename_user") in events
    assert ("planned", "add_members") in events
    assert events.index(("planned", "create_user")) < events.index(("planned", "rename_user"))
    runs = {r.cells[1] for r in reader.tables["timeline"]}
    assert runs == {seeded.first, seeded.second}


def test_hostile_names_and_errors_are_escaped_everywhere(client, seeded) -> None:
    pages = [client.get("/"), client.get("/run", params={"id": seeded.first}),
             client.get("/run", params={"id": seeded.second}),
             client.get("/run", params={"id": seeded.second, "user": IMG_NAME}),
             client.get("/user", params={"who": SCRIPT_NAME}),
             client.get("/user", params={"who": IMG_NAME})]
    for response in pages:
        assert response.status_code == 200
        reader = PageReader(response.text)
        assert reader.tags("script") == [] and reader.tags("img") == []
        assert not any(name.startswith("on") for _, attrs in reader.elements for name in attrs)
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
        for header, value in SECURITY_HEADERS.items():
            assert response.headers[header] == value
    first = PageReader(pages[1].text)
    assert SCRIPT_NAME in [r.cells[3] for r in first.tables["operations"]]  # shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1].text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in pages[2].text
    timeline = PageReader(pages[4].text)
    assert {r.cells[4] for r in timeline.tables["timeline"]} >= {SCRIPT_NAME}


def test_unknown_run_is_a_404_page(client) -> None:
    response = client.get("/run", params={"id": "<nope>"})
    assert response.status_code == 404 and "&lt;nope&gt;" in response.text


def test_empty_audit_database_is_a_notice(tmp_path: Path, caplog) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'empty.db'}", migrate=False)
    with client_for(lambda: store) as c:
        response = c.get("/")
    assert response.status_code == 503 and "sync_audit_db" in response.text
    assert "no such table" in caplog.text  # the detail is logged, never shown


def test_database_errors_never_show_hosts_users_or_sql(caplog) -> None:
    """A PostgreSQL that refuses the connection: the page says so generically; its message
    (host, port, user) is only in the API server's log."""
    url = "postgresql://audit_reader:pw@db-internal.example.invalid:5999/sync_audit"
    store = AuditStore(url, migrate=False)
    with client_for(lambda: store) as c:
        response = c.get("/")
    assert response.status_code == 503
    for secret in ("db-internal", "audit_reader", "5999", "sync_audit ", "SELECT"):
        assert secret not in response.text, secret
    assert "db-internal.example.invalid" in caplog.text


def test_run_page_names_the_approver_of_a_gated_plan(client, seeded) -> None:
    seeded.store.update_run(seeded.second, approved_by="alice.approver")
    response = client.get("/run", params={"id": seeded.second})
    assert response.status_code == 200
    assert "<dt>Approved by</dt><dd>alice.approver</dd>" in response.text
