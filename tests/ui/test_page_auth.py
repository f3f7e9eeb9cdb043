"""The plugin inside Airflow's own API app (``airflow.api_fastapi.app.create_app``, as the API
server builds it): mounted at /identity-sync, listed as a nav view, reading the audit store of
the ``sync_audit_db`` connection, and guarded by Airflow's auth manager (simple auth manager)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from .conftest import Seeded
from .html_tables import PageReader


@pytest.fixture(scope="module")
def airflow_app(airflow_db) -> Iterator[Any]:
    from airflow.api_fastapi.app import create_app, purge_cached_app

    app = create_app(apps="core")
    yield app
    purge_cached_app()


@pytest.fixture
def client(airflow_app, seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    host = seeded.url.removeprefix("sqlite:///")
    monkeypatch.setenv("AIRFLOW_CONN_SYNC_AUDIT_DB",
                       json.dumps({"conn_type": "sqlite", "host": host}))
    with TestClient(airflow_app, base_url="http://localhost:8080") as c:
        yield c


def token(role: str | None, username: str = "someone") -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def test_plugin_is_registered_as_app_and_nav_view(client) -> None:
    auth = {"Authorization": f"Bearer {token('admin')}"}
    errors = client.get("/api/v2/plugins/importErrors", headers=auth).json()["import_errors"]
    # Airflow also executes every module under plugins/ on its own: none may fail there.
    assert [e for e in errors if "identity_sync" in e["source"]] == []
    plugins = client.get("/api/v2/plugins", headers=auth).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "identity_sync")
    assert ours["fastapi_apps"][0]["url_prefix"] == "/identity-sync"
    view = ours["external_views"][0]
    assert (view["href"], view["url_route"], view["destination"]) == (
        "/identity-sync/", "identity-sync", "nav")


def test_unauthenticated_api_client_gets_401(client) -> None:
    for path in ("/identity-sync/", "/identity-sync/run?id=x", "/identity-sync/user?who=a"):
        response = client.get(path, headers={"Accept": "application/json"})
        assert response.status_code == 401, path
        assert "data-run-id" not in response.text  # no page content leaked


def test_unauthenticated_browser_is_sent_to_login_and_back(client) -> None:
    response = client.get("/identity-sync/run?id=x", headers={"Accept": "text/html"},
                          follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/auth/login?next=")
    assert "identity-sync%2Frun" in response.headers["location"]


def test_bad_token_and_user_without_role_are_refused(client) -> None:
    bad = client.get("/identity-sync/", headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code in (401, 403)
    no_role = client.get("/identity-sync/", headers={"Authorization": f"Bearer {token(None)}"})
    assert no_role.status_code == 403 and "idcs_bitbucket_sync" in no_role.text


def test_a_viewer_is_refused_the_identity_audit(client) -> None:
    """Least privilege: the page holds everyone's names, e-mails and groups. A Viewer (may look
    at DAGs) gets 403 naming what is missing, for the page and its API alike."""
    auth = {"Authorization": f"Bearer {token('viewer')}"}
    for path in ("/identity-sync/", "/identity-sync/run?id=x", "/identity-sync/user?who=a"):
        response = client.get(path, headers=auth)
        assert response.status_code == 403, path
        assert "operating the runs of idcs_bitbucket_sync" in response.text
        assert "idcs_bitbucket_login_sync" in response.text  # every DAG it shows is checked
        assert "data-run-id" not in response.text


def test_every_permission_is_asked_of_the_auth_manager(client, monkeypatch) -> None:
    """The custom view ``Identity sync`` and, for both DAGs, reading and operating runs."""
    from airflow.api_fastapi.app import get_auth_manager

    manager, asked = get_auth_manager(), []
    monkeypatch.setattr(manager, "is_authorized_custom_view", lambda **kw: asked.append(
        ("view", kw["resource_name"], kw["method"])) or kw["resource_name"] != "Identity sync")
    monkeypatch.setattr(manager, "is_authorized_dag", lambda **kw: asked.append(
        ("dag", kw["details"].id, kw["method"])) or True)
    response = client.get("/identity-sync/", headers={
        "Authorization": f"Bearer {token('admin')}"})
    assert response.status_code == 403 and "'Identity sync' view" in response.text
    assert set(asked) == {("view", "Identity sync", "GET"),
                          *(("dag", d, m) for d in ("idcs_bitbucket_sync",
                                                    "idcs_bitbucket_login_sync")
                            for m in ("GET", "PUT"))}


@pytest.mark.parametrize("role", ["user", "op", "admin"])
def test_logged_in_users_see_the_audit_by_header_or_ui_cookie(client, seeded, role) -> None:
    by_header = client.get("/identity-sync/", headers={"Authorization": f"Bearer {token(role)}"})
    assert by_header.status_code == 200
    client.cookies.set("_token", token(role))
    by_cookie = client.get("/identity-sync/")
    client.cookies.clear()
    assert by_cookie.status_code == 200
    runs = [r.attrs["data-run-id"] for r in PageReader(by_cookie.text).tables["runs"]]
    assert runs == [seeded.second, seeded.first]
