"""Airflow's own authentication for the plugin app: the same JWT (``Authorization: Bearer`` or
the UI's ``_token`` cookie) the REST API accepts, then the auth manager's permission to read the
sync DAG's runs, since the page shows what those runs did.

Airflow is imported when a request arrives, not at import: every Airflow component loads the
plugin file, and only the API server serves the page.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPBearer

SYNC_DAG_ID = "idcs_bitbucket_sync"
_bearer = HTTPBearer(auto_error=False)


async def airflow_user(request: Request) -> Any:
    """The logged-in Airflow user allowed to read the sync DAG's runs; 401 without a valid
    token, 403 without the permission."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request, None, await _bearer(request))
    allowed = get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=SYNC_DAG_ID),
        user=user)
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"reading the runs of the {SYNC_DAG_ID} DAG is not allowed")
    return user


def login_url(next_url: str) -> str:
    """Where the auth manager logs users in, coming back to ``next_url``."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)
