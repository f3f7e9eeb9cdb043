"""Airflow plugin: the "Identity sync" page (audit of what each sync did to whom).

Mounts the page's FastAPI app at ``/identity-sync`` on the API server and adds it to the UI's
navigation as an external view shown inside Airflow (``url_route``). The app checks Airflow's own
login and permissions on every request.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from identity_sync_airflow.ui.sync_page import URL_PREFIX, create_app


class IdentitySyncPlugin(AirflowPlugin):
    """Registers the page; nothing else (hooks are imported directly, connection types come
    from the provider entry point)."""

    name = "identity_sync"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Identity sync"}]
    external_views: ClassVar[list[dict[str, Any]]] = [{
        "name": "Identity sync",
        "href": f"{URL_PREFIX}/",
        "url_route": "identity-sync",
        "destination": "nav",
        "nav_top_level": True,
    }]
