"""The sync's three Airflow connections, built from the deployment's environment (``.env``).

``airflow-init`` runs this and loads the result with ``airflow connections import --overwrite``,
so the connections live in Airflow's metadata database (encrypted with the Fernet key) and show in
the UI. Built in Python rather than in the shell so that passwords with quotes or spaces survive.

    python deploy/connections.py /tmp/connections.json

Variables (see ``.env.example``): ``IDCS_URL``, ``IDCS_CLIENT_ID``, ``IDCS_CLIENT_SECRET``,
``IDCS_APP_ID``, ``IDCS_ALLOW_INSECURE``, ``BITBUCKET_URL``, ``BITBUCKET_USERNAME``,
``BITBUCKET_PASSWORD``, ``BITBUCKET_ALLOW_INSECURE``,
``AUDIT_DB_HOST``, ``AUDIT_DB_PORT``, ``AUDIT_DB_NAME``, ``AUDIT_DB_USER``, ``AUDIT_DB_PASSWORD``.
A connection whose URL (or audit database name) is empty is left out, so connections managed in
the UI or a secrets backend are not overwritten.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def connections(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Connection id → fields, in the file format ``airflow connections import`` reads."""
    result: dict[str, dict[str, Any]] = {}
    if env.get("IDCS_URL"):
        extra = {"app_id": env["IDCS_APP_ID"]} if env.get("IDCS_APP_ID") else {}
        extra.update(_insecure(env, "IDCS"))
        result["idcs_default"] = {
            "conn_type": "idcs", "host": env["IDCS_URL"], "login": env.get("IDCS_CLIENT_ID", ""),
            "password": env.get("IDCS_CLIENT_SECRET", ""), "extra": json.dumps(extra)}
    if env.get("BITBUCKET_URL"):
        result["bitbucket_default"] = {
            "conn_type": "bitbucket", "host": env["BITBUCKET_URL"],
            "login": env.get("BITBUCKET_USERNAME", ""),
            "password": env.get("BITBUCKET_PASSWORD", ""),
            "extra": json.dumps(_insecure(env, "BITBUCKET"))}
    if env.get("AUDIT_DB_NAME"):
        result["sync_audit_db"] = {
            "conn_type": "postgres", "host": env.get("AUDIT_DB_HOST", "postgres"),
            "port": int(env.get("AUDIT_DB_PORT", "5432")), "login": env.get("AUDIT_DB_USER", ""),
            "password": env.get("AUDIT_DB_PASSWORD", ""), "schema": env["AUDIT_DB_NAME"],
            "extra": "{}"}
    return result


def _insecure(env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """``allow_insecure`` in the extra when ``<prefix>_ALLOW_INSECURE=true`` (the demo's
    emulators speak plain http on the compose network; never for a real service)."""
    return {"allow_insecure": True} if env.get(f"{prefix}_ALLOW_INSECURE", "").lower() == "true" \
        else {}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    found = connections(os.environ)
    Path(args[0]).write_text(json.dumps(found, indent=2))
    print(f"connections to import: {', '.join(found) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
