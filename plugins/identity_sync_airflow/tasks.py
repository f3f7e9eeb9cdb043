"""What every sync DAG's tasks share: resolving rules and connections, and turning domain errors
into Airflow outcomes (fail fast on permanent problems, retry transient ones)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

from identity_sync.mapping.rules import DEFAULT_RULES_PATH, SyncRules, load_rules

SYNC_DAG_IDS = ("idcs_bitbucket_sync",)
# First retry delay (grows exponentially); tests shorten it so a failure does not stall them.
RETRY_DELAY = timedelta(seconds=float(os.environ.get("IDSYNC_RETRY_DELAY_SECONDS", "30")))
BITBUCKET_POOL = "bitbucket_api"

# Retry transient API trouble with backoff; fail at once on what a retry cannot fix.
APPLY_RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception="identity_sync.loading.apply.PermanentApplyError",
              action=RetryAction.FAIL, reason="permanent Bitbucket error: retrying cannot help"),
    RetryRule(exception="identity_sync.loading.apply.TransientApplyError",
              action=RetryAction.RETRY, retry_delay=RETRY_DELAY,
              reason="transient Bitbucket error: retrying the unfinished operations"),
])
READ_RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception=["identity_sync.mapping.rules.RulesError",
                         "identity_sync.idcs.client.PartialExtractError",
                         "identity_sync.quality.gate.CriticalDataQualityError",
                         "identity_sync.pipeline.SafetyGateError"],
              action=RetryAction.FAIL, reason="needs a human: see the task log"),
])


def rules_path() -> Path:
    return Path(os.environ.get("IDSYNC_RULES_FILE", DEFAULT_RULES_PATH))


def current_rules() -> tuple[SyncRules, str]:
    return load_rules(rules_path())
