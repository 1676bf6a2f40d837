"""Directory search text: one normalised string per person, and the same normalisation for queries."""

from __future__ import annotations

import re
import unicodedata

_DIGITS = re.compile(r"\D")


def normalize(text: str) -> str:
    """NFKC, lower case, hiragana as katakana: 'ﾀﾅｶ', 'たなか' and 'タナカ' all match."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(chr(ord(ch) + 0x60) if "\u3041" <= ch <= "\u3096" else ch for ch in text)


def search_text(
    *,
    last_name: str,
    first_name: str,
    last_name_kana: str,
    first_name_kana: str,
    department_name: str,
    position: str,
    email: str,
    email2: str,
    phones: tuple[str, ...],
    login_id: str,
) -> str:
    parts = [
        f"{last_name}{first_name}",
        f"{last_name} {first_name}",
        f"{last_name_kana}{first_name_kana}",
        department_name,
        position,
        email,
        email2,
        login_id,
        *(_DIGITS.sub("", p) for p in phones if p),
    ]
    return normalize("\n".join(p for p in parts if p))


def query_terms(query: str) -> list[str]:
    """Whitespace-separated terms, each normalised; a phone-like term also matches by its digits."""
    terms = []
    for term in normalize(query).split():
        digits = _DIGITS.sub("", term)
        terms.append(digits if len(digits) >= 3 and len(digits) >= len(term) - 3 else term)
    return terms[:5]
