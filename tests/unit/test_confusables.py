"""Look-alike usernames (issue 20): mixed scripts are quarantined by mapping, names whose
confusable skeleton matches another user's of the run by mapping too, and names that look like
an existing Bitbucket account are a ``confusable_name`` conflict in the plan."""

from __future__ import annotations

import pytest

from identity_sync.mapping.confusables import mixed_script, skeleton
from identity_sync.mapping.rules import parse_rules
from identity_sync.mapping.transform import build_desired_state
from identity_sync.model import DesiredUser, IdcsSnapshot
from identity_sync.planning.planner import CONFLICT_KINDS, PlanInput, plan_changes

from .test_mapping import user
from .test_planner import bb, desired

CYRILLIC_A = "\u0430"  # а
ADMIN_LOOKALIKE = CYRILLIC_A + "dmin"  # Cyrillic а + Latin dmin
RULES = parse_rules("groups:\n  default_groups: [devs]\n")


@pytest.mark.parametrize(("name", "mixed"), [
    ("admin", None),
    (ADMIN_LOOKALIKE, {"CYRILLIC", "LATIN"}),
    ("jöhn", None),                        # Latin with a diacritic
    ("jöhn.müller-2", None),
    ("иван.петров", None),                 # one script, not Latin: fine
    ("p\u0430ypal", {"CYRILLIC", "LATIN"}),
    ("\u03bfscar", {"GREEK", "LATIN"}),    # Greek omicron
    ("ｊｏｈｎ", None),                     # fullwidth Latin counts as Latin
    ("ｊｏｈｎ\u0430", {"CYRILLIC", "LATIN"}),
    ("tanaka.太郎", None),                  # Latin + Han: allowed (TR 39 highly restrictive)
    ("山田はなこ", None),                    # Han + Hiragana
])
def test_mixed_script(name: str, mixed: set[str] | None) -> None:
    assert mixed_script(name) == mixed


def test_skeleton() -> None:
    assert skeleton(ADMIN_LOOKALIKE) == skeleton("admin") == skeleton("ADMIN") == "admin"
    assert skeleton("\u0455\u0441\u043e\u0440\u0435") == "scope"  # ѕсоре: all Cyrillic
    assert skeleton("ａｄｍｉｎ") == "admin"  # fullwidth
    assert skeleton("ad\u200bmin") == "admin"  # zero-width space
    assert skeleton("\u0391\u0392\u0395") == "abe"  # Greek capitals ΑΒΕ
    assert skeleton("jöhn") != skeleton("john")  # a diacritic is a different name
    assert skeleton("j\u04e7hn") == skeleton("jöhn")  # ...unless it is Cyrillic ӧ
    assert skeleton("иван") == "ивaн"  # only the look-alike letter (а) becomes Latin
    assert skeleton("rnary") != skeleton("mary")  # ASCII-only look-alikes are not flagged


def test_mapping_quarantines_mixed_scripts_and_the_rest_syncs() -> None:
    snap = IdcsSnapshot(users=[user("u1", ADMIN_LOOKALIKE), user("u2", "jöhn"),
                               user("u3", "иван"), user("u4", "carol")], groups=[], scope="all")
    result = build_desired_state(snap, RULES)
    assert sorted(u.name for u in result.desired.users.values()) == ["carol", "jöhn", "иван"]
    assert result.desired.memberships == {"devs": ["carol", "jöhn", "иван"]}
    assert result.rejected == [{"id": "u1", "reason": f"mapped name {ADMIN_LOOKALIKE!r} mixes "
                                "scripts (CYRILLIC, LATIN): look-alike names are not synced"}]


def test_mapping_quarantines_look_alikes_within_the_run() -> None:
    scope_cyr = "\u0455\u0441\u043e\u0440\u0435"  # ѕсоре
    snap = IdcsSnapshot(users=[user("u1", "scope"), user("u2", scope_cyr), user("u3", "dave")],
                        groups=[], scope="all")
    result = build_desired_state(snap, RULES)
    assert set(result.desired.users) == {"u3"}  # neither is first come, first served
    reasons = {r["id"]: r["reason"] for r in result.rejected}
    assert reasons["u1"] == (f"mapped name 'scope' looks like {scope_cyr!r} (u2) (same "
                             "confusable skeleton): look-alike names are not synced")
    assert set(reasons) == {"u1", "u2"}
    # The user already anchored to its name keeps it; the look-alike is held.
    result = build_desired_state(snap, RULES, anchors={"u1": "scope"})
    assert set(result.desired.users) == {"u1", "u3"}
    assert [r["id"] for r in result.rejected] == ["u2"]


def test_planner_reports_a_look_alike_of_an_existing_account() -> None:
    """``аdmin`` (Cyrillic а) while Bitbucket has ``admin``: not created, a conflict; the rest of
    the run syncs. Also for a name in one script (``рое``) that looks like ``poe``."""
    current = bb([("admin", "Admin", "admin@x.io"), ("poe", "Poe", "poe@x.io")])
    lookalike = DesiredUser("u1", ADMIN_LOOKALIKE, "Admin", "evil@x.io", True)
    poe = DesiredUser("u2", "\u0440\u043e\u0435", "Poe", "p@x.io", True)
    jo = DesiredUser("u3", "jöhn", "John", "john@x.io", True)
    d = desired([lookalike, poe, jo], {"devs": [ADMIN_LOOKALIKE, poe.name, "jöhn"]})
    plan = plan_changes(PlanInput(d, current, {}))
    assert [(op.kind.value, op.target) for op in plan.operations] == [
        ("create_group", "devs"), ("create_user", "jöhn"), ("add_members", "devs")]
    assert plan.operations[2].params["users"] == ["jöhn"]
    assert {c["id"]: c["kind"] for c in plan.conflicts} == {"u1": "confusable_name",
                                                            "u2": "confusable_name"}
    assert "looks like 'admin'" in plan.conflicts[0]["reason"]
    assert "confusable_name" in CONFLICT_KINDS
    assert plan.conflict_counts() == {"confusable_name": 2}


def test_planner_blocks_a_rename_to_a_look_alike() -> None:
    current = bb([("admin", "Admin", "admin@x.io"), ("ann", "Ann", "ann@x.io")])
    renamed = DesiredUser("u1", ADMIN_LOOKALIKE, "Ann", "ann@x.io", True)
    plan = plan_changes(PlanInput(desired([renamed], {}), current, {"u1": "ann"}))
    assert [op.kind.value for op in plan.operations] == []
    assert plan.conflicts[0]["kind"] == "confusable_name"
    assert plan.conflicts[0]["reason"].startswith("rename of 'ann' blocked: ")
    assert plan.anchors == {"u1": "ann"}
