"""Extract against the emulator: scope modes (all, App grants by id or name, SCIM filter),
membership strategies (user side vs per-group pages, a 12,000-member group), attribute
projection, the IDP attribute for group assignment, an empty tenant, unicode and long names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import DEMO_APP_ID, create_idcs_app
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.idcs.extract import (
    USER_EXTENSION,
    ScopeError,
    choose_memberships,
    extract_full,
    resolve_app,
)
from identity_sync.mapping.rules import parse_rules
from identity_sync.mapping.transform import build_desired_state
from identity_sync.subset import Subset, extract_subset

from .conftest import Idcs

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def memberships(state: dict[str, Any]) -> dict[str, set[str]]:
    """User id -> group ids, straight from the emulator's state dump."""
    out: dict[str, set[str]] = {u["id"]: set() for u in state["users"]}
    for group in state["groups"]:
        for member in group.get("members") or []:
            out[member["value"]].add(group["id"])
    return out


def granted(state: dict[str, Any], app_id: str) -> set[str]:
    """Users holding the App directly or through a granted group, from the state dump."""
    grants = [g for g in state["grants"] if g["app"]["value"] == app_id]
    groups = {g["grantee"]["value"] for g in grants if g["grantee"]["type"] == "Group"}
    users = {g["grantee"]["value"] for g in grants if g["grantee"]["type"] == "User"}
    return users | {u for u, gs in memberships(state).items() if gs & groups}


def test_all_users_with_memberships_from_the_user_side(idcs: Idcs) -> None:
    client = idcs.client()
    result = extract_full(client)
    state = idcs.dump()
    assert result.memberships.strategy == "user_side"
    assert {u.id: set(u.group_ids) for u in result.snapshot.users} == memberships(state)
    assert "AllUsersId" not in {g.id for g in result.snapshot.groups}
    assert len(result.snapshot.groups) == len(state["groups"])
    # token + one page of users + one page of groups: the minimum the API allows
    assert client.requests_made == 3


def test_group_side_strategy_gives_the_same_memberships(idcs: Idcs) -> None:
    user_side = extract_full(idcs.client()).snapshot.users
    client = idcs.client()
    group_side = extract_full(client, membership="group_side")
    assert group_side.memberships.strategy == "group_side"
    assert ({u.id: set(u.group_ids) for u in group_side.snapshot.users}
            == {u.id: set(u.group_ids) for u in user_side})
    member_reads = client.metrics.snapshot()["endpoints"]["GET /admin/v1/Groups/{id}"]
    assert member_reads["requests"] == len(idcs.dump()["groups"])


def test_the_cheaper_side_is_chosen_by_counting_requests() -> None:
    listed = choose_memberships(10_000, 1_000, users_listed=True)
    assert (listed.strategy, listed.user_side_requests, listed.group_side_requests) == (
        "user_side", 0, 2_000)  # per group: its member count and one page
    few_users = choose_memberships(5_000, 2, users_listed=False)
    assert (few_users.strategy, few_users.user_side_requests) == ("group_side", 5)
    sized = choose_memberships(50, 2, users_listed=False, member_counts={"a": 12_000, "b": 3})
    assert (sized.strategy, sized.group_side_requests) == ("user_side", 2 + 1 + 1 + 1)
    assert "fewer" in listed.describe() and "user side" in listed.describe()


def test_app_grants_scope_direct_and_through_groups(idcs: Idcs) -> None:
    client = idcs.client()
    result = extract_full(client, mode="app_grants", app_id=DEMO_APP_ID)
    state = idcs.dump()
    in_scope = {u.id for u in result.snapshot.users}
    assert in_scope == granted(state, DEMO_APP_ID) and 0 < len(in_scope) < len(state["users"])
    # cross-check with the grants IDCS itself derives for members of granted groups
    body = client.get("/admin/v1/Grants", {
        "filter": f'app.value eq "{DEMO_APP_ID}" and grantee.type eq "User"', "count": 1000,
        "attributes": "grantee"})
    assert in_scope == {g["grantee"]["value"] for g in body.get("Resources", [])}
    assert result.snapshot.total_users_seen == len(state["users"])


def test_app_granted_through_a_group_the_rules_skip_or_all_tenant_users(idcs: Idcs) -> None:
    state = idcs.dump()
    skipped = next(g for g in state["grants"] if g["app"]["value"] == DEMO_APP_ID
                   and g["grantee"]["type"] == "Group")["grantee"]["value"]
    only_others = lambda groups: [g.id for g in groups if g.id != skipped]  # noqa: E731
    both = [extract_full(idcs.client(), mode="app_grants", app_id=DEMO_APP_ID,
                         membership=side, wanted_groups=only_others)
            for side in ("user_side", "group_side")]
    assert {u.id for u in both[0].snapshot.users} == {u.id for u in both[1].snapshot.users} \
        == granted(state, DEMO_APP_ID)
    everyone = {**state["grants"][0], "id": "e" * 32, "app": {"value": DEMO_APP_ID},
                "grantee": {"value": "AllUsersId", "type": "Group"}}
    idcs.seed({**state, "grants": [*state["grants"], everyone]})
    result = extract_full(idcs.client(), mode="app_grants", app_id=DEMO_APP_ID)
    assert len(result.snapshot.users) == len(state["users"])


def test_app_resolved_from_its_display_name(idcs: Idcs) -> None:
    client = idcs.client()
    assert resolve_app(client, "Bitbucket") == DEMO_APP_ID
    by_name = extract_full(client, mode="app_grants", app_id="Bitbucket")
    assert by_name.app_id == DEMO_APP_ID
    assert {u.id for u in by_name.snapshot.users} == granted(idcs.dump(), DEMO_APP_ID)


