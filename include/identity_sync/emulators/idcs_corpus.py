"""The bad-input corpus: kinds of broken IDCS data the sync must survive, each with its outcome.

Why a module and not only a test: the same list drives the table-driven test
(``tests/quality/test_corpus.py``), the README table and anyone's manual trials against the
emulator (``state()`` is a ``POST /_emulator/seed`` body, ``corruptions`` a
``PUT /_emulator/corruptions`` body). Every case ends in one of three outcomes:

- ``quarantine``: the broken records are kept out with a readable reason, the rest syncs;
- ``stop``: the run stops at ``stage`` with a one-line reason, before Bitbucket is written;
- ``warning``: nothing is wrong enough to hold back; a failed warning is stored and logged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .idcs_common import DEMO_APP_ID, GRANT_SCHEMA, GROUP_SCHEMA, USER_SCHEMA

Dump = dict[str, Any]
NAMES = [("Alice", "Adams"), ("Bruno", "Bauer"), ("Carol", "Carter"), ("Dmitri", "Dorn"),
         ("Eve", "Ekström"), ("Farid", "Faris"), ("Grace", "Gomez"), ("Hugo", "Hall"),
         ("Ines", "Ito"), ("Jon", "Jansen")]
GROUPS = {"g-eng": "Engineering", "g-ops": "Operations", "g-qa": "QA Team"}


def user_id(n: int) -> str:
    return f"u{n:02d}"


def base_state() -> Dump:
    """Ten clean users, three groups, the Bitbucket app granted to Engineering (everybody)."""
    users = []
    for n, (given, family) in enumerate(NAMES, 1):
        login = f"{given}.{family}".lower().replace("ö", "o")
        users.append({"schemas": [USER_SCHEMA], "id": user_id(n), "userName": login,
                      "displayName": f"{given} {family}", "active": True,
                      "name": {"givenName": given, "familyName": family},
                      "emails": [{"value": f"{login}@example.com", "type": "work",
                                  "primary": True}]})
    members = {"g-eng": range(1, 11), "g-ops": range(1, 5), "g-qa": range(5, 7)}
    groups = [{"schemas": [GROUP_SCHEMA], "id": gid, "displayName": name,
               "members": [{"value": user_id(n), "type": "User"} for n in members[gid]]}
              for gid, name in GROUPS.items()]
    grant = {"schemas": [GRANT_SCHEMA], "id": "grant-eng", "grantMechanism":
             "ADMINISTRATOR_TO_GROUP", "grantee": {"value": "g-eng", "type": "Group",
                                                     "display": "Engineering"},
             "app": {"value": DEMO_APP_ID, "display": "Bitbucket"}}
    app = {"id": DEMO_APP_ID, "displayName": "Bitbucket", "active": True}
    return {"users": users, "groups": groups, "apps": [app], "grants": [grant]}


def _user(dump: Dump, n: int) -> dict[str, Any]:
    return next(u for u in dump["users"] if u["id"] == user_id(n))


def set_user(n: int, **attrs: Any) -> Callable[[Dump], None]:
    """Set (or, with None, remove) attributes of user ``n`` in the state dump."""
    def mutate(dump: Dump) -> None:
        user = _user(dump, n)
        for k, v in attrs.items():
            if v is None:
                user.pop(k, None)
            else:
                user[k] = v
    return mutate


def set_group(gid: str, **attrs: Any) -> Callable[[Dump], None]:
    def mutate(dump: Dump) -> None:
        group = next(g for g in dump["groups"] if g["id"] == gid)
        group.update({k: v for k, v in attrs.items() if v is not None})
        for k in [k for k, v in attrs.items() if v is None]:
            group.pop(k, None)
    return mutate


def add_group(gid: str, name: str, members: range) -> Callable[[Dump], None]:
    def mutate(dump: Dump) -> None:
        dump["groups"].append({"schemas": [GROUP_SCHEMA], "id": gid, "displayName": name,
                               "members": [{"value": user_id(n)} for n in members]})
    return mutate


def keep_users(count: int) -> Callable[[Dump], None]:
    def mutate(dump: Dump) -> None:
        dump["users"] = dump["users"][:count]
    return mutate


def every_user(**attrs: Any) -> Callable[[Dump], None]:
    def mutate(dump: Dump) -> None:
        for n in range(1, len(dump["users"]) + 1):
            set_user(n, **attrs)(dump)
    return mutate


def email(value: str, primary: bool = True, kind: str = "work") -> dict[str, Any]:
    return {"value": value, "type": kind, "primary": primary}


def page(kind: str, path: str = "/admin/v1/Users", start: int | None = 5, cap: int = 4,
         **extra: Any) -> dict[str, Any]:
    """Corruptions: ``kind`` on the page starting at ``start`` with ``cap`` users per page."""
    return {"page_cap": cap, "rules": [{"kind": kind, "path": path, "start_index": start,
                                        **extra}]}


def raw_user(uid: str | None, login: str, groups: tuple[str, ...] = ("g-eng",)) -> Dump:
    user: Dump = {"schemas": [USER_SCHEMA], "userName": login, "displayName": login.title(),
                  "name": {"givenName": login, "familyName": "Raw"}, "active": True,
                  "emails": [email(f"{login}@example.com")],
                  "groups": [{"value": g} for g in groups]}
    if uid:
        user["id"] = uid
    return user


@dataclass(frozen=True)
class Case:
    name: str
    broken: str  # what is wrong, for people
    outcome: str  # quarantine | stop | warning
    stage: str  # where it is caught: extract, check_quality, map_desired, check_desired_quality
    expect: str  # text the reason (quarantine row or run message) contains
    mutate: Callable[[Dump], None] | None = None
    corruptions: dict[str, Any] | None = None
    quarantined: tuple[str, ...] = ()  # "type:id" records that must be quarantined
    affected: tuple[str, ...] = ()  # base user ids allowed to miss the desired state
    history: bool = False  # a successful run of the clean tenant comes first
    notes: str = ""

    def state(self) -> Dump:
        dump = base_state()
        if self.mutate:
            self.mutate(dump)
        return copy.deepcopy(dump)


Q, S, W = "quarantine", "stop", "warning"
CQ, CD, EX, MD = "check_quality", "check_desired_quality", "extract", "map_desired"
CASES: list[Case] = [
    Case("missing_username", "a user without userName", Q, CQ, "userName is required",
         set_user(3, userName=None), quarantined=("user:u03",), affected=("u03",)),
    Case("username_with_spaces", "userName 'carol  carter'", Q, CD, "characters",
         set_user(3, userName="carol  carter"), quarantined=("user:u03",), affected=("u03",)),
    Case("username_with_slash", "userName 'ops/carol'", Q, CD, "characters",
         set_user(3, userName="ops/carol"), quarantined=("user:u03",), affected=("u03",)),
    Case("username_control_chars", "userName with a BEL and a newline", Q, CQ,
         "control characters", set_user(3, userName="carol\x07\ncarter"),
         quarantined=("user:u03",), affected=("u03",)),
    Case("username_emoji", "userName 'carol🚀'", Q, CD, "characters",
         set_user(3, userName="carol🚀"), quarantined=("user:u03",), affected=("u03",)),
    Case("username_300_chars", "a 300-character userName", Q, CD, "longer than 255",
         set_user(3, userName="c" * 300), quarantined=("user:u03",), affected=("u03",)),
    Case("username_case_duplicate", "'Alice.Adams' next to 'alice.adams'", Q, CQ,
         "unique case-insensitively", set_user(3, userName="Alice.Adams"),
         quarantined=("user:u01", "user:u03"), affected=("u01", "u03"),
         notes="both users are held back, neither wins"),
    Case("email_missing", "no email at all", Q, CQ, "requires an email",
         set_user(3, emails=None), quarantined=("user:u03",), affected=("u03",)),
    Case("email_invalid", "email 'carol.carter.example.com'", Q, CQ, "malformed email",
         set_user(3, emails=[email("carol.carter.example.com")]), quarantined=("user:u03",),
         affected=("u03",)),
    Case("email_with_spaces", "email 'carol carter@example.com'", Q, CQ, "malformed email",
         set_user(3, emails=[email("carol carter@example.com")]), quarantined=("user:u03",),
         affected=("u03",)),
    Case("email_duplicate", "two users share one address", W, CQ, "share an email",
         set_user(3, emails=[email("alice.adams@example.com")]),
         notes="Bitbucket accepts shared addresses; the warning is stored and both sync"),
    Case("email_multiple_primary", "two different emails marked primary", Q, CQ,
         "more than one email is marked primary",
         set_user(3, emails=[email("carol@example.com"), email("c.carter@example.com")]),
         quarantined=("user:u03",), affected=("u03",)),
    Case("email_only_recovery", "only a personal recovery address", Q, CQ,
         "requires an email",
         set_user(3, emails=[email("carol@mail.example.org", False, "recovery")]),
         quarantined=("user:u03",), affected=("u03",)),
    Case("no_name_parts", "no displayName and no name object", Q, CQ,
         "no displayName, givenName or familyName", set_user(3, displayName=None, name=None),
         quarantined=("user:u03",), affected=("u03",)),
    Case("blank_display_name", "displayName of spaces, no name parts", Q, MD,
         "displayName is empty", set_user(3, displayName="   ", name=None),
         quarantined=("user:u03",), affected=("u03",)),
    Case("wrong_json_types", "emails is a string, name is a list", Q, CQ,
         "requires an email",
         corruptions={"rules": [{"kind": "patch", "match": {"id": "u03"},
                                 "set": {"emails": "carol@example.com", "name": ["Carol"]}}]},
         quarantined=("user:u03",), affected=("u03",)),
    Case("group_without_display_name", "group 'QA Team' lost its displayName", Q, CQ,
         "has no displayName", set_group("g-qa", displayName=None),
         quarantined=("group:g-qa",)),
    Case("group_name_collision", "'Engineering!' and 'Engineering' both map to 'engineering'",
         Q, CD, "map to the same Bitbucket group name",
         add_group("g-eng2", "Engineering!", range(1, 3)),
         quarantined=("group:g-eng", "group:g-eng2"),
         notes="the group is left out of the desired state; its members still sync"),
    Case("membership_unknown_group", "a user lists a group the Groups listing lacks", Q, CQ,
         "unknown group",
         corruptions={"rules": [{"kind": "patch", "match": {"id": "u03"},
                                 "set": {"groups": [{"value": "g-eng"},
                                                    {"value": "g-deleted"}]}}]},
         quarantined=("membership:u03 in g-deleted",)),
    Case("membership_unknown_user", "a member with no user id (an unknown user)", Q, CQ,
         "without an id",
         corruptions={"rules": [{"kind": "append", "value": [raw_user(None, "ghost")]}]},
         quarantined=("user:row-10:ghost", "membership:(no id) ghost in g-eng")),
    Case("duplicate_user_id", "two different users with the same id", S, CQ,
         "duplicate ids",
         corruptions={"rules": [{"kind": "append", "value": [raw_user("u01", "impostor")]}]}),
    Case("all_users_broken", "every user lost its email", S, CD, "no user is left",
         every_user(emails=None), affected=tuple(user_id(n) for n in range(1, 11))),
    Case("page_not_json", "the second users page is not JSON", S, EX, "not valid JSON",
         corruptions=page("not_json")),
    Case("page_truncated", "the second users page is cut off mid-JSON", S, EX,
         "not valid JSON", corruptions=page("truncated")),
    Case("html_error_page_200", "a proxy's HTML error page with status 200", S, EX,
         "content type 'text/html'", corruptions=page("html_200")),
    Case("wrong_content_type", "valid JSON labelled text/plain", S, EX,
         "content type 'text/plain'", corruptions=page("content_type")),
    Case("total_results_too_high", "totalResults says 25, there are 10", S, EX,
         "stopped at 10 of 25", corruptions=page("total_results", start=None, value=25)),
    Case("total_results_too_low", "totalResults says 4, one page brings 10", S, EX,
         "totalResults says 4",
         corruptions={"rules": [{"kind": "total_results", "value": 4}]}),
    Case("total_results_changes", "totalResults changes between pages", S, EX,
         "totalResults changed", corruptions=page("total_results", value=9)),
    Case("page_repeats_previous", "the second page repeats the first page's users", S, EX,
         "repeats 4 records", corruptions=page("repeat_previous")),
    Case("groups_page_html", "the Groups listing answers an HTML page", S, EX,
         "content type 'text/html'", corruptions=page("html_200", "/admin/v1/Groups", None)),
    Case("grants_not_json", "the Grants listing is not JSON", S, EX, "not valid JSON",
         corruptions=page("not_json", "/admin/v1/Grants", None)),
    Case("empty_tenant", "a tenant with no users", S, CQ, "empty extract",
         keep_users(0)),
    Case("lost_60_percent", "10 users at the last successful run, 4 now", S, CQ,
         "row count vs last successful run", keep_users(4), history=True),
]


def by_name(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def table() -> str:
    """The corpus as a Markdown table (the README's copy is generated from this)."""
    lines = ["| case | broken input | outcome | caught at | reason contains |",
             "|---|---|---|---|---|"]
    lines += [f"| `{c.name}` | {c.broken} | {c.outcome} | {c.stage} | {c.expect} |"
              for c in CASES]
    return "\n".join(lines)
