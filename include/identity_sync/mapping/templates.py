"""Attribute templates: ``"{userName|lower}"``, ``"{givenName}.{familyName|ascii|lower}"``.

A template is literal text with ``{attribute|function|function}`` placeholders. Attributes come from
the flattened IDCS user (:data:`USER_ATTRIBUTES`); functions are the small, predictable set in
:data:`FUNCTIONS`. Templates are parsed once when the rules load, so a typo fails the load, not the run.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

USER_ATTRIBUTES = (
    "id",
    "userName",
    "displayName",
    "givenName",
    "familyName",
    "email",
)
GROUP_ATTRIBUTES = ("id", "displayName")


def _ascii(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _ascii(value).lower()).strip("-")


FUNCTIONS: dict[str, Callable[[str], str]] = {
    "lower": str.lower,
    "upper": str.upper,
    "trim": str.strip,
    "ascii": _ascii,
    "slug": _slug,
    "email_local": lambda v: v.split("@", 1)[0],
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | tuple[str, tuple[str, ...]], ...]

    def render(self, values: Mapping[str, str | None]) -> str | None:
        """Render with ``values``; ``None`` if any referenced attribute is missing or empty."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            attribute, functions = part
            value = values.get(attribute)
            if value is None or value == "":
                return None
            for fn in functions:
                value = FUNCTIONS[fn](value)
            out.append(value)
        return "".join(out)


def parse_template(source: str, attributes: tuple[str, ...] = USER_ATTRIBUTES) -> Template:
    parts: list[str | tuple[str, tuple[str, ...]]] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(source):
        if match.start() > pos:
            parts.append(source[pos : match.start()])
        attribute, *functions = (p.strip() for p in match.group(1).split("|"))
        if attribute not in attributes:
            raise TemplateError(
                f"unknown attribute {attribute!r} in {source!r}; known: {', '.join(attributes)}"
            )
        for fn in functions:
            if fn not in FUNCTIONS:
                raise TemplateError(
                    f"unknown function {fn!r} in {source!r}; known: {', '.join(FUNCTIONS)}"
                )
        parts.append((attribute, tuple(functions)))
        pos = match.end()
    if pos < len(source):
        parts.append(source[pos:])
    if "{" in "".join(p for p in parts if isinstance(p, str)) or "}" in "".join(
        p for p in parts if isinstance(p, str)
    ):
        raise TemplateError(f"unbalanced braces in {source!r}")
    return Template(source, tuple(parts))
