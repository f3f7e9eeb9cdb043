"""The "Identity sync" page: recent runs, one run's plan and operations, data quality, quarantine
and a per-user timeline, rendered on the server from the audit store.

Jinja2 autoescapes every value, and the responses carry a Content-Security-Policy without
scripts, so a user named ``<script>…`` is shown, never run. The audit store is opened read-only
in spirit: never migrated from here (the DAG owns the schema), only queried.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from identity_sync.audit import views
from identity_sync.audit.store import AuditStore
from identity_sync_airflow.ui.airflow_auth import airflow_user, login_url
from identity_sync_airflow.ui.run_chart import changes_chart

log = logging.getLogger(__name__)

URL_PREFIX = "/identity-sync"
TEMPLATES = Path(__file__).resolve().parent / "templates"
SECURITY_HEADERS = {
    # No script at all; inline <style> only; framed only by Airflow's own UI (same origin).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
StoreFactory = Callable[[], AuditStore]
AirflowUser = Annotated[Any, Depends(airflow_user)]


@cache
def _store_for(url: str) -> AuditStore:
    return AuditStore(url, migrate=False)


def store_from_connection() -> AuditStore:
    """The audit store of the ``sync_audit_db`` connection (one engine per URL)."""
    from identity_sync_airflow.hooks import AuditStoreHook

    return _store_for(AuditStoreHook().sqlalchemy_url())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _duration(run: dict[str, Any]) -> str:
    if not run.get("started_at") or not run.get("ended_at"):
        return ""
    seconds = (run["ended_at"] - run["started_at"]).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _show(value: Any, limit: int = 160) -> str:
    """A JSON-ish value as short text (escaping is the template's job)."""
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, duration=_duration, show=_show, q=quote)
    env.globals.update(changes=views.value_changes)
    return env


def create_app(store_factory: StoreFactory = store_from_connection) -> FastAPI:
    """The page as a FastAPI app, to mount at :data:`URL_PREFIX` (``store_factory`` is how
    tests hand it a store of their own)."""
    app = FastAPI(title="Identity sync", docs_url=None, redoc_url=None, openapi_url=None)
    env = _environment()

    def render(request: Request, template: str, status_code: int = 200, **context: Any
               ) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        airflow_root = root.removesuffix(URL_PREFIX)
        html = env.get_template(template).render(root=root, airflow_root=airflow_root,
                                                 request=request, **context)
        return HTMLResponse(html, status_code=status_code)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def to_login(request: Request, exc: StarletteHTTPException) -> Response:
        """A browser without a session goes to Airflow's login and comes back; API clients
        get the plain 401."""
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        return await http_exception_handler(request, exc)

    @app.exception_handler(SQLAlchemyError)
    async def no_audit_data(request: Request, exc: SQLAlchemyError) -> Response:
        """An audit DB that no run has created yet (or cannot be reached) is a notice, not a
        stack trace; the database's own error (hosts, users, SQL) goes to the log only."""
        log.error("identity sync page: audit database error: %s", exc)
        return render(request, "unavailable.html", status_code=503)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, _user: AirflowUser,
                 limit: Annotated[int, Query(ge=1, le=200)] = 20) -> HTMLResponse:
        runs = views.recent_runs(store_factory(), limit=limit)
        return render(request, "index.html", runs=runs,
                      chart=changes_chart(runs) if runs else None)

    @app.get("/run", response_class=HTMLResponse)
    def run(request: Request, _user: AirflowUser, id: str, user: str = "",
            group: str = "", kind: str = "", status: str = "",
            offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
        store = store_factory()
        header = views.run_header(store, id)
        if header is None:
            return render(request, "unavailable.html", status_code=404,
                          error=f"no run {id!r} in the audit store")
        flt = views.OperationFilter(user=user, group=group, kind=kind, status=status)
        page = views.run_operations(store, id, flt, offset=offset)
        filters = {"id": id, "user": user, "group": group, "kind": kind, "status": status}
        more = offset + len(page.rows) < page.matched
        return render(request, "run.html", run=header, page=page, flt=flt, offset=offset,
                      next_query=urlencode({**filters, "offset": offset + len(page.rows)})
                      if more else None,
                      dq=views.data_quality(store, id), quarantine=views.quarantined(store, id))

    @app.get("/user", response_class=HTMLResponse)
    def user_timeline(request: Request, _user: AirflowUser, who: str = "") -> HTMLResponse:
        identity, events = views.timeline(store_factory(), who.strip()) if who.strip() else (
            None, [])
        return render(request, "user.html", who=who, identity=identity, events=events)

    return app
