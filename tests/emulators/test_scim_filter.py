"""SCIM filter parser and evaluator: grammar, precedence, errors and IDCS comparison semantics."""

from __future__ import annotations

from typing import Any

import pytest

from identity_sync.emulators.scim_filter import (
    And,
    Compare,
    FilterError,
    Not,
    Or,
    Path,
    Present,
    ValuePath,
    compile_filter,
    parse,
    parse_path,
    roots,
    tokenize,
)

EXT = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"

USER: dict[str, Any] = {
    "id": "a1",
    "userName": "Jose.Nunez",
    "displayName": "José Núñez",
    "active": True,
    "name": {"givenName": "José", "familyName": "Núñez"},
    "emails": [
        {"value": "jose.nunez@example.com", "type": "work", "primary": True},
        {"value": "jnunez@mail.example.org", "type": "recovery", "primary": False},
    ],
    "groups": [{"value": "g1", "display": "Engineering"}, {"value": "g2", "display": "Admins"}],
    "meta": {"created": "2024-03-01T10:00:00.000Z", "lastModified": "2025-06-30T23:59:59.999Z"},
    "loginCount": 7,
    "nickName": "",
    EXT: {"isFederatedUser": True},
}


def match(text: str, resource: dict[str, Any] = USER, **kwargs: Any) -> bool:
    return compile_filter(text, **kwargs)(resource)


def test_tokenizer_reads_json_strings_numbers_words_and_brackets() -> None:
    tokens = tokenize('emails[value co "a\\"b"] and x ge -1.5e2')
    assert [(t.kind, t.text) for t in tokens] == [
        ("word", "emails"),
        ("punct", "["),
        ("word", "value"),
        ("word", "co"),
        ("string", '"a\\"b"'),
        ("punct", "]"),
        ("word", "and"),
        ("word", "x"),
        ("word", "ge"),
        ("number", "-1.5e2"),
        ("end", ""),
    ]
    assert tokens[4].value == 'a"b'
    assert tokens[9].value == -150.0


def test_and_binds_tighter_than_or_and_parentheses_override() -> None:
    a, b, c = (Compare(Path(None, (n,)), "eq", n) for n in "abc")
    assert parse('a eq "a" or b eq "b" and c eq "c"') == Or(a, And(b, c))
    assert parse('(a eq "a" or b eq "b") and c eq "c"') == And(Or(a, b), c)
    assert parse('not (a eq "a")') == Not(a)


def test_parses_complex_extension_and_present_expressions() -> None:
    node = parse('emails[type eq "work" and value co "@x"]')
    assert isinstance(node, ValuePath)
    assert node.path == Path(None, ("emails",))
    assert isinstance(node.inner, And)
    assert parse(f"{EXT}:isFederatedUser eq true") == Compare(
        Path(EXT, ("isFederatedUser",)), "eq", True
    )
    assert parse("title pr") == Present(Path(None, ("title",)))


def test_keywords_are_case_insensitive() -> None:
    assert parse('userName EQ "x" AND active Eq TRUE') == parse(
        'userName eq "x" and active eq true'
    )


def test_parse_path_splits_urn_and_dotted_names() -> None:
    assert parse_path("name.familyName") == Path(None, ("name", "familyName"))
    assert parse_path(f"{EXT}:appRoles.value") == Path(EXT, ("appRoles", "value"))
    assert parse_path("meta.lastModified").dotted() == "meta.lastmodified"
    assert parse_path(f"{EXT}:isFederatedUser").root == EXT.lower()


def test_roots_lists_top_level_attributes_read() -> None:
    node = parse(f'groups.value eq "g" or (name.givenName sw "J" and {EXT}:isFederatedUser pr)')
    assert roots(node) == {"groups", "name", EXT.lower()}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "userName eq",
        'userName xx "a"',
        'userName "a"',
        '(userName eq "a"',
        'userName eq "a")',
        'emails[type eq "work"',
        'emails[value[type eq "x"]]',
        "userName co true",
        "meta.created gt null",
        "active lt false",
        '"unterminated',
        'userName eq "a" and',
        "a.b.c eq 1",
        "userName eq 'single'",
        'not userName eq "a"',
        'userName eq "a" userName eq "b"',
        'userName eq "bad \\q escape"',
        "userName eq #",
        '9abc eq "x"',
    ],
)
def test_malformed_filters_are_rejected(text: str) -> None:
    with pytest.raises(FilterError):
        parse(text)


def test_string_equality_ignores_case_unless_case_exact() -> None:
    assert match('userName eq "jose.nunez"')
    assert match('USERNAME eq "JOSE.NUNEZ"')  # attribute names are case-insensitive too
    assert not match('userName eq "jose.nunez"', case_exact=lambda name: name == "username")
    assert match('userName eq "Jose.Nunez"', case_exact=lambda name: name == "username")


def test_string_operators() -> None:
    assert match('displayName co "núñez"')
    assert match('userName sw "JOSE"')
    assert match('userName ew ".nunez"')
    assert not match('userName sw "nunez"')
    assert match('userName ne "someone.else"')
    assert not match('userName ne "JOSE.NUNEZ"')


def test_present_ignores_missing_and_empty_values() -> None:
    assert match("name.givenName pr")
    assert not match("title pr")
    assert not match("nickName pr")
    assert match("emails pr")


def test_datetimes_compare_chronologically() -> None:
    assert match('meta.lastModified gt "2025-06-30T23:59:59Z"')
    assert not match('meta.lastModified gt "2025-07-01T00:00:00Z"')
    # Same instant written with an offset: chronological, not lexical.
    assert match('meta.created eq "2024-03-01T11:00:00+01:00"')
    assert (
        match('meta.created ge "2024-03-01T10:00:00.000Z" and meta.created le "2024-03-01"')
        is False
    )
    assert match('meta.created lt "2024-03-02"')


def test_numbers_booleans_and_null() -> None:
    assert match("loginCount gt 6 and loginCount le 7")
    assert not match("loginCount lt 7")
    assert match("active eq true")
    assert not match("active eq false")
    assert not match('active eq "true"')  # a string never equals a boolean
    assert match("title eq null")
    assert match("userName ne null")


def test_multi_valued_attributes_match_if_any_value_matches() -> None:
    assert match('emails.value co "mail.example.org"')
    assert match('groups.value eq "g2"')
    assert not match('groups.value eq "g3"')
    assert not match('groups.value ne "g1"')  # ne is "no value equals"


def test_complex_filter_needs_one_value_satisfying_all_conditions() -> None:
    assert match('emails[type eq "work" and value co "@example.com"]')
    assert not match('emails[type eq "recovery" and value co "@example.com"]')
    assert match('emails[type eq "recovery"] and not (emails[primary eq false and type eq "work"])')


def test_complex_filter_case_exact_uses_the_full_path() -> None:
    seen: list[str] = []

    def exact(name: str) -> bool:
        seen.append(name)
        return name == "groups.value"

    assert not match('groups[value eq "G1"]', case_exact=exact)
    assert "groups.value" in seen


def test_extension_and_core_urn_paths() -> None:
    assert match(f"{EXT}:isFederatedUser eq true")
    assert not match(f"{EXT}:isFederatedUser eq false")
    assert match('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "jose.nunez"')
    assert not match("urn:ietf:params:scim:schemas:oracle:idcs:extension:other:User:x pr")


def test_logical_combinations() -> None:
    assert match('userName eq "nobody" or active eq true')
    assert not match('userName eq "nobody" and active eq true')
    assert match('not (userName eq "nobody")')
    assert match("not (not (active eq true))")
