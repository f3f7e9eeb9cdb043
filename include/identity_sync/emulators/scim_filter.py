"""SCIM filter expressions (RFC 7644 §3.4.2.2) as IDCS evaluates them: tokenizer, parser, evaluator.

The emulator must accept exactly the filters the real service accepts and reject malformed ones
with ``invalidFilter``, so this is a real tokenizer and recursive-descent parser, not regexes.

Grammar (keywords case-insensitive)::

    filter   := and_expr ("or" and_expr)*
    and_expr := unary ("and" unary)*
    unary    := "not" "(" filter ")" | "(" filter ")" | PATH "pr"
              | PATH OP literal | PATH "[" filter "]"      (no nesting of "[...]")
    literal  := STRING | NUMBER | "true" | "false" | "null"

Semantics: string ``eq ne co sw ew`` ignore case unless the attribute is caseExact; ``gt ge lt le``
compare DateTime strings chronologically; a multi-valued attribute matches if any value matches;
``ne`` is the negation of ``eq``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
ORDER_OPS = frozenset({"gt", "ge", "lt", "le"})
STRING_OPS = frozenset({"co", "sw", "ew"})
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ$_")
_NAME_CHARS = _NAME_START | frozenset("0123456789-.:")
_PUNCT = frozenset("()[]")


class FilterError(ValueError):
    """A filter the service would reject with ``400 invalidFilter``."""


# --- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "punct", "string", "number", "word", "end"
    text: str
    pos: int
    value: Any = None


def tokenize(text: str) -> list[Token]:
    """Split a filter into tokens; strings are JSON strings (double quotes, JSON escapes)."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token("punct", ch, i))
            i += 1
        elif ch == '"':
            end = _string_end(text, i)
            raw = text[i : end + 1]
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise FilterError(f"invalid string literal at position {i}: {raw}") from exc
            tokens.append(Token("string", raw, i, value))
            i = end + 1
        elif ch.isdigit() or (ch == "-" and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] in ".eE+-"):
                j += 1
            raw = text[i:j]
            try:
                number: float | int = float(raw) if any(c in raw for c in ".eE") else int(raw)
            except ValueError as exc:
                raise FilterError(f"invalid number at position {i}: {raw}") from exc
            tokens.append(Token("number", raw, i, number))
            i = j
        elif ch in _NAME_START:
            j = i + 1
            while j < n and text[j] in _NAME_CHARS:
                j += 1
            tokens.append(Token("word", text[i:j], i))
            i = j
        else:
            raise FilterError(f"unexpected character {ch!r} at position {i}")
    tokens.append(Token("end", "", n))
    return tokens


