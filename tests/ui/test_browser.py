"""A real browser on the real thing: ``airflow standalone`` with the plugin, the emulators and a
sync run triggered through the REST API, then headless Chromium (Debian's ``/usr/bin/chromium``,
driven by Playwright; no browser is ever downloaded) logs in through Airflow's login page, opens
the "Identity sync" page from Airflow's navigation, checks what it shows against the audit
database, opens a user's timeline, and saves screenshots to ``test-artifacts/ui/``.

One IDCS user's display name is hostile HTML: the page must show it as text, and no dialog may
ever open."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from identity_sync.audit import views
from identity_sync.audit.store import AuditStore
from identity_sync.emulators.idcs import DEMO_APP_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from identity_sync.emulators.serve import Emulators, start_emulators
from identity_sync_airflow.standalone import admin_password, start_standalone, stop, wait_ready

from ..conftest import unavailable
from ..e2e.standalone import free_port, wait_for
from ..e2e.test_sync_dag import expected_state

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DAG_ID = "idcs_bitbucket_sync"
RUN_ID = "manual__ui_browser_test"
HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


def require_chromium() -> None:
    """Skip without a browser on a developer machine; fail under CI=true (CI installs it)."""
    if CHROMIUM.exists():
        return
    unavailable(f"{CHROMIUM} is missing", "install Debian's chromium package")


@dataclass
class Deployment:
    base: str
    password: str
    audit_url: str
    hostile_user: str
    idcs_url: str


def make_one_display_name_hostile(emulators: Emulators) -> str:
    """Give an active IDCS user granted the app a display name that is an XSS attempt."""
    state = emulators.idcs.server.config.app.state.emulator
    dump = state.to_dict()
    name = sorted(expected_state(dump)[0])[0]  # in scope, active, clean: will be created
    user = next(u for u in dump["users"] if u["userName"].lower() == name)
    user["displayName"] = HOSTILE
    state.load_dict(dump)
    return name


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_chromium()
    tmp = tmp_path_factory.mktemp("ui-browser")
    emulators = start_emulators(tmp / "emulators", users=40, groups=5, seed=5)
    hostile_user = make_one_display_name_hostile(emulators)
    audit_db = tmp / "audit.db"
    env = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in {
        **emulators.connections(),
        "sync_audit_db": {"conn_type": "sqlite", "host": str(audit_db)}}.items()}
    env["IDSYNC_SCHEDULE"] = "none"  # only the run this test triggers
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    home, port = tmp / "airflow", free_port()
    process = start_standalone(home, port)
    base = f"http://localhost:{port}"
    try:
        wait_ready(base)
        yield Deployment(base, admin_password(home), f"sqlite:///{audit_db}", hostile_user,
                         emulators.idcs.base_url)
    finally:
        stop(process)
        emulators.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = home / "standalone.log"
        if log.exists():
            (ARTIFACTS / "standalone.log").write_text(log.read_text(errors="replace")[-200_000:])


def answers(url: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """GET as JSON, or None while the (busy, shared) machine keeps the API server from
    answering in time: the caller's polling retries."""
    try:
        response = requests.get(url, headers=headers, timeout=30)
    except requests.RequestException:
        return None
    return response.json() if response.ok else None


def run_sync(d: Deployment) -> None:
    """Trigger the sync DAG through the REST API and wait for it to succeed."""
    token = requests.post(f"{d.base}/auth/token", json={"username": "admin",
                                                        "password": d.password},
                          timeout=60).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    wait_for(lambda: answers(f"{d.base}/api/v2/dags/{DAG_ID}", auth), 180,
             "the DAG processor to parse the DAG")
    assert requests.patch(f"{d.base}/api/v2/dags/{DAG_ID}", headers=auth, timeout=60,
                          json={"is_paused": False}).status_code == 200
    trigger = requests.post(f"{d.base}/api/v2/dags/{DAG_ID}/dagRuns", headers=auth, timeout=60,
                            json={"logical_date": None, "dag_run_id": RUN_ID, "conf": {}})
    assert trigger.status_code == 200, trigger.text

    def finished() -> str | None:
        run = answers(f"{d.base}/api/v2/dags/{DAG_ID}/dagRuns/{RUN_ID}", auth) or {}
        return run.get("state") if run.get("state") in ("success", "failed") else None

    assert wait_for(finished, 300, "the sync run to finish") == "success"


