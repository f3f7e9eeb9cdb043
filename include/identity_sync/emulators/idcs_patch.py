"""SCIM PATCH (RFC 7644 §3.5.2) on a plain resource dict, as IDCS applies it.

Why: trials, tests and benchmarks change the tenant the way an admin tool would, and Oracle's own
examples change group membership with PATCH (``members`` add, ``members[value eq "..."]``
remove; reference §2.2). Paths: ``attr``, ``attr.sub``, ``<extension urn>:attr[.sub]``, the
extension URN itself, and ``attr[filter]`` / ``attr[filter].sub``. Attribute names match
case-insensitively. Mutability is checked against the published schema; the caller validates
the result as a whole (types, required values, uniqueness).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import scim_filter
from .idcs_schemas import Attr

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class PatchError(Exception):
    """A PATCH the service refuses: (status, scimType, detail, Oracle message id)."""

    def __init__(self, status: int, scim_type: str, detail: str, message_id: str) -> None:
        super().__init__(detail)
        self.status, self.scim_type, self.detail, self.message_id = (
            status, scim_type, detail, message_id)


def _bad(scim_type: str, detail: str, status: int = 400) -> PatchError:
    ids = {"invalidPath": "error.common.validation.invalidPath",
           "noTarget": "error.common.validation.noTarget",
           "mutability": "error.common.validation.mutability",
           "invalidValue": "error.common.validation.invalidValue",
           "invalidSyntax": "error.common.validation.invalidSyntax",
           "invalidFilter": "error.common.common.invalidFilter"}
    return PatchError(status, scim_type, detail, ids.get(scim_type, "error.common.validation"))


@dataclass(frozen=True)
class Target:
    """Where an operation lands: ``container`` key (the extension URN or None for the core),
    attribute, optional value filter and sub-attribute."""

    urn: str | None
    attr: str
    flt: scim_filter.Predicate | None
    sub: str | None
    meta_key: str  # lower-case key into the attribute index ("name.givenname", "urn:...:x")


def parse_target(path: str, extension_urns: list[str], case_exact: Callable[[str], bool]) -> Target:
    text = path.strip()
    urn = None
    low = text.lower()
    for candidate in sorted(extension_urns, key=len, reverse=True):
        c = candidate.lower()
        if low == c:
            return Target(candidate, "", None, None, c)
        if low.startswith(c + ":"):
            urn, text = candidate, text[len(candidate) + 1:]
            break
    for core in ("urn:ietf:params:scim:schemas:core:2.0:user:",
                 "urn:ietf:params:scim:schemas:core:2.0:group:"):
        if urn is None and text.lower().startswith(core):
            text = text[len(core):]
    flt, sub = None, None
    if "[" in text:
        head, _, rest = text.partition("[")
        inner, close, tail = rest.rpartition("]")
        if not close or (tail and not tail.startswith(".")):
            raise _bad("invalidPath", f"Invalid path: {path}")
        try:
            node = scim_filter.parse(inner)
        except scim_filter.FilterError as exc:
            raise _bad("invalidFilter", f"Invalid filter in path {path}: {exc}") from exc
        prefix = (urn.lower() + ":" if urn else "") + head.lower() + "."
        flt = scim_filter.compile_node(node, case_exact, prefix)
        attr, sub = head, (tail[1:] or None)
    else:
        attr, _, sub_text = text.partition(".")
        sub = sub_text or None
    if not attr or (sub is not None and ("." in sub or not sub)):
        raise _bad("invalidPath", f"Invalid path: {path}")
    key = (urn.lower() + ":" if urn else "") + attr.lower()
    return Target(urn, attr, flt, sub, key)


def _key(obj: Mapping[str, Any], name: str) -> str:
    """The existing key matching ``name`` case-insensitively (or ``name`` itself)."""
    low = name.lower()
    return next((k for k in obj if k.lower() == low), name)


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        out = dict(old)
        for k, v in new.items():
            out[_key(out, k)] = v
        return out
    return new


class Patcher:
    """Applies PatchOp bodies to one resource type (its attribute index and extension URNs)."""

    def __init__(self, index: Mapping[str, Attr], extension_urns: list[str],
                 case_exact: Callable[[str], bool]) -> None:
        self.index, self.urns, self.case_exact = index, extension_urns, case_exact

    def apply(self, resource: dict[str, Any], body: Any) -> dict[str, Any]:
        """A patched deep copy of ``resource`` (the original is left untouched on error)."""
        if not isinstance(body, dict) or PATCH_SCHEMA not in (body.get("schemas") or []):
            raise _bad("invalidSyntax", f"A PatchOp body with schemas [{PATCH_SCHEMA}] is "
                                        "required.")
        ops = body.get("Operations", body.get("operations"))
        if not isinstance(ops, list) or not ops:
            raise _bad("invalidSyntax", "Operations must be a non-empty list.")
        out = copy.deepcopy(resource)
        for op in ops:
            if not isinstance(op, dict):
                raise _bad("invalidSyntax", "Each operation must be an object.")
            kind = str(op.get("op", "")).lower()
            if kind not in ("add", "remove", "replace"):
                raise _bad("invalidSyntax", f"Unsupported PATCH op: {op.get('op')!r}.")
            path, value = op.get("path"), op.get("value")
            if path is None or path == "":
                if kind == "remove":
                    raise _bad("noTarget", "A remove operation needs a path.")
                if not isinstance(value, dict):
                    raise _bad("invalidValue", f"{kind} without a path needs an object value.")
                for name, sub_value in value.items():
                    if name.lower() in (u.lower() for u in self.urns) and isinstance(
                            sub_value, dict):
                        for ext_attr, ext_value in sub_value.items():
                            if ext_attr.lower() != "schemas":
                                self._one(out, kind, f"{name}:{ext_attr}", ext_value)
                    else:
                        self._one(out, kind, name, sub_value)
            elif not isinstance(path, str):
                raise _bad("invalidPath", "path must be a string.")
            else:
                if kind != "remove" and "value" not in op:
                    raise _bad("invalidValue", f"{kind} on {path} needs a value.")
                self._one(out, kind, path, value)
        return out

    # ---- one operation ----------------------------------------------------------------------

    def _check_mutable(self, target: Target, kind: str) -> Attr | None:
        key = target.meta_key + (f".{target.sub.lower()}" if target.sub else "")
        attr = self.index.get(key)
        if attr is None and target.urn is None and target.attr.lower() not in ("schemas",):
            raise _bad("invalidPath", f"No attribute {key} in the schema.")
        top = self.index.get(target.meta_key)
        for a in (top, attr):
            if a is not None and a.mutability == "readOnly":
                raise _bad("mutability", f"Attribute {a.name} is read-only.")
        if attr is not None and attr.mutability == "immutable" and kind != "add":
            raise _bad("mutability", f"Attribute {attr.name} is immutable.")
        return top

    def _one(self, res: dict[str, Any], kind: str, path: str, value: Any) -> None:
        target = parse_target(path, self.urns, self.case_exact)
        if not target.attr:  # the extension URN itself
            key = _key(res, target.urn or "")
            if kind == "remove":
                res.pop(key, None)
            elif not isinstance(value, dict):
                raise _bad("invalidValue", f"{path} takes an object.")
            else:
                for name, sub_value in value.items():
                    if name.lower() != "schemas":  # some clients echo the extension's schemas
                        self._one(res, kind, f"{target.urn}:{name}", sub_value)
            return
        top = self._check_mutable(target, kind)
        container = _container(res, target, create=kind != "remove")
        if container is None:
            return
        key = _key(container, target.attr)
        current = container.get(key)
        multi = top.multi if top is not None else isinstance(current, list)
        if target.flt is not None:
            self._filtered(container, key, current, target, kind, value, path)
        elif target.sub is not None:
            self._sub(container, key, current, target, kind, value, multi)
        elif kind == "remove":
            container.pop(key, None)
            if value is not None and multi and isinstance(current, list):  # remove listed values
                values = value if isinstance(value, list) else [value]
                keep = [v for v in current if not any(_same(v, w) for w in values)]
                if keep:
                    container[key] = keep
        elif multi:
            values = value if isinstance(value, list) else [value]
            if kind == "add":
                merged = list(current) if isinstance(current, list) else []
                merged += [v for v in values if not any(_same(v, m) for m in merged)]
                container[key] = merged
            else:
                container[key] = list(values)
        elif kind == "add" or top is None or top.type == "complex":
            container[key] = _merge(current, value) if kind == "add" or isinstance(
                value, dict) else value
        else:
            container[key] = value
        if container is not res and not container:
            res.pop(_key(res, target.urn or ""), None)

    def _sub(self, container: dict[str, Any], key: str, current: Any, target: Target,
             kind: str, value: Any, multi: bool) -> None:
        sub = target.sub or ""
        items = current if isinstance(current, list) else ([current] if current else [])
        if kind == "remove":
            for item in items:
                if isinstance(item, dict):
                    item.pop(_key(item, sub), None)
            return
        if multi:
            if not items:
                raise _bad("noTarget", f"No values of {target.attr} to set {sub} on.")
            for item in items:
                item[_key(item, sub)] = value
            return
        obj = current if isinstance(current, dict) else {}
        obj[_key(obj, sub)] = value
        container[key] = obj

    def _filtered(self, container: dict[str, Any], key: str, current: Any, target: Target,
                  kind: str, value: Any, path: str) -> None:
        assert target.flt is not None
        items = current if isinstance(current, list) else []
        matches = [i for i, v in enumerate(items) if isinstance(v, Mapping) and target.flt(v)]
        if not matches:
            if kind == "remove":
                return  # nothing to remove is not an error for IDCS-style member removal
            raise _bad("noTarget", f"No value matches {path}.")
        if kind == "remove":
            if target.sub:
                for i in matches:
                    items[i].pop(_key(items[i], target.sub), None)
            else:
                kept = [v for i, v in enumerate(items) if i not in matches]
                if kept:
                    container[key] = kept
                else:
                    container.pop(key, None)
            return
        for i in matches:
            if target.sub:
                items[i][_key(items[i], target.sub)] = value
            elif kind == "replace":
                items[i] = value
            else:
                items[i] = _merge(items[i], value)


def _container(res: dict[str, Any], target: Target, create: bool = True) -> Any:
    if target.urn is None:
        return res
    key = _key(res, target.urn)
    found = res.get(key)
    if isinstance(found, dict):
        return found
    if not create:
        return None
    res[key] = {}
    return res[key]


def _same(a: Any, b: Any) -> bool:
    """Equal values; complex values by ``value`` (and ``type``) when both have one."""
    if isinstance(a, dict) and isinstance(b, dict) and "value" in a and "value" in b:
        return bool(a.get("value") == b.get("value") and (
            a.get("type") is None or b.get("type") is None or a.get("type") == b.get("type")))
    return bool(a == b)
