from __future__ import annotations

import pytest

from identity_sync.mapping.rules import RulesError, load_rules, parse_rules
from identity_sync.mapping.templates import TemplateError, parse_template
from identity_sync.mapping.transform import build_desired_state, map_group_names
from identity_sync.model import IdcsGroup, IdcsSnapshot, IdcsUser


def user(uid: str, name: str, *, email: str | None = None, active: bool = True,
         groups: tuple[str, ...] = (), display: str | None = None) -> IdcsUser:
    return IdcsUser(uid, name, display or name.title(), "Given", "Family",
                    email if email is not None else f"{name}@example.com", active,
                    group_ids=groups)


class TestTemplates:
    def test_functions_chain(self) -> None:
        t = parse_template("{givenName|ascii|lower}.{familyName|slug}")
        assert t.render({"givenName": "Zoë", "familyName": "Núñez O'Brien"}) == "zoe.nunez-o-brien"

    def test_email_local_and_upper(self) -> None:
        t = parse_template("{email|email_local|upper}")
        assert t.render({"email": "Jane.Doe@Example.com"}) == "JANE.DOE"

    def test_missing_value_renders_none(self) -> None:
        assert parse_template("x-{displayName}").render({"displayName": ""}) is None

    def test_unknown_function_is_named(self) -> None:
        with pytest.raises(TemplateError, match="unknown function 'lowercase'"):
            parse_template("{userName|lowercase}")

    def test_unknown_attribute_is_named(self) -> None:
        with pytest.raises(TemplateError, match="unknown attribute 'login'"):
            parse_template("{login}", open_paths=False)
        with pytest.raises(TemplateError, match="unknown attribute 'urn:x:'"):
            parse_template("{urn:x:}")


class TestRules:
    def test_bundled_rules_load(self) -> None:
        rules, digest = load_rules()
        assert rules.scope.mode == "app_grants"
        assert rules.groups.permissions["bitbucket-users"] == "LICENSED_USER"
        assert len(digest) == 12

    def test_error_names_field_and_problem(self) -> None:
        with pytest.raises(RulesError) as err:
            parse_rules("groups:\n  permissions:\n    devs: SUPERUSER\n")
        assert "groups.permissions.devs" in str(err.value)
        assert "LICENSED_USER" in str(err.value)

    def test_unknown_key_rejected(self) -> None:
        with pytest.raises(RulesError, match=r"users\.deprovison: Extra inputs"):
            parse_rules("users:\n  deprovison: delete\n")

    def test_bad_template_rejected_at_load(self) -> None:
        with pytest.raises(RulesError, match=r"users\.attributes\.name: .*unknown function 'nope'"):
            parse_rules("users:\n  attributes:\n    name: {template: '{userName|nope}'}\n")

    def test_not_yaml(self) -> None:
        with pytest.raises(RulesError, match="not valid YAML"):
            parse_rules("users: [unclosed")

    def test_missing_file(self, tmp_path) -> None:
        with pytest.raises(RulesError, match="cannot read rules file"):
            load_rules(tmp_path / "nope.yaml")


class TestTransform:
    def rules(self, extra: str = ""):
        return parse_rules(
            "groups:\n  name_template: 'bb-{displayName|slug}'\n  default_groups: [all-devs]\n"
            "  rename: {Admins: bitbucket-admins}\n  exclude: ['All Tenant Users', 'Temp*']\n"
            + extra)

    def test_group_names(self) -> None:
        groups = [IdcsGroup("g1", "Platform Team"), IdcsGroup("g2", "Admins"),
                  IdcsGroup("g3", "Temporary Staff"), IdcsGroup("AllUsersId", "All Tenant Users")]
        assert map_group_names(groups, self.rules()) == {"g1": "bb-platform-team",
                                                        "g2": "bitbucket-admins"}

    def test_desired_state(self) -> None:
        snap = IdcsSnapshot(
            users=[user("u1", "Alice.Smith", groups=("g1",)),
                   user("u2", "bob", groups=("g1", "g2"), active=False),
                   user("u3", "carol", groups=("g3",))],
            groups=[IdcsGroup("g1", "Platform Team"), IdcsGroup("g2", "Admins"),
                    IdcsGroup("g3", "Temporary Staff")],
            scope="all")
        desired = build_desired_state(snap, self.rules()).desired
        assert desired.users["u1"].name == "alice.smith"
        assert desired.users["u1"].email == "alice.smith@example.com"
        assert desired.users["u2"].active is False
        assert desired.managed_groups == ["all-devs", "bb-platform-team", "bitbucket-admins"]
        assert desired.memberships == {"all-devs": ["alice.smith", "carol"],
                                       "bb-platform-team": ["alice.smith"],
                                       "bitbucket-admins": []}

    def test_collisions_and_empty_values_rejected(self) -> None:
        snap = IdcsSnapshot(users=[user("u1", "Dana"), user("u2", "DANA"),
                                   user("u3", "erin", email="")], groups=[], scope="all")
        result = build_desired_state(snap, self.rules())
        assert set(result.desired.users) == set()  # nobody owns "dana": both are held
        reasons = {r["id"]: r["reason"] for r in result.rejected}
        assert reasons["u1"] == "mapped name 'dana' collides with IDCS user(s) u2"
        assert reasons["u2"] == "mapped name 'dana' collides with IDCS user(s) u1"
        assert reasons["u3"] == "mapped emailAddress is empty"

    def test_collision_leaves_the_anchored_owner_in_place(self) -> None:
        snap = IdcsSnapshot(users=[user("u1", "Dana"), user("u2", "DANA")], groups=[],
                            scope="all")
        result = build_desired_state(snap, self.rules(), anchors={"u2": "dana"})
        assert set(result.desired.users) == {"u2"}
        assert result.rejected == [{"id": "u1", "reason": "mapped name 'dana' collides with "
                                    "IDCS user(s) u2; u2 already owns it"}]


@pytest.mark.parametrize(("template", "expected"), [
    ("{userName|lower}", "jane.o'neil-smith"),
    ("{userName|upper}", "JANE.O'NEIL-SMITH"),
    ("{displayName|trim}", "Jäne  O'Neil"),
    ("{displayName|ascii|trim}", "Jane  O'Neil"),
    ("{displayName|slug}", "jane-o-neil"),
    ("{email|email_local}", "Jane.ONeil"),
    ("{email|replace('.', '_')}", "Jane_ONeil@Example_com"),
    (r"{displayName|regex_replace('\s+', ' ')|trim}", "Jäne O'Neil"),
    ("{email|split('@', 1)}", "Example.com"),
    ("{email|part('.', 0)}", "Jane"),
    ("{userName|truncate(4)}", "Jane"),
    ("{familyName|default('n/a')}", "n/a"),
    ("{coalesce(familyName, givenName)}", "Jäne"),
    ("{join('.', givenName, familyName, userName)|lower}", "jäne.jane.o'neil-smith"),
])
def test_every_template_function(template: str, expected: str) -> None:
    values = {"userName": "Jane.O'Neil-Smith", "displayName": "  Jäne  O'Neil ",
              "email": "Jane.ONeil@Example.com", "givenName": "Jäne", "familyName": None}
    assert parse_template(template).render(values) == expected
