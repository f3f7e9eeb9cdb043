"""Rules features: attribute sources, scope filters, group mapping, extra attributes."""

from __future__ import annotations

from typing import ClassVar

import pytest

from identity_sync.idcs.extract import parse_user, resolve_path
from identity_sync.mapping.rules import RulesError, parse_rules
from identity_sync.mapping.transform import build_desired_state, map_group_names
from identity_sync.model import IdcsGroup, IdcsSnapshot, IdcsUser

CUSTOM = "urn:ietf:params:scim:schemas:idcs:extension:custom:User"


def user(uid: str, name: str, *, active: bool = True, federated: bool = False,
         groups: tuple[str, ...] = (), **extra: object) -> IdcsUser:
    return IdcsUser(uid, name, f"{name.title()} X", name.title(), "X", f"{name}@x.io", active,
                    federated, groups, dict(extra))


def desired(yaml: str, users: list[IdcsUser], groups: list[IdcsGroup] | None = None):
    return build_desired_state(IdcsSnapshot(users, groups or [], "all"), parse_rules(yaml))


class TestAttributeRules:
    def test_source_constant_template_and_create_only(self) -> None:
        result = desired("""
users:
  attributes:
    name: {source: userName}
    displayName: {constant: "Bitbucket user", apply: create}
    emailAddress: {template: "{join('.', givenName, familyName)|lower}@corp.example"}
""", [user("u1", "Ann")])
        got = result.desired.users["u1"]
        assert (got.name, got.display_name, got.email) == ("Ann", "Bitbucket user",
                                                           "ann.x@corp.example")
        assert result.desired.create_only == ["displayName"]

    def test_exactly_one_origin(self) -> None:
        with pytest.raises(RulesError, match=r"users\.attributes\.name: .*exactly one of source"):
            parse_rules("users:\n  attributes:\n    name: {source: userName, constant: x}\n")

    def test_extra_attributes_are_collected_for_extraction(self) -> None:
        rules = parse_rules(f"""
users:
  attributes:
    displayName: {{template: "{{coalesce(nickName, displayName)}}"}}
scope:
  exclude:
    attributes: [{{attribute: "{CUSTOM}:costCenter", equals: "X"}}]
groups:
  from_attribute: {{attribute: title}}
""")
        assert rules.extra_user_attributes() == ["nickName", "title", f"{CUSTOM}:costCenter"]


class TestScope:
    USERS: ClassVar = [user("u1", "ann", groups=("g1",), title="Engineer"),
             user("u2", "bob", federated=True, title="Contractor"),
             user("u3", "cid", active=False, groups=("g1",)),
             user("u4", "svc-build", title="Service")]
    GROUPS: ClassVar = [IdcsGroup("g1", "Developers")]

    def names(self, yaml: str) -> list[str]:
        result = desired(yaml, self.USERS, self.GROUPS)
        return sorted(u.name for u in result.desired.users.values())

    def test_include_member_of(self) -> None:
        assert self.names("scope:\n  include: {member_of: [developers]}\n") == ["ann", "cid"]

    def test_exclude_by_regex_and_federation(self) -> None:
        assert self.names("scope:\n  exclude:\n    federated: true\n    attributes:\n"
                          "      - {attribute: userName, matches: '^svc-'}\n") == ["ann", "cid"]

    def test_include_active_and_attribute_in(self) -> None:
        assert self.names("scope:\n  include:\n    active: true\n    attributes:\n"
                          "      - {attribute: title, in: [engineer, service]}\n") == [
            "ann", "svc-build"]

    def test_filter_mode_needs_a_filter(self) -> None:
        with pytest.raises(RulesError, match="mode 'filter' needs a SCIM filter"):
            parse_rules("scope: {mode: filter}\n")
        assert parse_rules("scope: {mode: filter, filter: 'title eq \"x\"'}\n").scope.filter


class TestGroups:
    def test_rename_regex_prefix_suffix(self) -> None:
        rules = parse_rules("""
groups:
  name_template: "{displayName|slug}"
  regex_rename: [{pattern: "^team-", replace: ""}]
  prefix: "idcs-"
  suffix: "-g"
  rename: {Admins: bitbucket-admins}
""")
        groups = [IdcsGroup("a", "Team Platform"), IdcsGroup("b", "Admins")]
        assert map_group_names(groups, rules) == {"a": "idcs-platform-g", "b": "bitbucket-admins"}

    def test_groups_from_attribute_managed_and_additive(self) -> None:
        result = desired("""
groups:
  name_template: "{displayName|slug}"
  from_attribute: {attribute: title, name_template: "title-{value|slug}"}
  managed: ["title-*"]
  default_groups: [everyone]
  new_user_groups: [welcome]
""", [user("u1", "ann", groups=("g1",), title="Senior Engineer"),
      user("u2", "bob", title=["Ops", "On Call"])], [IdcsGroup("g1", "Developers")])
        d = result.desired
        assert d.managed_groups == ["title-on-call", "title-ops", "title-senior-engineer"]
        assert d.additive_groups == ["developers", "everyone"]
        assert d.memberships["title-ops"] == ["bob"]
        assert d.memberships["everyone"] == ["ann", "bob"]
        assert d.initial_groups == ["welcome"]

    def test_protected_groups_are_never_produced(self) -> None:
        result = desired("groups:\n  default_groups: [stash-users]\n  protected: [stash-*]\n"
                         "  permissions: {stash-users: LICENSED_USER}\n", [user("u1", "ann")])
        assert result.desired.managed_groups == [] and result.desired.group_permissions == {}


def test_resolve_path_and_extra_attributes() -> None:
    resource = {"id": "u1", "userName": "ann", "title": "Eng", "name": {"middleName": "Q"},
                CUSTOM: {"costCenter": "CC-1"},
                "emails": [{"value": "a@x.io", "type": "work", "primary": True}]}
    assert resolve_path(resource, "name.middleName") == "Q"
    assert resolve_path(resource, f"{CUSTOM}:costCenter") == "CC-1"
    assert resolve_path(resource, "emails") == ["a@x.io"]
    assert resolve_path(resource, "nope.deeper") is None
    parsed = parse_user(resource, ["title", f"{CUSTOM}:costCenter"])
    assert parsed.extra == {"title": "Eng", f"{CUSTOM}:costCenter": "CC-1"}