def test_unknown_or_ambiguous_app_names_are_clear_errors(idcs: Idcs) -> None:
    client = idcs.client()
    with pytest.raises(ScopeError, match="no IDCS App is named 'Bitbuckt'"):
        resolve_app(client, "Bitbuckt")
    state = idcs.dump()
    twin = {**state["apps"][1], "id": "f" * 32, "displayName": "Bitbucket"}
    idcs.seed({**state, "apps": [*state["apps"], twin]})
    with pytest.raises(ScopeError, match="2 IDCS Apps are named 'Bitbucket'"):
        resolve_app(client, "Bitbucket")


def test_scim_filter_scope_and_attribute_projection(idcs: Idcs) -> None:
    client = idcs.client()
    seen: list[dict[str, Any]] = []

    def keep(resp: requests.Response, *args: object, **kwargs: object) -> None:
        if resp.request.path_url.startswith("/admin/v1/Users"):
            seen.extend(resp.json().get("Resources", []))

    client.session.hooks["response"].append(keep)
    result = extract_full(client, mode="filter", scim_filter='userType eq "Contractor"',
                          extra_attributes=[f"{ENTERPRISE}:department", "title"])
    contractors = {u["id"] for u in idcs.dump()["users"] if u["userType"] == "Contractor"}
    assert {u.id for u in result.snapshot.users} == contractors
    allowed = {"id", "userName", "displayName", "name", "emails", "active", "groups", "schemas",
               "meta", USER_EXTENSION, ENTERPRISE, "title"}
    assert seen and all(set(r) <= allowed for r in seen)  # nothing the rules do not read
    assert all("ocid" not in r and "phoneNumbers" not in r for r in seen)


def test_attribute_for_group_membership_assignment_end_to_end(idcs: Idcs) -> None:
    rules = parse_rules(f"""
scope: {{mode: all}}
groups:
  include: []
  from_attribute: {{attribute: "{ENTERPRISE}:department", name_template: "dept-{{value|slug}}"}}
""")
    client = idcs.client()
    result = extract_full(client, extra_attributes=rules.extra_user_attributes())
    desired = build_desired_state(result.snapshot, rules).desired
    state = idcs.dump()
    expected: dict[str, set[str]] = {}
    for user in state["users"]:
        department = (user.get(ENTERPRISE) or {}).get("department")
        if department and user.get("active", True):
            slug = department.lower().replace(" & ", "-").replace(" ", "-")
            expected.setdefault(f"dept-{slug}", set()).add(user["userName"].lower())
    got = {g: set(m) for g, m in desired.memberships.items() if m}
    assert got.keys() == expected.keys() and got == expected


def test_empty_tenant(idcs: Idcs) -> None:
    idcs.seed({"users": [], "groups": [], "apps": [], "grants": []})
    client = idcs.client()
    result = extract_full(client)
    assert result.snapshot.users == [] and result.snapshot.groups == []
    assert result.snapshot.total_users_seen == 0 and client.requests_made == 3
    assert extract_full(idcs.client(), membership="group_side").snapshot.users == []


def test_unicode_and_very_long_names_round_trip(idcs: Idcs) -> None:
    state = idcs.dump()
    long_name = "Ünïcødé " + "Ω" * 300 + " 李小龍 👩‍💻"
    tricky = 'zoë.o"brien\\ångström'
    state["users"][0].update(userName=tricky, displayName=long_name)
    state["groups"][0]["displayName"] = "Équipe " + "é" * 500
    idcs.seed(state)
    client = idcs.client()
    users = {u.id: u for u in extract_full(client).snapshot.users}
    assert users[state["users"][0]["id"]].user_name == tricky
    assert users[state["users"][0]["id"]].display_name == long_name
    groups = {g.id: g.display_name for g in extract_full(client).snapshot.groups}
    assert groups[state["groups"][0]["id"]] == "Équipe " + "é" * 500
    # the quote and backslash survive a SCIM filter too (subset by userName)
    part = extract_subset(client, Subset(users=(tricky,)), mode="all", app_id=None)
    assert [u.user_name for u in part.snapshot.users] == [tricky] and not part.missing_users


@pytest.fixture(scope="module")
def big_group() -> Iterator[tuple[Idcs, str, dict[str, Any]]]:
    """12,500 users, a group holding 12,000 of them (over IDCS's 10,000 per answer)."""
    state = generate_idcs_org(5, 12_500, 3, groups_per_user=(0, 1))
    big = state["groups"][0]
    big["members"] = [{"value": u["id"], "type": "User", "display": u["displayName"],
                       "name": u["userName"]} for u in state["users"][:12_000]]
    app = create_idcs_app()
    app.state.emulator.load_dict(state)
    with serving(app) as running:
        yield Idcs(app, running.base_url), big["id"], state


def test_12000_member_group_reads_correctly_both_ways(
        big_group: tuple[Idcs, str, dict[str, Any]]) -> None:
    idcs, big_id, _ = big_group
    client = idcs.client()
    members = [m["value"] for m in client.iter_group_members(big_id)]
    assert len(members) == len(set(members)) == 12_000
    assert client.metrics.snapshot()["endpoints"]["GET /admin/v1/Groups/{id}"]["pages"] == 2
    unpaged = requests.get(f"{idcs.url}/admin/v1/Groups/{big_id}",
                           params={"attributes": "members"},
                           headers={"Authorization": f"Bearer {client.token()}"}, timeout=30)
    assert unpaged.status_code == 400  # what the paging avoids
    user_side = extract_full(idcs.client())
    assert sum(big_id in u.group_ids for u in user_side.snapshot.users) == 12_000
    group_side = extract_full(idcs.client(), membership="group_side")
    assert ({u.id: set(u.group_ids) for u in group_side.snapshot.users}
            == {u.id: set(u.group_ids) for u in user_side.snapshot.users})
