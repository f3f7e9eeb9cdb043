"""The data-quality gate: Great Expectations suites kept as JSON files, run in an ephemeral context.

Each expectation carries ``meta.severity``: ``critical`` stops the run before anything is read from
or written to Bitbucket; ``record`` quarantines the offending records while the rest syncs;
``warning`` is logged and stored. ``meta.why`` is the readable reason stored with a quarantined
record; ``meta.name`` (optional) labels the expectation. Suites live in ``include/expectations``,
or in the directory named by ``IDSYNC_EXPECTATIONS_DIR`` so a deployment can change the policy
without editing the package. GX and pandas are imported inside :func:`run_suite` because they are
heavy (seconds, ~200 MB) and only the quality checks need them.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import IdcsUser

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[2] / "expectations"
SUITES_ENV = "IDSYNC_EXPECTATIONS_DIR"
SEVERITIES = ("critical", "record", "warning")
BASELINE = "last_successful_run"  # meta.baseline: min_value comes from the previous run's count
MAX_ID = 255  # quarantine.record_id column width


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
    why: str = field(default="", repr=False)
    observed: Any = field(default=None, repr=False)

    def describe(self) -> str:
        status = "ok" if self.success else f"FAILED ({self.unexpected_count} unexpected)"
        if not self.success and self.observed is not None:
            status = f"FAILED (observed {self.observed})"
        return f"[{self.severity}] {self.expectation}: {status}"

    def reason(self) -> str:
        """One line for the run message: what failed and why it matters."""
        seen = (f"observed {self.observed}" if self.observed is not None
                else f"{self.unexpected_count} unexpected, e.g. {self.sample[:3]}")
        return f"{self.expectation} ({seen}): {self.why}" if self.why else \
            f"{self.expectation} ({seen})"


@dataclass
class GateResult:
    suite: str
    outcomes: list[ExpectationOutcome]
    quarantined: list[dict[str, Any]]
    row_count: int = 0
    validation: Any = field(default=None, repr=False)  # the GX result, for Data Docs

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.severity == "critical" and not o.success]

    def rows_for_audit(self) -> list[dict[str, Any]]:
        return [{"suite": self.suite, "expectation": o.expectation, "severity": o.severity,
                 "success": o.success, "unexpected_count": o.unexpected_count,
                 "sample": o.sample} for o in self.outcomes]

    def summary(self) -> str:
        failed = [o for o in self.outcomes if not o.success]
        by_severity = {s: sum(o.severity == s for o in failed) for s in SEVERITIES}
        return (f"data quality {self.suite}: {len(self.outcomes)} expectations on "
                f"{self.row_count} rows, {len(failed)} failed "
                f"({', '.join(f'{n} {s}' for s, n in by_severity.items())}); "
                f"{len(self.quarantined)} records quarantined")


@dataclass
class Table:
    """Rows to validate: ``record_id`` names a row in the quarantine table."""

    suite: str
    record_type: str
    columns: tuple[str, ...]
    records: list[dict[str, Any]]
    record_id: Callable[[int, dict[str, Any]], str]


def suites_dir() -> Path:
    return Path(os.environ.get(SUITES_ENV) or SUITES_DIR)


def label(exp: dict[str, Any]) -> str:
    meta, column = exp.get("meta") or {}, (exp.get("kwargs") or {}).get("column")
    return str(meta.get("name") or (f"{exp['type']}({column})" if column else exp["type"]))


def load_suite(name: str, directory: Path | None = None) -> dict[str, Any]:
    """Read a suite file, refusing unknown severities and duplicate labels (they key the audit)."""
    path = (directory or suites_dir()) / f"{name}.json"
    suite = json.loads(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    for exp in suite["expectations"]:
        severity = exp.get("meta", {}).get("severity")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: expectation {exp['type']} has severity {severity!r}; "
                             f"use one of {', '.join(SEVERITIES)}")
        if label(exp) in seen:
            raise ValueError(f"{path}: two expectations are labelled {label(exp)!r}; "
                             "give one a meta.name")
        seen.add(label(exp))
    return suite


def with_baseline(suite: dict[str, Any], baseline: int | None) -> tuple[list[dict[str, Any]],
                                                                         list[ExpectationOutcome]]:
    """Fill ``min_value`` of baseline expectations from the previous count (``max_shrink_percent``
    of it may go); without a baseline they are reported as skipped instead of run."""
    runnable, skipped = [], []
    for exp in suite["expectations"]:
        meta = exp.get("meta") or {}
        if meta.get("baseline") != BASELINE:
            runnable.append(exp)
        elif baseline is None:
            skipped.append(ExpectationOutcome(label(exp), meta["severity"], True, 0,
                                              ["skipped: no earlier successful full run"]))
        else:
            shrink = float(meta.get("max_shrink_percent", 50))
            minimum = math.ceil(baseline * (100.0 - shrink) / 100.0)
            why = (f"{baseline} rows at the last successful run; more than {shrink:g}% fewer "
                   f"(below {minimum}) looks like a partial extract")
            runnable.append({**exp, "kwargs": {**exp.get("kwargs", {}), "min_value": minimum},
                             "meta": {**meta, "why": why}})
    return runnable, skipped


def _plain(value: Any) -> Any:
    """A JSON-safe Python value (GX and pandas hand back numpy scalars and NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@functools.cache
def _context() -> Any:
    """One GX ephemeral context per process: each new one leaves a temporary directory behind."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def run_suite(suite: dict[str, Any], records: list[dict[str, Any]], columns: tuple[str, ...],
              expectations: list[dict[str, Any]] | None = None
              ) -> tuple[list[ExpectationOutcome], Any]:
    """Validate ``records`` against the suite; returns per-expectation outcomes and the GX result."""
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=list(columns))
    batch = (_context().data_sources.add_or_update_pandas("idcs")
             .add_dataframe_asset(suite["name"])
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": frame}))
    gx_suite = gx.ExpectationSuite(name=suite["name"],
                                   expectations=expectations or suite["expectations"])
    result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE"})
    by_label = {label(e): e for e in expectations or suite["expectations"]}
    outcomes = []
    for res in result.results:
        config = res.expectation_config
        exp = {"type": config.type, "kwargs": config.kwargs, "meta": config.meta}
        details = res.result or {}
        sample = [_plain(v) for v in details.get("partial_unexpected_list") or []]
        meta = (by_label.get(label(exp)) or exp).get("meta") or {}
        outcomes.append(ExpectationOutcome(
            expectation=label(exp),
            severity=meta.get("severity", "critical"),
            success=bool(res.success),
            unexpected_count=int(details.get("unexpected_count") or 0),
            sample=sample[:10],
            rows=[int(i) for i in details.get("unexpected_index_list") or []],
            why=str(meta.get("why", "")),
            observed=_plain(details.get("observed_value")),
        ))
        info = res.exception_info or {}
        if info.get("raised_exception"):  # a broken suite (unknown column...) fails loudly
            outcomes[-1].sample = [str(info.get("exception_message"))[:300]]
    return outcomes, result


def check_table(table: Table, *, baseline: int | None = None,
                directory: Path | None = None) -> GateResult:
    """Run ``table``'s suite; record-level failures become quarantine rows (one per record)."""
    suite = load_suite(table.suite, directory)
    runnable, skipped = with_baseline(suite, baseline)
    outcomes, validation = run_suite(suite, table.records, table.columns, runnable)
    outcomes += skipped
    quarantined: dict[int, dict[str, Any]] = {}
    for outcome in outcomes:
        if outcome.severity != "record" or outcome.success:
            continue
        column = outcome.expectation.partition("(")[2].rstrip(")")
        for row in outcome.rows:
            rec = table.records[row]
            value = rec.get(column)
            reason = outcome.why or outcome.expectation
            entry = quarantined.get(row)
            if entry is None:
                quarantined[row] = {
                    "record_type": table.record_type,
                    "record_id": table.record_id(row, rec)[:MAX_ID],
                    "reason": f"{reason} (value {value!r})" if value is not None else reason,
                    "expectation": outcome.expectation[:250],
                    "value": None if value is None else str(value),
                }
            elif reason not in entry["reason"]:
                entry["reason"] += f"; {reason}"
    result = GateResult(suite["name"], outcomes, list(quarantined.values()),
                        len(table.records), validation)
    log.info("%s", result.summary())
    for outcome in outcomes:
        if not outcome.success:
            log.warning("data quality %s %s; sample: %s", suite["name"], outcome.describe(),
                        outcome.sample[:5])
    return result


def check_users(users: list[IdcsUser], suite_name: str = "idcs_users",
                directory: Path | None = None, baseline: int | None = None) -> GateResult:
    """Validate the users extract; returns outcomes and the users to quarantine."""
    from .tables import users_table

    return check_table(users_table(users, suite_name), baseline=baseline, directory=directory)
