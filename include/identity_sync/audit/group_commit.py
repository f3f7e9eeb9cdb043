"""Group commit: the apply's threads share audit transactions instead of queueing for one each.

Why: every operation writes twice (``started`` before its request, its attempt after), and on
SQLite each write is a transaction behind the single write lock. With a batch's eight lanes, and
several batches at once, the threads spent more time beginning and committing than talking to
Bitbucket. Here a thread that finds no write in progress writes everything waiting, its own
record included, in one transaction; threads arriving meanwhile wait for the next one. Nobody
waits on a timer, and every caller still returns only once its own record is committed, so
``started`` is durable before the request leaves, as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .store import Attempt, AuditStore


@dataclass
class _Pending:
    attempt: Attempt | None = None
    mark: tuple[str, str] | None = None
    claim: list[str] | None = None
    number: int = 0
    lost: set[str] = field(default_factory=set)
    settled: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Thread-safe writer of one run's operation progress (see the module docstring)."""

    def __init__(self, store: AuditStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        self.transactions = self.records = 0  # how well the sharing works, for logs and tests

    def mark(self, op_id: str, status: str, *, claim: list[str] | None = None) -> set[str]:
        """Set the operation's status; with ``claim``, also claim those identities for this
        run in the same transaction and return the ones a newer run holds."""
        item = _Pending(mark=(op_id, status), claim=claim)
        self._submit(item)
        return item.lost

    def record_attempt(self, op_id: str, *, outcome: str, http_status: int | None,
                       error: str | None, started: float,
                       anchors: dict[str, str | None] | None = None,
                       release: tuple[str, ...] = ()) -> int:
        """As :meth:`AuditStore.record_attempt`, sharing the transaction with other threads."""
        return self._submit(_Pending(attempt=Attempt.timed(
            op_id, outcome=outcome, http_status=http_status, error=error, started=started,
            anchors=anchors, release=release)))

    def _submit(self, item: _Pending) -> int:
        with self._cond:
            self._queue.append(item)
            while self._writing and not item.settled:
                self._cond.wait()
            if not item.settled:  # nobody is writing: write everything waiting
                self._writing = True
                group, self._queue = self._queue, []
        if not item.settled:
            try:
                self._write(group)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.number

    def _write(self, group: list[_Pending]) -> None:
        attempts = [p for p in group if p.attempt is not None]
        try:
            progress = self.store.write_progress(
                self.run_id, attempts=[p.attempt for p in attempts if p.attempt],
                marks=[p.mark for p in group if p.mark is not None],
                claims=[(p.mark[0], p.claim) for p in group if p.mark and p.claim])
        except BaseException as exc:  # every writer of the group learns its write failed
            for p in group:
                p.error, p.settled = exc, True
            return
        for p, number in zip(attempts, progress.numbers, strict=True):
            p.number = number
        for p in group:
            if p.mark and p.claim:
                p.lost = progress.lost.get(p.mark[0], set())
        for p in group:
            p.settled = True
        self.transactions += 1
        self.records += len(group)
