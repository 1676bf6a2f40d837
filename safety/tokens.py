"""Signed answer links: one incident, one person, one organisation, and an expiry.

The token is Django's signing of `[organisation id, incident id, person id]` with its own salt, so it cannot be
altered, moved to another incident or person, or used under another organisation's URL."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing

SALT = "safety.answer-link"


@dataclass(frozen=True)
class AnswerLink:
    organization_id: int
    incident_id: int
    person_id: int


def answer_token(*, organization_id: int, incident_id: int, person_id: int) -> str:
    return signing.dumps([organization_id, incident_id, person_id], salt=SALT, compress=False)


def answer_token_read(token: str, *, max_age: int | None = None) -> AnswerLink | None:
    """The link a token stands for, or None if it was altered, is malformed or has expired."""
    if not isinstance(token, str) or not 10 < len(token) < 300:
        return None
    age = settings.SAFETY_ANSWER_LINK_SECONDS if max_age is None else max_age
    try:
        value = signing.loads(token, salt=SALT, max_age=age)
    except (signing.BadSignature, ValueError):
        return None
    if not (isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value)):
        return None
    return AnswerLink(organization_id=value[0], incident_id=value[1], person_id=value[2])


def answer_path(*, slug: str, token: str) -> str:
    return f"/{slug}/answer/{token}/"
