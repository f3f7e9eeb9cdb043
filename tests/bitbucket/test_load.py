"""Load: a few hundred writes through the loader and one shared client, four batches at a time,
into an emulator rate-limited like a default Bitbucket (bucket 60, 5 per second).

Asserts counts, not time: no operation fails, and fewer than 2% of the requests the server saw
were refused with 429 (the client's own token bucket keeps it under the limit). Bounded: about
215 requests at 5/s after the burst, roughly 35 s.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings
from identity_sync.loading.apply import apply_batch
from identity_sync.planning.operations import Operation, OpKind, assign_batches

GROUPS, USERS, PER_GROUP = 20, 160, 8
log = logging.getLogger(__name__)


def plan() -> list[Operation]:
    ops = [Operation(OpKind.CREATE_GROUP, f"g{g:02}", {"name": f"g{g:02}"}, "load")
           for g in range(GROUPS)]
    names = [f"user{u:03}" for u in range(USERS)]
    ops += [Operation(OpKind.CREATE_USER, n, {"name": n, "displayName": n.title(),
                                              "email": f"{n}@x.io"}, "load", idcs_id=f"id-{n}")
            for n in names]
    ops += [Operation(OpKind.ADD_MEMBERS, f"g{g:02}",
                      {"group": f"g{g:02}", "users": names[g * PER_GROUP:(g + 1) * PER_GROUP]},
                      "load") for g in range(GROUPS)]
    assign_batches(ops, batch_size=20, max_batches=50)
    return ops


def test_hundreds_of_writes_under_the_rate_limit(tmp_path: Path) -> None:
    app = create_bitbucket_app()
    with serving(app) as server:
        control = f"{server.base_url}/_emulator"
        requests.put(f"{control}/rate-limit", json={"capacity": 60, "fillRate": 5}, timeout=5)
        store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
        ops = plan()
        store.record_plan("load", ops)
        client = BitbucketClient(server.base_url, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                                 settings=HttpSettings(timeout=10, max_concurrency=4))
        report = client.preflight()
        assert report.rate_limiting and not report.allow_listed
        assert report.client_rate == (57.0, 4.75)  # the server's bucket with a 5% margin

        results = []
        with ThreadPoolExecutor(4) as pool:
            for phase in ("groups", "users", "additions"):
                batches = sorted({op.batch for op in ops if str(op.phase) == phase})
                results += pool.map(lambda b, p=phase: apply_batch(store, client, "load", p, b),
                                    batches)

        seen = requests.get(f"{control}/responses", timeout=5).json()
        calls = requests.get(f"{control}/calls", timeout=5).json()
    writes = sum(n for endpoint, n in calls.items() if endpoint.split()[0] != "GET")
    throttled = seen["responses"].get("429", 0)
    log.warning("load: %d requests (%d writes), %d answered 429, client paced %.1fs, "
                "%d retries", seen["total"], writes, throttled,
                client.transport.stats["paced_seconds"], client.transport.stats["retries"])

    assert sum(r.failed for r in results) == 0
    assert sum(r.done for r in results) == len(ops) == GROUPS * 2 + USERS
    assert writes >= 200
    assert throttled < 0.02 * seen["total"]
    state = app.state.emulator
    assert len(state.users) == USERS + 2
    assert sum(len(state.members[f"g{g:02}"]) for g in range(GROUPS)) == GROUPS * PER_GROUP
    assert {a["outcome"] for a in store.attempts("load")} == {"done"}
