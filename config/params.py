"""Reading whole numbers from query parameters: ASCII digits only (str.isdigit() is also true for "²", which int()
refuses, and "١", which it reads as 1) and at most 18 of them (a bigint id; int() refuses more than 4,300 digits,
and PostgreSQL more than a bigint)."""

from __future__ import annotations


def is_id(raw: str) -> bool:
    return 0 < len(raw) <= 18 and raw.isascii() and raw.isdigit()
