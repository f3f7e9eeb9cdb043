"""Bitbucket reads of many small listings run concurrently, within the client's bound (issue
10: 1,076 group listings read one after another took 75 s), and the subset read paces itself
from preflight like the full read. Structural: a barrier that only concurrent reads can pass
(its timeout only turns a hang into a failure), and counters of reads in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from identity_sync.bitbucket.state import concurrently, read_state
from identity_sync.http import HttpSettings
from identity_sync.model import key
from identity_sync.subset import read_subset_state

BOUND = 3
GROUPS = {f"Group{i}": [f"user{j}" for j in range(i % 4)] for i in range(10)}
USERS = ["alice", "Bob", "user1", "user2"]


class FakeClient:
    """The reads :func:`read_state` and :func:`read_subset_state` make, with the first
    ``BOUND`` listings held at a barrier: they only pass if that many run at once."""

    def __init__(self, burst: float | None = 5) -> None:
        self.settings = HttpSettings(max_concurrency=BOUND)
        limiter = None if burst is None else SimpleNamespace(capacity=burst)
        self.transport = SimpleNamespace(limiter=limiter)
        self.barrier = threading.Barrier(BOUND, timeout=60)
        self.lock = threading.Lock()
        self.listings = self.in_flight = self.peak = 0
        self.calls: list[str] = []
        self.requests_made = 0

    def _listing(self) -> None:
        with self.lock:
            self.listings += 1
            first = self.listings <= BOUND
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if first:
                self.barrier.wait()
        finally:
            with self.lock:
                self.in_flight -= 1

    def preflight(self) -> None:
        self.calls.append("preflight")

    def list_users(self) -> Iterator[dict[str, Any]]:
        self.calls.append("list_users")
        return iter([{"name": n} for n in USERS])

    def list_groups(self) -> Iterator[str]:
        self.calls.append("list_groups")
        return iter(GROUPS)

    def group_permissions(self) -> Iterator[dict[str, Any]]:
        return iter([{"group": {"name": "Group9"}, "permission": "LICENSED_USER"}])

    def user_permissions(self) -> Iterator[dict[str, Any]]:
        return iter([])

    def group_members(self, group: str) -> Iterator[dict[str, Any]]:
        self._listing()
        return iter([{"name": n} for n in GROUPS[group]])

    def find_user(self, name: str) -> dict[str, Any] | None:
        self.calls.append("find_user")
        self._listing()
        return {"name": name} if name in USERS else None

    def iter_pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if path == "/admin/users/more-members":
            return iter([{"name": g} for g, m in GROUPS.items() if params["context"] in m])
        assert path == "/admin/permissions/users"
        name = params["filter"]
        return iter([{"user": {"name": name}, "permission": "ADMIN"}] if name == "Bob" else [])


def test_group_members_are_read_concurrently_within_the_bound() -> None:
    client = FakeClient()
    state = read_state(client, ["Group0", "Group1", "Group2", "Group3", "Group5", "Missing"])
    assert client.peak >= BOUND  # the barrier was passed: BOUND listings at once
    assert client.peak <= BOUND
    assert state.memberships == {key(g): GROUPS[g] for g in
                                 ["Group0", "Group1", "Group2", "Group3", "Group5", "Group9"]}
    assert list(state.memberships) == sorted(state.memberships)


def test_a_failing_read_fails_the_whole_read() -> None:
    def read(item: int) -> int:
        if item == 4:
            raise RuntimeError("listing failed")
        return item * 2

    client = FakeClient()
    assert concurrently(client, read, list(range(3))) == [0, 2, 4]  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="listing failed"):
        concurrently(client, read, list(range(8)))  # type: ignore[arg-type]


def test_subset_read_paces_from_preflight_and_reads_users_concurrently() -> None:
    client = FakeClient()
    names = ["alice", "Bob", "nobody", "user1"]
    state = read_subset_state(client, names, ["Group1", "Group2", "Group3"])  # type: ignore[arg-type]
    assert client.calls[0] == "preflight"
    assert client.calls.count("preflight") == 1
    assert client.peak == BOUND
    assert list(state.users) == ["alice", "bob", "user1"]
    # Only the subset's own memberships, in the groups the rules read or that grant a licence.
    assert state.memberships == {"group1": [], "group2": ["user1"], "group3": ["user1"],
                                 "group9": []}
    assert state.user_permissions == {"bob": "ADMIN"}


@pytest.mark.parametrize("burst", [54, None])
def test_a_subset_read_within_the_initial_burst_skips_preflight(burst: float | None) -> None:
    """An on-login read (a few requests) is not slowed by the default pace: preflight would
    only add requests. Nor is one whose client does not pace at all."""
    client = FakeClient(burst)
    client.barrier = threading.Barrier(1)  # one user: nothing to run concurrently
    state = read_subset_state(client, ["user1"], ["Group2"])  # type: ignore[arg-type]
    assert "preflight" not in client.calls
    assert state.memberships == {"group2": ["user1"], "group9": []}
