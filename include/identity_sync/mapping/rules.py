"""The one rules file (YAML in ``include/``), validated when it loads.

Errors name the field and the problem, e.g. ``groups.permissions.devs: Input should be
'LICENSED_USER', 'PROJECT_CREATE', 'ADMIN' or 'SYS_ADMIN'``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .templates import GROUP_ATTRIBUTES, Template, TemplateError, parse_template

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


class TemplateText(_Strict):
    template: str

    @field_validator("template")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_template(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from exc
        return value

    def compile(self) -> Template:
        return parse_template(self.template)


class UserAttributes(_Strict):
    name: TemplateText = TemplateText(template="{userName|lower}")
    displayName: TemplateText = TemplateText(template="{displayName}")
    emailAddress: TemplateText = TemplateText(template="{email|lower}")


class ScopeRules(_Strict):
    """Which IDCS users are in scope: all users, or those granted the IDCS App (app id in the
    ``idcs_default`` connection's extra ``app_id``)."""

    mode: Literal["all", "app_grants"] = "app_grants"
    include_inactive: bool = Field(
        True, description="Keep inactive users in the extract so they can be deprovisioned."
    )


class UserRules(_Strict):
    attributes: UserAttributes = UserAttributes()
    deprovision: Literal["disable", "delete", "keep"] = "disable"
    protected: list[str] = Field(default_factory=list, description="Bitbucket users never touched.")
    initial_password: Literal["random", "notify"] = "random"


class GroupRules(_Strict):
    include: list[str] = Field(default_factory=lambda: ["*"], description="IDCS group name globs.")
    exclude: list[str] = Field(default_factory=lambda: ["All Tenant Users"])
    rename: dict[str, str] = Field(default_factory=dict, description="IDCS name -> Bitbucket name.")
    name_template: str = "{displayName}"
    default_groups: list[str] = Field(default_factory=list)
    permissions: dict[str, Permission] = Field(default_factory=dict)
    protected: list[str] = Field(default_factory=list, description="Bitbucket groups never changed.")

    @field_validator("name_template")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_template(value, GROUP_ATTRIBUTES)
        except TemplateError as exc:
            raise ValueError(str(exc)) from exc
        return value


class SafetyRules(_Strict):
    max_deprovision: Annotated[int, Field(ge=0)] = 25
    max_deprovision_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    min_users: Annotated[int, Field(ge=0)] = 1


class ApplyRules(_Strict):
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 200
    members_per_request: Annotated[int, Field(ge=1, le=1000)] = 100
    max_batches: Annotated[int, Field(ge=1, le=1024)] = 256


class SyncRules(_Strict):
    version: Literal[1] = 1
    scope: ScopeRules = ScopeRules()
    users: UserRules = UserRules()
    groups: GroupRules = GroupRules()
    safety: SafetyRules = SafetyRules()
    apply: ApplyRules = ApplyRules()


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
