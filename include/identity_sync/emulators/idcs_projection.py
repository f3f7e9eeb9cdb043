"""What an IDCS read returns: the attribute metadata (SCIM ``returned`` rules, schema URNs,
caseExact attributes) and the ``attributes``/``attributeSets`` selection applied to one resource,
with ``attr[filter]`` refinements and ``members[startIndex=S&count=C]`` paging.

Why separate: projection is pure functions over one resource dict, with no state, HTTP or paging
of listings; the collections in :mod:`.idcs_search` render through it, :mod:`.idcs_endpoints`
and :mod:`.idcs_writes` reuse its selection and metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import scim_filter
from .idcs_common import (
    GROUP_EXTENSION,
    GROUP_SCHEMA,
    USER_EXTENSION,
    USER_SCHEMA,
    USER_STATE_EXTENSION,
    ScimError,
)

ALWAYS, DEFAULT, REQUEST, NEVER = "always", "default", "request", "never"


# --- attribute metadata (from the SDK models in idcs-attribute-metadata.json) -------------------

_COMMON_RULES = {
    "id": ALWAYS,
    "idcspreventedoperations": REQUEST,
    "tags": REQUEST,
    "idcslastupgradedinrelease": REQUEST,
}
_UX, _USX, _GX = USER_EXTENSION.lower(), USER_STATE_EXTENSION.lower(), GROUP_EXTENSION.lower()
USER_RULES: dict[str, str] = {
    **_COMMON_RULES,
    "username": ALWAYS,
    "password": NEVER,
    "groups": REQUEST,
    "groups.value": ALWAYS,
    "groups.type": REQUEST,
    **{
        f"{_UX}:{a}": REQUEST
        for a in (
            "status",
            "creationmechanism",
            "groupmembershiplastmodified",
            "isaccountrecoveryenrolled",
            "accountrecoveryrequired",
            "supportaccounts",
            "idcsapproleslimitedtogroups",
            "accounts",
            "grants",
            "approles",
        )
    },
    **{
        f"{_UX}:{a}": NEVER
        for a in (
            "isauthenticationdelegated",
            "bypassnotification",
            "userflowcontrolledbyexternalclient",
            "isgroupmembershipnormalized",
            "isgroupmembershipsyncedtousersgroups",
            "notificationemailtemplateid",
        )
    },
    **{
        f"{_USX}:{a}": REQUEST
        for a in (
            "lastsuccessfullogindate",
            "previoussuccessfullogindate",
            "lastfailedlogindate",
            "loginattempts",
            "recoveryattempts",
            "recoveryenrollattempts",
        )
    },
}
GROUP_RULES: dict[str, str] = {
    **_COMMON_RULES,
    "displayname": ALWAYS,
    "nonuniquedisplayname": ALWAYS,
    "members": REQUEST,
    "members.value": ALWAYS,
    "members.ocid": ALWAYS,
    **{f"{_GX}:{a}": REQUEST for a in ("creationmechanism", "grants", "owners", "approles")},
}
GRANT_RULES: dict[str, str] = {
    **_COMMON_RULES,
    "compositekey": REQUEST,
    "grantee.display": REQUEST,
    "app.display": REQUEST,
}
APP_RULES: dict[str, str] = {**_COMMON_RULES, "grants": REQUEST}

_X = "urn:ietf:params:scim:schemas:oracle:idcs:extension:"
USER_URNS = (
    USER_SCHEMA,
    USER_EXTENSION,
    USER_STATE_EXTENSION,
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:schemas:idcs:extension:custom:User",
    *(
        f"{_X}{e}"
        for e in (
            "passwordState:User",
            "posix:User",
            "kerberosUser:User",
            "mfa:User",
            "adaptive:User",
            "sff:User",
            "securityQuestions:User",
            "selfRegistration:User",
            "socialAccount:User",
            "dbUser:User",
            "termsOfUse:User",
            "passwordless:User",
            "OCITags",
            "userCredentials:User",
            "capabilities:User",
            "dbCredentials:User",
            "selfChange:User",
        )
    ),
)
GROUP_URNS = (
    GROUP_SCHEMA,
    GROUP_EXTENSION,
    *(
        f"{_X}{e}"
        for e in ("posix:Group", "requestable:Group", "dbcs:Group", "dynamic:Group", "OCITags")
    ),
)

# caseExact "true" attributes; every other string compares case-insensitively.
USER_CASE_EXACT = frozenset({"ocid", "groups.value", "groups.ocid"})
GROUP_CASE_EXACT = frozenset(
    {
        "ocid",
        "members.value",
        "members.ocid",
        "members.type",
        "members.membershipocid",
        "members.$ref",
    }
)
GRANT_CASE_EXACT = frozenset(
    {
        "ocid",
        "grantmechanism",
        "compositekey",
        "grantee.value",
        "grantee.type",
        "app.value",
        "entitlement.attributevalue",
    }
)


# --- projection (attributes / attributeSets) ----------------------------------------------------


@dataclass
class Selection:
    """What to return: a tree of named attributes plus the default/request sets.

    ``brackets`` holds ``attr[...]`` refinements by dotted path: a filter on the values or a
    ``startIndex``/``count`` slice (``members[startIndex=1&count=10]``).
    """

    tree: dict[str, Any] = field(default_factory=dict)
    default: bool = True
    request: bool = False
    brackets: dict[str, tuple[scim_filter.Predicate | None, int, int | None]] = field(
        default_factory=dict
    )

    def named(self, attr: str) -> bool:
        return attr in self.tree or self.request


def split_attributes(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (``members[type eq "a,b"]``)."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "[":
            depth += 1
        elif not quoted and ch == "]":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _segments(name: str, urns: Sequence[str]) -> list[str]:
    low = name.lower()
    for urn in sorted((u.lower() for u in urns), key=len, reverse=True):
        if low == urn:
            return [low] if ":extension:" in low else []
        if low.startswith(urn + ":"):
            rest = low[len(urn) + 1 :].split(".")
            return rest if ":extension:" not in urn else [urn, *rest]
    if low.startswith("urn:"):
        urn, _, rest = low.rpartition(":")
        return [urn, *rest.split(".")]
    return low.split(".")


def _bracket(path: str, inner: str, case_exact: frozenset[str]) -> tuple[Any, int, int | None]:
    if "=" in inner and not any(op in inner.lower() for op in (" eq ", " ne ", " co ", " pr")):
        params = {
            k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in inner.split("&"))
        }
        try:
            start = max(int(params.pop("startindex", "1")), 1)
            count = int(params.pop("count")) if "count" in params else None
        except ValueError as exc:
            raise ScimError(
                400, f"Invalid paging in attribute {path}[{inner}].", scim_type="invalidValue"
            ) from exc
        if params:
            raise ScimError(
                400, f"Invalid paging in attribute {path}[{inner}].", scim_type="invalidValue"
            )
        return None, start, (max(count, 0) if count is not None else None)
    try:
        node = scim_filter.parse(inner)
    except scim_filter.FilterError as exc:
        raise ScimError(
            400, f"Invalid filter in attribute {path}: {exc}", scim_type="invalidFilter"
        ) from exc
    return scim_filter.compile_node(node, case_exact.__contains__, path + "."), 1, None


def parse_selection(
    attributes: Sequence[str],
    attribute_sets: Sequence[str],
    urns: Sequence[str],
    case_exact: frozenset[str] = frozenset(),
) -> Selection:
    """Build the selection for ``attributes``/``attributeSets`` (union of both)."""
    sets = {s.strip().lower() for s in attribute_sets if s.strip()}
    unknown = sets - {"all", "always", "default", "request"}
    if unknown:
        raise ScimError(
            400,
            f"Invalid attributeSets value(s): {', '.join(sorted(unknown))}.",
            scim_type="invalidValue",
        )
    names = [a for item in attributes for a in split_attributes(item)]
    sel = Selection(
        default=(not names and not sets) or bool(sets & {"all", "default"}),
        request=bool(sets & {"all", "request"}),
    )
    for item in names:
        name, inner = item, None
        if "[" in item:
            if not item.endswith("]"):
                raise ScimError(400, f"Invalid attribute {item}.", scim_type="invalidSyntax")
            name, _, inner = item[:-1].partition("[")
        segs = _segments(name.strip(), urns)
        if not segs:
            continue  # the core schema URN itself: nothing beyond the always-returned set
        node = sel.tree
        for seg in segs[:-1]:
            child = node.setdefault(seg, {})
            if child is True:
                break
            node = child
        else:
            node[segs[-1]] = True
        if inner is not None:
            path = segs[0] + "".join(
                (":" if i == 1 and segs[0].startswith("urn:") else ".") + s
                for i, s in enumerate(segs[1:], 1)
            )
            sel.brackets[path] = _bracket(path, inner, case_exact)
    return sel


def project(
    resource: Mapping[str, Any], sel: Selection, rules: Mapping[str, str]
) -> dict[str, Any]:
    """Apply SCIM ``returned`` rules and the selection to one full resource."""
    out: dict[str, Any] = {}
    for key, value in resource.items():
        low = key.lower()
        rule = rules.get(low, DEFAULT)
        if rule == NEVER:
            continue
        ext = low.startswith("urn:")
        prefix = low + (":" if ext else ".")
        node = sel.tree.get(low)
        if node is True:  # a whole extension gives its default set; a whole attribute, all of it
            shown = _content(value, prefix, sel.request or not ext, rules)
        elif node is not None:
            shown = _select(value, node, prefix, sel, rules)
        elif (
            rule == ALWAYS or (rule == DEFAULT and sel.default) or (rule == REQUEST and sel.request)
        ):
            shown = _content(value, prefix, sel.request, rules)
        else:
            continue
        shown = _refine(low, shown, sel)
        if not _empty(shown):
            out[key] = shown
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, list | dict) and not value)


def _allowed(rule: str, with_request: bool) -> bool:
    return rule in (ALWAYS, DEFAULT) or (rule == REQUEST and with_request)


def _content(value: Any, prefix: str, with_request: bool, rules: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        items = [_content(v, prefix, with_request, rules) for v in value]
        return [v for v in items if not _empty(v)]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in value.items():
        path = prefix + key.lower()
        if _allowed(rules.get(path, DEFAULT), with_request):
            shown = _content(sub, path + ".", with_request, rules)
            if not _empty(shown):
                out[key] = shown
    return out


def _select(
    value: Any, tree: dict[str, Any], prefix: str, sel: Selection, rules: Mapping[str, str]
) -> Any:
    if isinstance(value, list):
        items = [_select(v, tree, prefix, sel, rules) for v in value]
        return [v for v in items if not _empty(v)]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in value.items():
        low = key.lower()
        path = prefix + low
        rule = rules.get(path, DEFAULT)
        node = tree.get(low)
        if rule == NEVER or (node is None and rule != ALWAYS):
            continue
        if isinstance(node, dict):
            shown = _select(sub, node, path + ".", sel, rules)
        else:
            shown = _content(sub, path + ".", True, rules)
        shown = _refine(path, shown, sel)
        if not _empty(shown):
            out[key] = shown
    return out


def _refine(path: str, value: Any, sel: Selection) -> Any:
    spec = sel.brackets.get(path)
    if spec is None or not isinstance(value, list):
        return value
    predicate, start, count = spec
    if predicate is not None:
        value = [v for v in value if isinstance(v, Mapping) and predicate(v)]
    end = None if count is None else start - 1 + count
    return value[start - 1 : end]
