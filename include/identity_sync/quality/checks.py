"""The suites of one run, in the two places the pipeline calls them.

``check_snapshot`` runs right after the extract (users, groups, memberships); ``check_desired``
runs after mapping (what would be written to Bitbucket) and returns the desired state without the
records it quarantined, so a quarantined record can never reach the planner.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..mapping.rules import SyncRules
from ..model import DesiredState, IdcsSnapshot, key
from .gate import CriticalDataQualityError, GateResult, check_table
from .tables import (
    desired_groups_table,
    desired_users_table,
    groups_table,
    memberships_table,
    users_table,
)

log = logging.getLogger(__name__)


def check_snapshot(snapshot: IdcsSnapshot, baseline: int | None = None) -> list[GateResult]:
    return [check_table(users_table(snapshot.users), baseline=baseline),
            check_table(groups_table(snapshot.groups)),
            check_table(memberships_table(snapshot))]


def check_desired(desired: DesiredState, snapshot: IdcsSnapshot,
                  rules: SyncRules) -> tuple[list[GateResult], DesiredState]:
    users = check_table(desired_users_table(desired))
    table = desired_groups_table(snapshot, rules)
    groups = check_table(table)
    bad_users = {q["record_id"] for q in users.quarantined}
    bad_ids = {q["record_id"] for q in groups.quarantined}
    bad_groups = {r["name"] for r in table.records if r["idcs_id"] in bad_ids and r["name"]}
    return [users, groups], without(desired, bad_users, bad_groups)


def without(desired: DesiredState, user_ids: set[str], group_names: set[str]) -> DesiredState:
    """``desired`` minus quarantined users (and their memberships) and quarantined group names."""
    names = {key(u.name) for uid, u in desired.users.items() if uid in user_ids}
    groups = {key(g) for g in group_names}
    if not names and not groups:
        return desired

    def keep(group: str) -> bool:
        return key(group) not in groups

    return replace(
        desired,
        users={uid: u for uid, u in desired.users.items() if uid not in user_ids},
        managed_groups=[g for g in desired.managed_groups if keep(g)],
        additive_groups=[g for g in desired.additive_groups if keep(g)],
        memberships={g: [m for m in members if key(m) not in names]
                     for g, members in desired.memberships.items() if keep(g)},
        group_permissions={g: p for g, p in desired.group_permissions.items() if keep(g)},
        initial_groups=[g for g in desired.initial_groups if keep(g)],
    )


def stop_message(results: list[GateResult]) -> str | None:
    """The one-line reason to stop, or None when no critical expectation failed."""
    failed = [o for r in results for o in r.critical_failures]
    if not failed:
        return None
    return ("critical data-quality failure, nothing written to Bitbucket: "
            + "; ".join(o.reason() for o in failed))


def raise_if_critical(results: list[GateResult]) -> None:
    message = stop_message(results)
    if message:
        raise CriticalDataQualityError(message)
