"""``[core] hostname_callable`` for the distributed test's Celery workers.

Both workers run on one machine, so the default (the FQDN) would give every task instance the same
``hostname``; each worker's environment names it instead, and the REST API then shows which worker
ran which task."""

from __future__ import annotations

import os

WORKER_NAME_ENV = "IDSYNC_TEST_WORKER_NAME"


def worker_name() -> str:
    return os.environ[WORKER_NAME_ENV]
