"""Provider metadata that makes ``idcs`` and ``bitbucket`` real connection types in Airflow.

Airflow finds it through the ``apache_airflow_provider`` entry point in ``pyproject.toml``. Since
Airflow 3.2 the connection form is described declaratively here (``conn-fields`` stored in the
connection's extra, ``ui-field-behaviour`` relabelling the standard fields), so the API server
builds the form without importing the hooks; the hooks' own ``get_ui_field_behaviour`` returns
the same data for code that asks them directly.

Imports nothing from Airflow: the ProvidersManager calls :func:`get_provider_info` early.
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "idcs-bitbucket-sync"  # must equal the distribution name
HOOKS = "identity_sync_airflow.hooks"

# Optional: the URL's own port is used when empty. Shown (not hidden) because Airflow 3.3.2's
# "Test" button refuses connections without a port (apache/airflow#73298, fixed upstream).
PORT_HINT = "optional (e.g. 443); needed by the Test button on Airflow 3.3.2"

_TLS_FIELDS: dict[str, Any] = {
    "verify": {
        "label": "Verify TLS certificate",
        "description": "Untick only for a test server with a self-signed certificate.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "PEM file of the CA that signed the server's certificate (a private CA); "
                       "used instead of the system trust store.",
        "schema": {"type": ["string", "null"]},
    },
}

IDCS_CONNECTION: dict[str, Any] = {
    "connection-type": "idcs",
    "hook-class-name": f"{HOOKS}.IdcsHook",
    "hook-name": "Oracle IDCS",
    "conn-fields": {
        "app_id": {
            "label": "App ID",
            "description": "Id of the IDCS App whose grants define who is synced "
                           "(scope.mode: app_grants).",
            "schema": {"type": ["string", "null"]},
        },
        "scope": {
            "label": "OAuth scope",
            "description": "Scope requested with the client credentials grant.",
            "schema": {"type": ["string", "null"], "default": "urn:opc:idm:__myscopes__"},
        },
        **_TLS_FIELDS,
    },
    "ui-field-behaviour": {
        "hidden-fields": ["schema"],
        "relabeling": {"host": "Domain URL", "login": "Client ID", "password": "Client secret"},
        "placeholders": {
            "host": "https://idcs-0123456789abcdef.identity.oraclecloud.com",
            "port": PORT_HINT,
            "login": "client id of a confidential app (Client Credentials grant)",
        },
    },
}

BITBUCKET_CONNECTION: dict[str, Any] = {
    "connection-type": "bitbucket",
    "hook-class-name": f"{HOOKS}.BitbucketHook",
    "hook-name": "Bitbucket Data Center",
    "conn-fields": dict(_TLS_FIELDS),
    "ui-field-behaviour": {
        "hidden-fields": ["schema"],
        "relabeling": {"host": "Base URL", "login": "Service account", "password": "Password"},
        "placeholders": {
            "host": "https://bitbucket.example.com",
            "port": PORT_HINT,
            "login": "internal-directory account with global ADMIN",
        },
    },
}


def get_provider_info() -> dict[str, Any]:
    """What ``ProvidersManager`` reads (validated against Airflow's provider_info schema)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "IDCS to Bitbucket identity sync",
        "description": "Connection types for Oracle IDCS (OCI IAM identity domains) and "
                       "Bitbucket Data Center, used by the identity sync DAGs.",
        "connection-types": [IDCS_CONNECTION, BITBUCKET_CONNECTION],
    }


def field_behaviour(connection: dict[str, Any]) -> dict[str, Any]:
    """The ``ui-field-behaviour`` block in the snake_case shape of ``get_ui_field_behaviour()``."""
    behaviour = connection["ui-field-behaviour"]
    return {"hidden_fields": list(behaviour["hidden-fields"]),
            "relabeling": dict(behaviour["relabeling"]),
            "placeholders": dict(behaviour["placeholders"])}
