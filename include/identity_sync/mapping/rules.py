"""The one rules file (YAML in ``include/``), validated when it loads.

Errors name the field and the problem, e.g. ``groups.permissions.devs: Input should be
'LICENSED_USER', 'PROJECT_CREATE', 'ADMIN' or 'SYS_ADMIN'``.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .templates import (
    GROUP_ATTRIBUTES,
    USER_ATTRIBUTES,
    Template,
    TemplateError,
    parse_template,
)

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[2] / "sync_rules.yaml"


class Permission(StrEnum):
    LICENSED_USER = "LICENSED_USER"
    PROJECT_CREATE = "PROJECT_CREATE"
    ADMIN = "ADMIN"
    SYS_ADMIN = "SYS_ADMIN"


class RulesError(ValueError):
    """The rules file is missing, not YAML, or invalid; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeRule(_Strict):
    """Where a Bitbucket attribute comes from: exactly one of ``source`` (an IDCS attribute),
    ``constant`` or ``template``; ``apply: create`` sets it on new users only."""

    source: str | None = None
    constant: str | None = None
    template: str | None = None
    apply: Literal["always", "create"] = "always"

    @model_validator(mode="after")
    def _one_origin(self) -> AttributeRule:
        given = [k for k in ("source", "constant", "template") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of source, constant or template"
                             + (f" (got {', '.join(given)})" if given else ""))
        try:
            self.compile()
        except TemplateError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def compile(self) -> Template:
        if self.source is not None:
            return parse_template("{" + self.source + "}")
        if self.constant is not None:
            return Template(self.constant, (self.constant,))
        return parse_template(self.template or "")


class UserAttributes(_Strict):
    name: AttributeRule = AttributeRule(template="{userName|lower}")
    displayName: AttributeRule = AttributeRule(template="{displayName|trim}")
    emailAddress: AttributeRule = AttributeRule(template="{email|lower}")

    def items(self) -> list[tuple[str, AttributeRule]]:
        return [("name", self.name), ("displayName", self.displayName),
                ("emailAddress", self.emailAddress)]


class Condition(_Strict):
    """One attribute test: ``equals`` / ``in`` (case-insensitive) or ``matches`` (regex)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    attribute: str
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    matches: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        given = [k for k in ("equals", "in_", "matches") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, in or matches")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"bad regex {self.matches!r}: {exc}") from exc
        return self

    def test(self, value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        texts = ["" if v is None else str(v) for v in values]
        if self.equals is not None:
            return any(t.casefold() == self.equals.casefold() for t in texts)
        if self.in_ is not None:
            wanted = {w.casefold() for w in self.in_}
            return any(t.casefold() in wanted for t in texts)
        return any(re.search(self.matches or "", t) for t in texts)


class ScopeFilter(_Strict):
    active: bool | None = None
    federated: bool | None = None
    member_of: list[str] = Field(default_factory=list, description="IDCS group display names")
    attributes: list[Condition] = Field(default_factory=list)


class ScopeRules(_Strict):
    """Which IDCS users are in scope. ``mode``: all users; users granted the IDCS App (app id in
    the ``idcs_default`` connection's extra ``app_id``); or a SCIM ``filter``. Then ``include``
    (every listed condition must hold) and ``exclude`` (any listed condition removes the user)."""

    mode: Literal["all", "app_grants", "filter"] = "app_grants"
    filter: str | None = None
    include_inactive: bool = Field(
        True, description="Keep inactive users in the extract so they can be deprovisioned.")
    memberships: Literal["auto", "user_side", "group_side"] = Field(
        "auto", description="Where group memberships are read: the users' groups attribute, "
        "per-group member pages, or whichever costs fewer requests (logged each run).")
    include: ScopeFilter = ScopeFilter()
    exclude: ScopeFilter = ScopeFilter()

    @model_validator(mode="after")
    def _filter_for_filter_mode(self) -> ScopeRules:
        if (self.mode == "filter") != bool(self.filter):
            raise ValueError("mode 'filter' needs a SCIM filter in 'filter' (and only it does)")
        return self


class UserRules(_Strict):
    attributes: UserAttributes = UserAttributes()
    deprovision: Literal["disable", "delete", "keep"] = "disable"
    # Taking over an existing Bitbucket account on the first sync: username_and_email (both
    # match, case-insensitively), username, username_or_email (a unique e-mail match is adopted
    # and renamed), none. Never an account anchored elsewhere, protected, read-only or privileged.
    adopt: Literal["username_and_email", "username", "username_or_email", "none"] = \
        "username_and_email"
    protected: list[str] = Field(default_factory=list, description="Bitbucket users never touched.")
    initial_password: Literal["random", "notify"] = "random"
    allow_privileged: list[str] = Field(
        default_factory=list, description="Bitbucket users holding PROJECT_CREATE, ADMIN or "
        "SYS_ADMIN (directly or through a group) the sync may still adopt and change.")


class RegexRename(_Strict):
    pattern: str
    replace: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regex {value!r}: {exc}") from exc
        return value


class GroupsFromAttribute(_Strict):
    """Bitbucket group memberships from a user attribute's values (e.g. department)."""

    attribute: str
    name_template: str = "{value|slug}"

    @field_validator("name_template")
    @classmethod
    def _parses(cls, value: str) -> str:
        return _check_group_template(value)


def _check_group_template(value: str) -> str:
    try:
        parse_template(value, GROUP_ATTRIBUTES, open_paths=False)
    except TemplateError as exc:
        raise ValueError(str(exc)) from exc
    return value


class GroupRules(_Strict):
    include: list[str] = Field(default_factory=lambda: ["*"], description="IDCS group name globs.")
    exclude: list[str] = Field(default_factory=lambda: ["All Tenant Users"])
    rename: dict[str, str] = Field(default_factory=dict, description="IDCS name -> Bitbucket name.")
    name_template: str = "{displayName}"
    regex_rename: list[RegexRename] = Field(default_factory=list)
    prefix: str = ""
    suffix: str = ""
    default_groups: list[str] = Field(default_factory=list)
    new_user_groups: list[str] = Field(default_factory=list)
    from_attribute: GroupsFromAttribute | None = None
    managed: list[str] = Field(default_factory=lambda: ["*"],
                               description="Bitbucket group globs that lose members.")
    permissions: dict[str, Permission] = Field(default_factory=dict)
    protected: list[str] = Field(default_factory=list, description="Bitbucket groups never changed.")
    delete_removed: bool = False
    adopt_existing: list[str] = Field(
        default_factory=list, description="Existing Bitbucket groups the sync may manage "
        "although it did not create them.")
    allow_privileged: list[str] = Field(
        default_factory=list, description="Bitbucket groups holding PROJECT_CREATE, ADMIN or "
        "SYS_ADMIN the sync may still change.")

    @field_validator("name_template")
    @classmethod
    def _parses(cls, value: str) -> str:
        return _check_group_template(value)

    def named_groups(self) -> list[str]:
        """Bitbucket groups the rules name explicitly (rename targets, default and new-user
        groups, permission keys, adopt_existing): with the groups it created, what the sync
        manages (design invariant 4)."""
        names = [*self.rename.values(), *self.default_groups, *self.new_user_groups,
                 *self.permissions, *self.adopt_existing]
        return sorted({n.casefold(): n for n in names}.values(), key=str.casefold)


class SafetyRules(_Strict):
    max_deprovision: Annotated[int, Field(ge=0)] = 25
    max_deprovision_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    min_users: Annotated[int, Field(ge=0)] = 1
    max_shrink_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    # Who may approve a plan a safety gate stopped: Airflow user ids (the auth manager's
    # ``get_id()``: the username with the simple auth manager, the numeric id with FAB). Empty:
    # nobody can, and a stopped run ends ``blocked`` at once.
    approvers: list[str] = Field(default_factory=list)
    # How long a stopped run waits for an approver before it ends ``blocked`` (fractions allowed:
    # 0.5 is 30 minutes).
    approval_timeout_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0

    @field_validator("approvers")
    @classmethod
    def _named_once(cls, value: list[str]) -> list[str]:
        names = [v.strip() for v in value]
        if any(not n for n in names):
            raise ValueError("an approver must be a non-empty Airflow user id")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"approvers named twice: {', '.join(dupes)}")
        return names


