"""The seeded organisation generator: determinism, resource shapes, realism, scale."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    GRANT_SCHEMA,
    USER_EXTENSION,
    USER_SCHEMA,
    IdcsState,
)
from identity_sync.emulators.orggen import ascii_fold, generate_idcs_org

HEX32 = re.compile(r"^[0-9a-f]{32}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def org() -> dict[str, Any]:
    return generate_idcs_org(42, 3_000, 120)


def test_same_seed_same_org_and_different_seed_differs() -> None:
    a, b = generate_idcs_org(9, 300, 25), generate_idcs_org(9, 300, 25)
    assert a == b
    c = generate_idcs_org(10, 300, 25)
    assert [u["id"] for u in c["users"]] != [u["id"] for u in a["users"]]
    assert [u["userName"] for u in c["users"]] != [u["userName"] for u in a["users"]]


def test_dump_format_round_trips_through_the_state(org: dict[str, Any]) -> None:
    assert set(org) == {"users", "groups", "apps", "grants", "clients"}
    assert org["clients"] == [{"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}]
    state = IdcsState()
    state.load_dict(org)
    assert state.to_dict() == org


def test_user_shape(org: dict[str, Any]) -> None:
    ocids = set()
    for u in org["users"]:
        assert HEX32.match(u["id"])
        assert u["ocid"].startswith("ocid1.user.oc1..aaaaaaaa")
        ocids.add(u["ocid"])
        assert u["schemas"][0] == USER_SCHEMA
        assert USER_EXTENSION in u["schemas"]
        assert isinstance(u[USER_EXTENSION]["isFederatedUser"], bool)
        assert u["name"]["formatted"] == f"{u['name']['givenName']} {u['name']['familyName']}"
        work, recovery = u["emails"]
        assert (work["type"], work["primary"], recovery["type"], recovery["primary"]) == (
            "work",
            True,
            "recovery",
            False,
        )
        assert work["value"].split("@")[0] == u["userName"].lower()
        meta = u["meta"]
        assert meta["resourceType"] == "User"
        assert meta["location"].endswith(f"/admin/v1/Users/{u['id']}")
        assert STAMP.match(meta["created"]) and STAMP.match(meta["lastModified"])
        assert "2024-01-01" <= meta["created"] <= meta["lastModified"] < "2027"
        assert isinstance(u["active"], bool)
        assert u["domainOcid"].startswith("ocid1.domain.")
    assert len(ocids) == len(org["users"])
    created = [u["meta"]["created"] for u in org["users"]]
    assert created == sorted(created)  # list order is creation order


def test_user_names_are_unique_folded_and_messy(org: dict[str, Any]) -> None:
    names = [u["userName"] for u in org["users"]]
    assert len({n.lower() for n in names}) == len(names)
    assert all(n.isascii() and " " not in n for n in names)
    assert any(n != n.lower() for n in names)  # some mixed-case userNames
    assert any(re.search(r"\d$", n) for n in names)  # duplicates numbered
    display = [u["displayName"] for u in org["users"]]
    assert any(not d.isascii() for d in display)  # diacritics
    assert any("'" in d for d in display)  # O'Brien, D'Angelo
    assert any("-" in u["name"]["familyName"] for u in org["users"])  # hyphenated
    assert any(", " in d for d in display)  # "Family, Given" display names
    assert any(e["value"] != u["emails"][0]["value"] for u in org["users"] for e in u["emails"][1:])


def test_ascii_fold() -> None:
    assert ascii_fold("José Núñez") == "Jose Nunez"
    assert ascii_fold("Zoë Müller") == "Zoe Muller"
    assert ascii_fold("Łukasz Sørensen Weiß") == "Lukasz Sorensen Weiss"
    assert ascii_fold("Yılmaz Þórsson") == "Yilmaz Thorsson"


def test_ratios(org: dict[str, Any]) -> None:
    n = len(org["users"])
    inactive = sum(not u["active"] for u in org["users"]) / n
    federated = sum(u[USER_EXTENSION]["isFederatedUser"] for u in org["users"]) / n
    assert 0.015 < inactive < 0.05
    assert 0.07 < federated < 0.13


def test_groups_and_memberships(org: dict[str, Any]) -> None:
    groups = org["groups"]
    names = [g["displayName"] for g in groups]
    assert len({n.casefold() for n in names}) == len(names) == 120
    for expected in ("Engineering", "Platform Team", "Bitbucket Admins", "Contractors"):
        assert expected in names
    assert all(HEX32.match(g["id"]) for g in groups)
    per_user = Counter(m["value"] for g in groups for m in g["members"])
    user_ids = {u["id"] for u in org["users"]}
    assert set(per_user) == user_ids  # everyone is somewhere
    assert set(per_user.values()) <= {1, 2, 3, 4, 5}
    dist = Counter(per_user.values())
    assert dist[1] > dist[2] > dist[3] > dist[5]  # skewed towards few groups
    sizes = sorted(len(g["members"]) for g in groups)
    assert sizes[0] == 0  # some groups are empty
    assert sizes[-1] > 10 * sizes[len(sizes) // 2]  # popularity is skewed
    users = {u["id"]: u for u in org["users"]}
    for g in groups:
        for m in g["members"]:
            assert m == {
                "value": m["value"],
                "type": "User",
                "display": users[m["value"]]["displayName"],
                "name": users[m["value"]]["userName"],
            }


def test_apps_and_grants(org: dict[str, Any]) -> None:
    apps = {a["displayName"]: a for a in org["apps"]}
    assert apps["Bitbucket"]["id"] == DEMO_APP_ID
    assert apps["Identity Sync"]["name"] == DEMO_CLIENT_ID
    bitbucket = [g for g in org["grants"] if g["app"]["value"] == DEMO_APP_ID]
    group_grants = [g for g in bitbucket if g["grantee"]["type"] == "Group"]
    user_grants = [g for g in bitbucket if g["grantee"]["type"] == "User"]
    assert {g["grantMechanism"] for g in group_grants} == {"ADMINISTRATOR_TO_GROUP"}
    assert {g["grantMechanism"] for g in user_grants} == {"ADMINISTRATOR_TO_USER"}
    assert 0.45 < len(group_grants) / len(org["groups"]) < 0.75
    assert 5 <= len(user_grants) <= 30
    granted = {g["grantee"]["display"] for g in group_grants}
    assert {"Bitbucket Admins", "Engineering"} <= granted
    assert "All Staff" not in granted
    assert any(g["app"]["value"] != DEMO_APP_ID for g in org["grants"])  # other apps too
    for g in org["grants"]:
        assert g["schemas"] == [GRANT_SCHEMA]
        assert HEX32.match(g["id"])
        assert set(g["grantee"]) == {"value", "type", "display"}
    created = [g["meta"]["created"] for g in org["grants"]]
    assert created == sorted(created)
    ids = [x["id"] for k in ("users", "groups", "apps", "grants") for x in org[k]]
    assert len(ids) == len(set(ids))


def test_app_id_and_groups_per_user_options() -> None:
    other = generate_idcs_org(1, 200, 20, app_id="c" * 32, groups_per_user=(3, 8))
    assert other["apps"][0]["id"] == "c" * 32
    assert all(g["app"]["value"] != DEMO_APP_ID for g in other["grants"])
    per_user = Counter(m["value"] for g in other["groups"] for m in g["members"])
    assert max(per_user.values()) <= 8
    assert sum(per_user.values()) / 200 > 2.5
    with pytest.raises(ValueError):
        generate_idcs_org(1, -1, 5)


def test_tiny_orgs() -> None:
    empty = generate_idcs_org(0, 0, 0)
    assert (empty["users"], empty["groups"]) == ([], [])
    assert empty["apps"][0]["id"] == DEMO_APP_ID
    one = generate_idcs_org(0, 1, 1)
    assert len(one["users"]) == 1
    assert one["groups"][0]["displayName"] == "Bitbucket Admins"


def test_100k_users_5k_groups_generates() -> None:
    started = time.monotonic()
    big = generate_idcs_org(2024, 100_000, 5_000)
    elapsed = time.monotonic() - started
    assert len(big["users"]) == 100_000
    assert len(big["groups"]) == 5_000
    assert len({u["userName"].lower() for u in big["users"]}) == 100_000
    memberships = sum(len(g["members"]) for g in big["groups"])
    assert memberships > 150_000
    assert max(len(g["members"]) for g in big["groups"]) > 10_000  # "All Staff"
    created = datetime.fromisoformat(big["users"][-1]["meta"]["created"])
    assert created.year in (2024, 2025)
    print(f"100k users / 5k groups / {memberships} memberships in {elapsed:.1f}s")
