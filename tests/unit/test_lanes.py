"""Lanes at planning: one identity's dependent operations stay in one batch, in plan order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from identity_sync.planning.lanes import annotate, names_to_ids
from identity_sync.planning.operations import (
    PHASE_ORDER,
    Operation,
    OpKind,
    assign_batches,
    batch_count,
)

USERS = [f"user{i}" for i in range(12)]
GROUPS = [f"group{i}" for i in range(4)]


def user_chain(name: str, idcs_id: str) -> list[Operation]:
    """adopt → rename → update of one user: the chain a split batch would break."""
    new = f"{name}.new"
    return [
        Operation(OpKind.ADOPT_USER, name, {"name": name}, "x", idcs_id=idcs_id),
        Operation(OpKind.RENAME_USER, name, {"name": name, "newName": new}, "x", idcs_id=idcs_id),
        Operation(OpKind.UPDATE_USER, new, {"name": new, "displayName": "N", "email": "n@x.io"},
                  "x", idcs_id=idcs_id),
    ]


op_strategy = st.one_of(
    st.builds(lambda i: user_chain(USERS[i], f"id{i}"), st.integers(0, len(USERS) - 1)),
    st.builds(lambda u, g: [Operation(OpKind.REMOVE_MEMBERSHIP, USERS[u],
                                      {"user": USERS[u], "group": GROUPS[g]}, "x")],
              st.integers(0, len(USERS) - 1), st.integers(0, len(GROUPS) - 1)),
    st.builds(lambda u, g: [Operation(OpKind.ADD_MEMBERS, GROUPS[g],
                                      {"group": GROUPS[g], "users": [USERS[u]]}, "x")],
              st.integers(0, len(USERS) - 1), st.integers(0, len(GROUPS) - 1)),
    st.builds(lambda i: [Operation(OpKind.CREATE_USER, f"new{i}",
                                   {"name": f"new{i}", "displayName": "N", "email": "e@x.io"},
                                   "x", idcs_id=f"nid{i}")], st.integers(0, 400)),
)


@settings(max_examples=200, deadline=None)
@given(chains=st.lists(op_strategy, min_size=1, max_size=120),
       batch_size=st.integers(1, 20), max_batches=st.integers(1, 16))
def test_a_lane_is_never_split_and_keeps_its_order(chains: list[list[Operation]],
                                                   batch_size: int, max_batches: int) -> None:
    ops = [op for chain in chains for op in chain]
    annotate(ops, names_to_ids({f"id{i}": USERS[i] for i in range(len(USERS))}))
    assign_batches(ops, batch_size, max_batches)
    for phase in PHASE_ORDER:
        phase_ops = [op for op in ops if op.phase is phase]
        batches: dict[str, set[int]] = {}
        for op in phase_ops:
            batches.setdefault(op.lane, set()).add(op.batch)
        assert all(len(b) == 1 for b in batches.values()), "a lane was split across batches"
        used = {op.batch for op in phase_ops}
        assert len(used) <= max(batch_count(len(phase_ops), batch_size, max_batches), 1)
        assert all(0 <= b < max_batches for b in used)
    # A user's chain shares one lane whatever names it goes through (rename included).
    for chain in chains:
        if chain[0].kind is OpKind.ADOPT_USER:
            assert len({op.lane for op in chain}) == 1
            assert chain[0].lane.startswith("user:")


def test_identities_follow_the_idcs_id_through_renames_and_additions() -> None:
    ops = [*user_chain("alice", "id-a"),
           Operation(OpKind.ADD_MEMBERS, "devs", {"group": "devs",
                                                  "users": ["alice.new", "stranger"]}, "x"),
           Operation(OpKind.CREATE_GROUP, "Devs", {"name": "Devs"}, "x")]
    annotate(ops, names_to_ids({"id-a": "alice"}, {"id-a": "alice.new"}))
    assert [op.identities for op in ops] == [
        ["user:id-a"], ["user:id-a"], ["user:id-a"],
        ["user:id-a", "user~stranger"], []]
    assert ops[3].lane == "group:devs" and ops[4].lane == "group:devs"
