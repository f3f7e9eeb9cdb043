"""A live pair of emulators on real sockets, Airflow connections pointing at them, and a way to
run the sync DAG in-process with ``dag.test()``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_idcs_app,
)
from identity_sync.emulators.orggen import generate_idcs_org

DAGS = Path(__file__).resolve().parents[2] / "dags"


@dataclass
class Live:
    idcs_url: str
    bitbucket_url: str
    idcs_app: Any
    audit_url: str

    def idcs_dump(self) -> dict[str, Any]:
        return self.idcs_app.state.emulator.to_dict()

    def load_idcs(self, dump: dict[str, Any]) -> None:
        """Replace the IDCS state, dating every changed user the way IDCS does on a change
        (``meta.lastModified``), so incremental runs see them."""
        before = {u["id"]: u for u in self.idcs_dump()["users"]}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        for user in dump["users"]:
            old = before.get(user["id"])
            if old is None or {k: v for k, v in old.items() if k != "meta"} != {
                    k: v for k, v in user.items() if k != "meta"}:
                user.setdefault("meta", {})["lastModified"] = now
        self.idcs_app.state.emulator.load_dict(dump)

    def bb_get(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """All values of a paged Bitbucket listing, read with plain requests."""
        values, start = [], 0
        while True:
            page = requests.get(f"{self.bitbucket_url}/rest/api/1.0{path}",
                                params={**params, "start": start, "limit": 1000},
                                auth=(DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD), timeout=10).json()
            values += page["values"]
            if page["isLastPage"]:
                return values
            start = page["nextPageStart"]

    def run_dag(self, dag_id: str = "idcs_bitbucket_sync", logical_date: datetime | None = None,
                **conf: Any) -> Any:
        """Run the DAG with ``dag.test()``; the same ``logical_date`` again clears and re-runs
        that same run (as clearing it in the UI would)."""
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
        assert bag.import_errors == {}
        dag = bag.get_dag(dag_id)
        if logical_date is not None:
            return dag.test(run_conf=conf, logical_date=logical_date)
        return dag.test(run_conf=conf)

    def bitbucket_control(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(method, f"{self.bitbucket_url}/_emulator/{path}", timeout=10,
                                **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None


@pytest.fixture
def live(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    idcs_app, bb_app = create_idcs_app(), create_bitbucket_app()
    idcs_app.state.emulator.load_dict(generate_idcs_org(7, 150, 12))
    with serving(idcs_app) as idcs, serving(bb_app) as bitbucket:
        audit_db = tmp_path / "audit.db"
        connections = {
            "idcs_default": {"conn_type": "idcs", "host": idcs.base_url, "login": DEMO_CLIENT_ID,
                             "password": DEMO_CLIENT_SECRET, "extra": {"app_id": DEMO_APP_ID}},
            "bitbucket_default": {"conn_type": "bitbucket", "host": bitbucket.base_url,
                                  "login": DEMO_ADMIN_USER, "password": DEMO_ADMIN_PASSWORD},
            "sync_audit_db": {"conn_type": "sqlite", "host": str(audit_db)},
        }
        for conn_id, conn in connections.items():
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        yield Live(idcs.base_url, bitbucket.base_url, idcs_app, f"sqlite:///{audit_db}")
