"""Attribute templates: literal text with ``{expression|function|...}`` placeholders.

Examples::

    {userName|lower}
    {email|email_local|replace('.', '_')}
    {displayName|regex_replace('\\s+', ' ')|trim}
    {email|split('@', 1)}
    {coalesce(nickName, givenName)} {familyName}
    {join('.', givenName, familyName)|ascii|lower}

An expression is an attribute (a core name from :data:`USER_ATTRIBUTES`, or any IDCS attribute
path such as ``title`` or ``urn:ietf:params:scim:schemas:idcs:extension:custom:User:costCenter``)
or one of the combining functions ``coalesce(a, b, ...)`` and ``join('sep', a, b, ...)``. Functions
after ``|`` transform the value. Templates are parsed when the rules load, so a typo fails the load,
not the run; a placeholder whose value is missing makes the whole template render ``None``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

USER_ATTRIBUTES = ("id", "userName", "displayName", "givenName", "familyName", "email",
                   "active", "federated")
GROUP_ATTRIBUTES = ("id", "displayName", "value")
_PATH = re.compile(r"^(urn:[\w.\-]+(:[\w.\-]+)*:)?[A-Za-z][\w]*(\.[A-Za-z]\w*)?$")


def _ascii(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _ascii(value).lower()).strip("-")


def _split(value: str, separator: str, index: int) -> str | None:
    parts = value.split(separator)
    return parts[index] if -len(parts) <= index < len(parts) else None


# name -> (function, argument types). Every function takes the value first.
FUNCTIONS: dict[str, tuple[Callable[..., str | None], tuple[type, ...]]] = {
    "lower": (str.lower, ()),
    "upper": (str.upper, ()),
    "trim": (str.strip, ()),
    "ascii": (_ascii, ()),
    "slug": (_slug, ()),
    "email_local": (lambda v: v.split("@", 1)[0], ()),
    "replace": (lambda v, old, new: v.replace(old, new), (str, str)),
    "regex_replace": (lambda v, pattern, repl: re.sub(pattern, repl, v), (str, str)),
    "split": (_split, (str, int)),
    "part": (_split, (str, int)),
    "truncate": (lambda v, n: v[:n], (int,)),
    "default": (lambda v, fallback: v or fallback, (str,)),
}
COMBINERS = ("coalesce", "join")

_TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<int>-?\d+)
                     |(?P<name>[A-Za-z_][\w:.\-]*)|(?P<punct>[(),|]))""", re.VERBOSE)


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says what is wrong and where."""


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Placeholder:
    source: str | Call  # attribute path, or coalesce/join over attribute paths
    functions: tuple[Call, ...]

    def attributes(self) -> list[str]:
        if isinstance(self.source, str):
            return [self.source]
        start = 1 if self.source.name == "join" else 0
        return list(self.source.args[start:])


def _value(values: Mapping[str, Any], path: str) -> str | None:
    value = values.get(path)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value == "":
        return None
    return str(value)


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | Placeholder, ...]

    def attributes(self) -> list[str]:
        """Every attribute the template reads (for extraction and validation)."""
        return [a for p in self.parts if isinstance(p, Placeholder) for a in p.attributes()]

    def render(self, values: Mapping[str, Any]) -> str | None:
        """Render with ``values``; ``None`` if any placeholder comes out missing or empty."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = self._source(part.source, values)
            for fn in part.functions:
                if value is None and fn.name != "default":
                    break
                value = FUNCTIONS[fn.name][0](value, *fn.args)
            if value is None or value == "":
                return None
            out.append(value)
        return "".join(out)

    @staticmethod
    def _source(source: str | Call, values: Mapping[str, Any]) -> str | None:
        if isinstance(source, str):
            return _value(values, source)
        if source.name == "coalesce":
            return next((v for a in source.args if (v := _value(values, a)) is not None), None)
        found = [v for a in source.args[1:] if (v := _value(values, a)) is not None]
        return source.args[0].join(found) if found else None


