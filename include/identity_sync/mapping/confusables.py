"""Look-alike usernames (Unicode TR 39, simplified): mixed scripts and confusable skeletons.

An IDCS administrator must not be able to pass for a Bitbucket administrator by choosing a name
that *looks* like one (design invariant 4): ``аdmin`` with a Cyrillic ``а`` is a different
Bitbucket account from ``admin`` but reads the same in every list and log.

Two checks, both on the Bitbucket ``name`` the mapping produces:

* :func:`mixed_script`: the letters of one name come from more than one script (Latin and
  Cyrillic, Latin and Greek...). Mapping quarantines such a user. Combinations that TR 39's
  "highly restrictive" level allows (Latin with Han and Japanese kana, with Han and Bopomofo, with
  Han and Hangul) are not mixed; digits, ``.``, ``-``, ``_`` and ``@`` belong to no script. Latin
  letters with diacritics (``jöhn``) are Latin. A name in one non-Latin script (``иван``) is fine.
* :func:`skeleton`: a name reduced to what it looks like (NFKC, each look-alike replaced by its
  Latin prototype, invisible format characters dropped, NFD, casefold). Two different names with
  the same skeleton are confusable: mapping quarantines users of one run whose names collide so,
  and the planner reports a ``confusable_name`` conflict for a name that would be created (or
  renamed to) while Bitbucket has a different account with the same skeleton.

Why not a library: no small pure-Python package on PyPI provides the TR 39 skeleton
(``confusable_homoglyphs`` detects mixed scripts and confusable characters but has no skeleton;
PyICU's ``SpoofChecker`` needs the ICU C library). The table below holds the look-alikes of Latin
letters that matter in usernames (from Unicode's ``confusables.txt``); mixed scripts catch the
rest. ASCII characters map to themselves: ASCII-only look-alikes (``rn``/``m``, ``l``/``1``,
``0``/``o``) occur in real names and are not flagged.
"""

from __future__ import annotations

import unicodedata

# Look-alike → Latin prototype (both cases: the skeleton is casefolded after mapping).
_PROTOTYPES = {
    # Cyrillic
    "а": "a", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "ӏ": "l",
    "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "ԝ": "w", "х": "x", "у": "y", "ү": "y", "ѵ": "v",
    "ɡ": "g",
    "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "І": "I", "Ј": "J", "К": "K", "М": "M",
    "О": "O", "Р": "P", "Ԛ": "Q", "Ѕ": "S", "Т": "T", "Ԝ": "W", "Х": "X", "У": "Y", "Ү": "Y",
    "Ӏ": "l", "Ԁ": "d",
    # Greek
    "α": "a", "ϲ": "c", "ε": "e", "ι": "i", "ϳ": "j", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "υ": "u", "χ": "x", "γ": "y",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "ք": "f",
    # Latin letters outside ASCII that look like ASCII ones
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʟ": "l", "ɴ": "n", "ʀ": "r", "ᴠ": "v",
    "ᴡ": "w", "ᴢ": "z", "ᴏ": "o", "ᴄ": "c", "ꜱ": "s", "ᴜ": "u",
}
_TABLE = str.maketrans(_PROTOTYPES)

# TR 39 "highly restrictive": these script sets count as one (Latin + CJK writing systems).
_ALLOWED_MIXES = (frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
                  frozenset({"LATIN", "HAN", "BOPOMOFO"}),
                  frozenset({"LATIN", "HAN", "HANGUL"}))
_SCRIPT_ALIASES = {"CJK": "HAN"}


def _script(char: str) -> str:
    """The script of a letter, from its Unicode name's first word (``CYRILLIC SMALL LETTER A``
    → CYRILLIC), which for letters names the script."""
    word = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(word, word)


def scripts(name: str) -> set[str]:
    """The scripts of the letters in ``name`` after compatibility decomposition (fullwidth and
    mathematical letters count as the script they imitate)."""
    return {_script(c) for c in unicodedata.normalize("NFKD", name)
            if unicodedata.category(c).startswith("L")}


def mixed_script(name: str) -> set[str] | None:
    """The scripts when ``name`` mixes them (a look-alike risk), else None."""
    if name.isascii():
        return None
    found = scripts(name)
    if len(found) < 2 or any(found <= allowed for allowed in _ALLOWED_MIXES):
        return None
    return found


def skeleton(name: str) -> str:
    """What ``name`` looks like: equal skeletons of different names mean look-alikes."""
    if name.isascii():
        return name.casefold()
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name))
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")  # zero-width and co.
    return unicodedata.normalize("NFD", text.translate(_TABLE).casefold())


def confusable_reason(name: str, other: str) -> str:
    return (f"name {name!r} looks like {other!r} (same confusable skeleton "
            f"{skeleton(name)!r}): look-alike names are not synced")
