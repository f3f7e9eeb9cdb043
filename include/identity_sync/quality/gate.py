"""The data-quality gate: Great Expectations suites kept as JSON files, run in an ephemeral context.

Each expectation carries ``meta.severity``: ``critical`` stops the run before anything is read from
or written to Bitbucket; ``record`` quarantines the offending records while the rest syncs;
``warning`` is logged and stored. GX and pandas are imported inside :func:`run_suite` because they
are heavy (seconds, ~200 MB) and only the quality task needs them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..model import IdcsUser

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[2] / "expectations"
SEVERITIES = ("critical", "record", "warning")


class CriticalDataQualityError(RuntimeError):
    """A critical expectation failed: the run stops before touching Bitbucket."""


@dataclass
class ExpectationOutcome:
    expectation: str
    severity: str
    success: bool
    unexpected_count: int
    sample: list[Any]
    rows: list[int] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        status = "ok" if self.success else f"FAILED ({self.unexpected_count} unexpected)"
        return f"[{self.severity}] {self.expectation}: {status}"


@dataclass
class GateResult:
    suite: str
    outcomes: list[ExpectationOutcome]
    quarantined: list[dict[str, Any]]

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.severity == "critical" and not o.success]

    def rows_for_audit(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(o).items() if k != "rows"} | {"suite": self.suite}
                for o in self.outcomes]


def load_suite(name: str, directory: Path = SUITES_DIR) -> dict[str, Any]:
    path = directory / f"{name}.json"
    suite = json.loads(path.read_text(encoding="utf-8"))
    for exp in suite["expectations"]:
        severity = exp.get("meta", {}).get("severity")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: expectation {exp['type']} has severity {severity!r}; "
                             f"use one of {', '.join(SEVERITIES)}")
    return suite


USER_COLUMNS = ("id", "user_name", "user_name_key", "email", "display_name", "active")


def users_frame_records(users: list[IdcsUser]) -> list[dict[str, Any]]:
    return [{"id": u.id, "user_name": u.user_name,
             "user_name_key": u.user_name.casefold() if u.user_name else None,
             "email": u.email, "display_name": u.display_name, "active": u.active}
            for u in users]


def _label(config: Any) -> str:
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else config.type


def run_suite(suite: dict[str, Any], records: list[dict[str, Any]],
              columns: tuple[str, ...]) -> list[ExpectationOutcome]:
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = pd.DataFrame.from_records(records, columns=list(columns))
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    batch = (context.data_sources.add_pandas("idcs").add_dataframe_asset(suite["name"])
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": frame}))
    gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=suite["expectations"])
    result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE"})
    outcomes = []
    for res in result.results:
        details = res.result or {}
        sample = [None if pd.isna(v) else v for v in details.get("partial_unexpected_list") or []]
        outcomes.append(ExpectationOutcome(
            expectation=_label(res.expectation_config),
            severity=res.expectation_config.meta.get("severity", "critical"),
            success=bool(res.success),
            unexpected_count=int(details.get("unexpected_count") or 0),
            sample=sample[:10],
            rows=[int(i) for i in details.get("unexpected_index_list") or []],
        ))
    return outcomes


def check_users(users: list[IdcsUser], suite_name: str = "idcs_users",
                directory: Path = SUITES_DIR) -> GateResult:
    """Validate the users extract; returns outcomes and the users to quarantine."""
    suite = load_suite(suite_name, directory)
    records = users_frame_records(users)
    outcomes = run_suite(suite, records, USER_COLUMNS)
    quarantined: dict[int, dict[str, Any]] = {}
    failed = [o for o in outcomes if not o.success]
    log.info("data quality: %d expectations on %d users, %d failed", len(outcomes), len(records),
             len(failed))
    for outcome in failed:
        log.warning("data quality %s; sample: %s", outcome.describe(), outcome.sample[:5])
    for outcome in outcomes:
        if outcome.severity != "record" or outcome.success:
            continue
        for row in outcome.rows:
            rec = records[row]
            column = outcome.expectation.partition("(")[2].rstrip(")")
            quarantined.setdefault(row, {
                "record_type": "user",
                "record_id": rec["id"] or f"row-{row}:{rec['user_name'] or '?'}",
                "reason": outcome.expectation,
                "expectation": outcome.expectation,
                "value": None if rec.get(column) is None else str(rec.get(column)),
            })
    return GateResult(suite["name"], outcomes, list(quarantined.values()))