class _Parser:
    def __init__(self, text: str, template: str, known: tuple[str, ...],
                 open_paths: bool) -> None:
        self.template, self.known, self.open_paths = template, known, open_paths
        self.tokens = self._tokenize(text)
        self.pos = 0

    def _tokenize(self, text: str) -> list[tuple[str, Any]]:
        tokens, pos = [], 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise self.error(f"unexpected {text[pos:].strip()[:10]!r}")
            kind = m.lastgroup
            raw = m.group(kind)
            if kind == "str":
                tokens.append(("str", re.sub(r"\\(['\"\\])", r"\1", raw[1:-1])))
            elif kind == "int":
                tokens.append(("int", int(raw)))
            else:
                tokens.append((kind, raw))
            pos = m.end()
        return tokens

    def error(self, message: str) -> TemplateError:
        return TemplateError(f"{message} in {self.template!r}")

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> Any:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            want = value or kind
            raise self.error(f"expected {want!r} but found {tok[1] if tok else 'the end'!r}")
        self.pos += 1
        return tok[1]

    def attribute(self) -> str:
        name = self.take("name")
        if name in self.known or (self.open_paths and _PATH.match(name)):
            return name
        raise self.error(f"unknown attribute {name!r}; known: {', '.join(self.known)}"
                         + (" or an IDCS attribute path" if self.open_paths else ""))

    def args(self) -> list[Any]:
        args: list[Any] = []
        if self.peek() == ("punct", "("):
            self.take("punct", "(")
            while self.peek() != ("punct", ")"):
                tok = self.peek()
                if tok is None:
                    raise self.error("unclosed '('")
                if tok[0] in ("str", "int"):
                    self.pos += 1
                    args.append(tok[1])
                else:
                    args.append(self.attribute())
                if self.peek() == ("punct", ","):
                    self.take("punct", ",")
            self.take("punct", ")")
        return args

    def placeholder(self) -> Placeholder:
        tok = self.peek()
        if tok is None:
            raise self.error("empty placeholder {}")
        source: str | Call
        if tok[0] == "name" and tok[1] in COMBINERS:
            self.pos += 1
            args = self.args()
            if tok[1] == "join" and (not args or not isinstance(args[0], str) or len(args) < 2):
                raise self.error("join needs a separator string and at least one attribute")
            if tok[1] == "coalesce" and not args:
                raise self.error("coalesce needs at least one attribute")
            source = Call(tok[1], tuple(args))
        else:
            source = self.attribute()
        functions: list[Call] = []
        while self.peek() is not None:
            self.take("punct", "|")
            name = self.take("name")
            if name not in FUNCTIONS:
                raise self.error(f"unknown function {name!r}; known: {', '.join(FUNCTIONS)}")
            args = self.args()
            types = FUNCTIONS[name][1]
            if len(args) != len(types) or not all(isinstance(a, t) for a, t in zip(args, types,
                                                                                  strict=False)):
                sig = ", ".join(t.__name__ for t in types)
                raise self.error(f"{name} takes ({sig})")
            if name == "regex_replace":
                try:
                    re.compile(args[0])
                except re.error as exc:
                    raise self.error(f"bad regex {args[0]!r}: {exc}") from exc
            functions.append(Call(name, tuple(args)))
        return Placeholder(source, tuple(functions))


def parse_template(source: str, attributes: tuple[str, ...] = USER_ATTRIBUTES, *,
                   open_paths: bool = True) -> Template:
    """Parse ``source``. ``open_paths`` also allows IDCS attribute paths beyond ``attributes``."""
    parts: list[str | Placeholder] = []
    pos = 0
    while pos < len(source):
        start = source.find("{", pos)
        close = source.find("}", pos)
        if close != -1 and (start == -1 or close < start):
            raise TemplateError(f"unbalanced braces in {source!r}")
        if start == -1:
            parts.append(source[pos:])
            break
        if start > pos:
            parts.append(source[pos:start])
        end = _closing_brace(source, start)
        parser = _Parser(source[start + 1 : end], source, attributes, open_paths)
        parts.append(parser.placeholder())
        pos = end + 1
    return Template(source, tuple(parts))


def _closing_brace(source: str, start: int) -> int:
    quote = None
    for i in range(start + 1, len(source)):
        ch = source[i]
        if quote:
            if ch == "\\":
                continue
            if ch == quote and source[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            break
        elif ch == "}":
            return i
    raise TemplateError(f"unbalanced braces in {source!r}")