class CircuitBreakerRules(_Strict):
    """When an apply batch stops writing (see ``identity_sync.loading.breaker``)."""

    max_failure_percent: Annotated[float, Field(ge=0, le=100)] = 20.0
    min_operations: Annotated[int, Field(ge=1)] = 20
    max_consecutive_failures: Annotated[int, Field(ge=1)] = 5
    max_auth_failures: Annotated[int, Field(ge=1)] = 3


class ApplyRules(_Strict):
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 200
    # No documented maximum for add-users; 1000 is Bitbucket's largest page size (sync_rules.yaml)
    members_per_request: Annotated[int, Field(ge=1, le=1000)] = 1000
    max_batches: Annotated[int, Field(ge=1, le=1024)] = 256
    circuit_breaker: CircuitBreakerRules = CircuitBreakerRules()


class SyncRules(_Strict):
    version: Literal[1] = 1
    scope: ScopeRules = ScopeRules()
    users: UserRules = UserRules()
    groups: GroupRules = GroupRules()
    safety: SafetyRules = SafetyRules()
    apply: ApplyRules = ApplyRules()

    def extra_user_attributes(self) -> list[str]:
        """IDCS attribute paths the rules read beyond the ones always extracted."""
        paths: list[str] = []
        for _, rule in self.users.attributes.items():
            paths += rule.compile().attributes()
        for flt in (self.scope.include, self.scope.exclude):
            paths += [c.attribute for c in flt.attributes]
        if self.groups.from_attribute:
            paths.append(self.groups.from_attribute.attribute)
        return sorted({p for p in paths if p not in USER_ATTRIBUTES})


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def parse_rules(text: str, source: str = "<rules>") -> SyncRules:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RulesError(f"{source}: the top level must be a mapping")
    try:
        return SyncRules.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{source}: {_describe(exc)}") from exc


def load_rules(path: Path | str | None = None) -> tuple[SyncRules, str]:
    """Load and validate the rules file; returns the rules and a short hash of its text."""
    path = Path(path) if path else DEFAULT_RULES_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from exc
    return parse_rules(text, str(path)), hashlib.sha256(text.encode()).hexdigest()[:12]