def _string_end(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise FilterError(f"unterminated string starting at position {start}")


# --- syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """``[urn:]attr[.sub...]``; ``urn`` is the schema URN prefix (extension or core) if given."""

    urn: str | None
    names: tuple[str, ...]

    def dotted(self) -> str:
        """Lower-case full name, e.g. ``grantee.type`` or ``urn:...:user:isfederateduser``."""
        base = ".".join(self.names).lower()
        return f"{self.urn.lower()}:{base}" if self.urn else base

    @property
    def root(self) -> str:
        """The top-level attribute (or extension URN) this path reads, lower-case."""
        return self.urn.lower() if self.urn and not _is_core(self.urn) else self.names[0].lower()


@dataclass(frozen=True)
class Compare:
    path: Path
    op: str
    value: Any


@dataclass(frozen=True)
class Present:
    path: Path


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class ValuePath:
    """``attr[subfilter]``: true if any value of ``attr`` satisfies ``inner``."""

    path: Path
    inner: Node


Node = Compare | Present | And | Or | Not | ValuePath


def parse_path(text: str) -> Path:
    """Parse an attribute path; used by the filter parser and for ``attributes``/``sortBy``."""
    if text.lower().startswith("urn:"):
        urn, sep, rest = text.rpartition(":")
        if not sep or not rest or urn.lower() == "urn":
            raise FilterError(f"invalid attribute path {text!r}")
    else:
        urn, rest = None, text
    names = tuple(rest.split("."))
    for name in names:
        if not name or name[0] not in _NAME_START or ":" in name:
            raise FilterError(f"invalid attribute path {text!r}")
    if len(names) > 2:
        raise FilterError(f"attribute path {text!r} is nested too deeply")
    return Path(urn, names)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok.kind == "word" and tok.text.lower() in words:
            self.i += 1
            return tok.text.lower()
        return None

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.kind != "punct" or tok.text != text:
            raise FilterError(f"expected {text!r} at position {tok.pos}, found {tok.text!r}")

    def parse(self) -> Node:
        node = self.or_expr(nested=False)
        tok = self.peek()
        if tok.kind != "end":
            raise FilterError(f"unexpected {tok.text!r} at position {tok.pos}")
        return node

    def or_expr(self, nested: bool) -> Node:
        node = self.and_expr(nested)
        while self.keyword("or"):
            node = Or(node, self.and_expr(nested))
        return node

    def and_expr(self, nested: bool) -> Node:
        node = self.unary(nested)
        while self.keyword("and"):
            node = And(node, self.unary(nested))
        return node

    def unary(self, nested: bool) -> Node:
        tok = self.peek()
        if tok.kind == "word" and tok.text.lower() == "not":
            nxt = self.tokens[self.i + 1]
            if nxt.kind == "punct" and nxt.text == "(":
                self.i += 1
                return Not(self.group(nested))
        if tok.kind == "punct" and tok.text == "(":
            return self.group(nested)
        return self.attr_expr(nested)

    def group(self, nested: bool) -> Node:
        self.expect("(")
        node = self.or_expr(nested)
        self.expect(")")
        return node

    def attr_expr(self, nested: bool) -> Node:
        tok = self.take()
        if tok.kind != "word" or tok.text.lower() in {"and", "or", "not"}:
            raise FilterError(f"expected an attribute at position {tok.pos}, found {tok.text!r}")
        path = parse_path(tok.text)
        nxt = self.peek()
        if nxt.kind == "punct" and nxt.text == "[":
            if nested:
                raise FilterError(f"nested complex filter at position {nxt.pos}")
            self.take()
            inner = self.or_expr(nested=True)
            self.expect("]")
            return ValuePath(path, inner)
        op = self.keyword("pr", *COMPARE_OPS)
        if op is None:
            raise FilterError(f"expected an operator after {tok.text!r} at position {nxt.pos}")
        if op == "pr":
            return Present(path)
        return Compare(path, op, self.literal(op))

    def literal(self, op: str) -> Any:
        tok = self.take()
        if tok.kind in {"string", "number"}:
            value = tok.value
        elif tok.kind == "word" and tok.text.lower() in _LITERALS:
            value = _LITERALS[tok.text.lower()]
        else:
            raise FilterError(f"expected a value at position {tok.pos}, found {tok.text!r}")
        if op in STRING_OPS and not isinstance(value, str):
            raise FilterError(f"operator {op!r} needs a string value at position {tok.pos}")
        if op in ORDER_OPS and (value is None or isinstance(value, bool)):
            raise FilterError(f"operator {op!r} cannot compare {tok.text!r}")
        return value


def parse(text: str) -> Node:
    """Parse a SCIM filter; raises :class:`FilterError` on any syntax error."""
    if not text or not text.strip():
        raise FilterError("empty filter")
    return _Parser(text).parse()


def roots(node: Node) -> set[str]:
    """Top-level attribute names (lower-case) the filter reads: lets callers skip computing
    expensive attributes (a user's groups, a group's members) the filter does not need."""
    if isinstance(node, And | Or):
        return roots(node.left) | roots(node.right)
    if isinstance(node, Not):
        return roots(node.inner)
    return {node.path.root}


# --- evaluation ---------------------------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any]], bool]
CaseExact = Callable[[str], bool]


def _is_core(urn: str) -> bool:
    """Core schema URNs (``...:core:2.0:User``, ``...:oracle:idcs:Grant``) prefix top-level names;
    only extension URNs name a nested object."""
    return ":extension:" not in urn.lower()


def get_attr(obj: Any, name: str) -> Any:
    """Case-insensitive attribute lookup (SCIM attribute names are case-insensitive)."""
    if not isinstance(obj, Mapping):
        return None
    value = obj.get(name)
    if value is not None:
        return value
    low = name.lower()
    for key in obj:
        if key.lower() == low:
            return obj[key]
    return None


def resolve(resource: Mapping[str, Any], path: Path) -> list[Any]:
    """All values at ``path``, flattening multi-valued attributes on the way."""
    current: list[Any] = [resource]
    if path.urn and not _is_core(path.urn):
        current = [get_attr(resource, path.urn)]
    for name in path.names:
        nxt: list[Any] = []
        for obj in current:
            value = get_attr(obj, name)
            if isinstance(value, list):
                nxt.extend(value)
            elif value is not None:
                nxt.append(value)
        current = nxt
    return [v for v in current if v is not None]


def _parse_datetime(value: str) -> datetime | None:
    if len(value) < 10 or value[4] != "-" or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _compare_fn(op: str, literal: Any, exact: bool) -> Callable[[Any], bool]:
    """A test for one attribute value against the literal."""
    if isinstance(literal, str):
        when = _parse_datetime(literal) if op not in STRING_OPS else None
        want = literal if exact else literal.casefold()

        def test_str(value: Any) -> bool:
            if not isinstance(value, str):
                return False
            if when is not None and (got := _parse_datetime(value)) is not None:
                return _ordered(op, got, when)
            have = value if exact else value.casefold()
            if op == "co":
                return want in have
            if op == "sw":
                return have.startswith(want)
            if op == "ew":
                return have.endswith(want)
            return _ordered(op, have, want)

        return test_str
    if isinstance(literal, bool):
        return lambda value: isinstance(value, bool) and value == literal
    if literal is None:
        return lambda value: False

    def test_number(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return _ordered(op, value, literal)

    return test_number


def _ordered(op: str, have: Any, want: Any) -> bool:
    if op in {"eq", "ne"}:
        return bool(have == want)
    if op == "gt":
        return bool(have > want)
    if op == "ge":
        return bool(have >= want)
    if op == "lt":
        return bool(have < want)
    return bool(have <= want)


def compile_node(node: Node, case_exact: CaseExact | None = None, prefix: str = "") -> Predicate:
    """Turn a parsed filter into a predicate over a resource mapping.

    ``case_exact`` gets the lower-case dotted attribute name (``grantee.type``) and says whether
    string comparisons on it are case-sensitive; by default none are.
    """
    exact_of = case_exact or (lambda _name: False)
    if isinstance(node, And):
        left, right = (
            compile_node(node.left, exact_of, prefix),
            compile_node(node.right, exact_of, prefix),
        )
        return lambda r: left(r) and right(r)
    if isinstance(node, Or):
        left, right = (
            compile_node(node.left, exact_of, prefix),
            compile_node(node.right, exact_of, prefix),
        )
        return lambda r: left(r) or right(r)
    if isinstance(node, Not):
        inner = compile_node(node.inner, exact_of, prefix)
        return lambda r: not inner(r)
    path = node.path
    if isinstance(node, ValuePath):
        sub = compile_node(node.inner, exact_of, f"{prefix}{path.dotted()}.")
        return lambda r: any(isinstance(v, Mapping) and sub(v) for v in resolve(r, path))
    if isinstance(node, Present):
        return lambda r: any(v not in ("", [], {}) for v in resolve(r, path))
    if node.value is None:
        present = compile_node(Present(path), exact_of, prefix)
        return present if node.op == "ne" else (lambda r: not present(r))
    op = "eq" if node.op == "ne" else node.op
    test = _compare_fn(op, node.value, exact_of(prefix + path.dotted()))
    if node.op == "ne":
        return lambda r: not any(test(v) for v in resolve(r, path))
    return lambda r: any(test(v) for v in resolve(r, path))


def compile_filter(text: str, case_exact: CaseExact | None = None) -> Predicate:
    """Parse and compile in one step."""
    return compile_node(parse(text), case_exact)