def add_idcs_connection_and_test_it(page: Any, d: Deployment) -> None:
    """The connection form shows the idcs type's own fields; its Test button reaches the
    emulator through IdcsHook.test_connection on the API server."""
    host, port = d.idcs_url.rsplit(":", 1)
    page.goto(f"{d.base}/connections")
    page.get_by_role("button", name="Add Connection").click()
    page.fill("input[name=connection_id]", "idcs_from_the_form")
    page.get_by_role("combobox").click()
    page.keyboard.type("Oracle IDCS")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    for label in ("Domain URL", "Client ID", "Client secret"):
        dialog.get_by_text(label, exact=True).wait_for()
    page.fill("input[name=host]", host)
    page.fill("input[name=port]", port)
    page.fill("input[name=login]", DEMO_CLIENT_ID)
    page.fill("input[name=password]", DEMO_CLIENT_SECRET)
    dialog.get_by_text("Extra Fields", exact=True).click()  # the accordion's next section
    for label in ("App ID", "OAuth scope", "Verify TLS certificate", "CA bundle path"):
        dialog.get_by_text(label, exact=True).wait_for()
    page.fill("input[name=element_app_id]", DEMO_APP_ID)
    page.screenshot(path=str(ARTIFACTS / "idcs-connection-form.png"), full_page=True)
    dialog.get_by_role("button", name="Save").click()
    row = page.get_by_role("row").filter(has_text="idcs_from_the_form")
    with page.expect_response("**/api/v2/connections/test") as tested:
        row.get_by_role("button", name="Test Connection").click()
    assert tested.value.json() == {"status": True,
                                   "message": "Connected: token issued, 40 users visible"}
    page.screenshot(path=str(ARTIFACTS / "idcs-connection-tested.png"), full_page=True)


def test_identity_sync_page_in_a_real_browser(deployment: Deployment) -> None:
    from playwright.sync_api import sync_playwright

    d = deployment
    run_sync(d)
    store = AuditStore(d.audit_url, migrate=False)
    expected_run = next(r for r in views.recent_runs(store) if r["run_id"] == RUN_ID)
    plan = store.plan(RUN_ID)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(60_000)
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

            # Not logged in: the page sends the browser to Airflow's login, then back.
            page.goto(f"{d.base}/identity-sync/")
            page.wait_for_url("**/auth/login**")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", d.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{d.base}/identity-sync/")
            row = page.locator(f'#runs tr[data-run-id="{RUN_ID}"]')
            cells = {col: row.locator(f'td[data-col="{col}"]').inner_text()
                     for col in ("operations", "done", "failed", "users", "groups",
                                 "memberships", "quarantined")}
            assert cells == {
                "operations": str(expected_run["operations"]), "done": str(expected_run["done"]),
                "failed": "0", "users": str(expected_run["changes"]["users"]),
                "groups": str(expected_run["changes"]["groups"]),
                "memberships": str(expected_run["changes"]["memberships"]),
                "quarantined": str(expected_run["quarantined"])}
            assert expected_run["done"] == len(plan) > 0
            page.screenshot(path=str(ARTIFACTS / "runs.png"), full_page=True)

            # The same page inside Airflow's UI, reached from the navigation.
            page.goto(f"{d.base}/")
            nav = page.get_by_role("link", name="Identity sync").first
            nav.wait_for()
            assert nav.get_attribute("href") == "/plugin/identity-sync"
            page.goto(f"{d.base}/plugin/identity-sync")
            frame = page.frame_locator("iframe").first
            frame.locator(f'#runs tr[data-run-id="{RUN_ID}"]').wait_for()
            page.screenshot(path=str(ARTIFACTS / "identity-sync-in-airflow.png"))

            # The run: every planned operation listed, the hostile display name as text.
            page.goto(f"{d.base}/identity-sync/")
            row.locator("a", has_text=RUN_ID).click()
            page.locator("#operations").wait_for()
            listed = page.locator("#operations tbody tr")
            assert listed.count() == min(len(plan), views.MAX_OPERATIONS)
            assert sorted(listed.evaluate_all("rows => rows.map(r => r.dataset.opId)")) == sorted(
                o["op_id"] for o in plan)[: views.MAX_OPERATIONS]
            assert page.get_by_text(HOSTILE, exact=False).count() >= 1
            assert page.locator("script").count() == 0 and page.locator("img").count() == 0
            page.screenshot(path=str(ARTIFACTS / "run.png"), full_page=True)

            # Filter by the user, then open their timeline.
            page.fill("input[name=user]", d.hostile_user)
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**user=**")
            user_rows = page.locator("#operations tbody tr")
            expected_ops = views.run_operations(store, RUN_ID,
                                                views.OperationFilter(user=d.hostile_user))
            assert user_rows.count() == expected_ops.matched > 0
            page.locator("#operations a", has_text=d.hostile_user).first.click()
            page.wait_for_url("**/identity-sync/user?who=**")
            _, events = views.timeline(store, d.hostile_user)
            assert page.locator("#timeline tbody tr").count() == len(events) > 0
            assert page.locator("#who").inner_text() == d.hostile_user
            page.screenshot(path=str(ARTIFACTS / "user-timeline.png"), full_page=True)

            add_idcs_connection_and_test_it(page, d)
        finally:
            browser.close()
            store.dispose()
    assert dialogs == []  # no injected script ever ran
