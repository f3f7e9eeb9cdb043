"""Airflow's own authentication for the plugin app: the same JWT (``Authorization: Bearer`` or
the UI's ``_token`` cookie) the REST API accepts, then the auth manager's permissions.

The page shows every synced person's name, e-mail, groups and errors, so it needs more than
"may look at DAGs" (least privilege):

- the custom view permission ``Identity sync`` (``is_authorized_custom_view``: an auth manager
  with roles, such as FAB's, grants it to Admin only until an administrator grants it to others);
- for **every** DAG whose runs it shows, reading that DAG's runs and operating them (``PUT`` on
  its runs: clearing, marking), checked with the DAG's team (``team_name``).

With Airflow's simple auth manager (roles viewer < user < op < admin, no per-resource grants),
that lets admin, op and user in and refuses viewer.

Airflow is imported when a request arrives, not at import: every Airflow component loads the
plugin file, and only the API server serves the page.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPBearer

log = logging.getLogger(__name__)

RESOURCE = "Identity sync"  # the custom view permission the page and its API need
SHOWN_DAGS = ("idcs_bitbucket_sync", "idcs_bitbucket_login_sync")  # whose runs it shows
_bearer = HTTPBearer(auto_error=False)


async def airflow_user(request: Request) -> Any:
    """The logged-in Airflow user allowed to read the identity audit; 401 without a valid
    token, 403 naming what is missing without the permissions."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request, None, await _bearer(request))
    manager = get_auth_manager()
    missing: list[str] = []
    if not manager.is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user):
        missing.append(f"the {RESOURCE!r} view")
    for dag_id in SHOWN_DAGS:
        details = DagDetails(id=dag_id, team_name=dag_team(dag_id))
        for method, what in (("GET", "reading"), ("PUT", "operating")):
            if not manager.is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN,
                                             details=details, user=user):
                missing.append(f"{what} the runs of {dag_id}")
    if missing:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"the identity audit needs {', '.join(missing)}")
    return user


def dag_team(dag_id: str) -> str | None:
    """The DAG's team (multi-team deployments), None without teams or before it was parsed."""
    try:
        from airflow.models.dag import DagModel

        return DagModel.get_team_name(dag_id)
    except Exception:  # a page view must not fail on a team lookup; the check then has none
        log.exception("could not look up the team of DAG %s", dag_id)
        return None


def login_url(next_url: str) -> str:
    """Where the auth manager logs users in, coming back to ``next_url``."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)
