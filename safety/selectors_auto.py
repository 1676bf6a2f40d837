"""Reads of automatic dispatch for its API and pages: the drill-mode switch (read without creating the settings
row), the audit log one page at a time, the stored JMA documents to pick for a replay, rule names and the people
a verification reaches. Nothing here writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db.models import F

from directory.models import Organization, User
from safety.models import DispatchRule, JmaDecision, JmaDocument, SafetySettings

DECISIONS_PER_PAGE = 50
DOCUMENTS_MAX = 200
DOCUMENT_KINDS = ("earthquake", "tsunami", "weather")
PEOPLE_MAX = 500


def drill_mode_get(*, organization: Organization) -> bool:
    """Whether 訓練 messages dispatch (as drills) for this organisation; off until someone switches it on."""
    value = SafetySettings.objects.filter(organization=organization).values_list("drill_mode", flat=True).first()
    return bool(value)


def rule_list(*, organization: Organization) -> list[DispatchRule]:
    return list(DispatchRule.objects.filter(organization=organization).order_by("hazard", "id"))


def rule_names(*, organization: Organization, rule_ids: Iterable[int]) -> dict[int, str]:
    """{id: name} of this organisation's rules among `rule_ids` (a deleted rule is simply absent)."""
    ids = sorted(set(rule_ids))
    if not ids:
        return {}
    return dict(DispatchRule.objects.filter(organization=organization, id__in=ids).values_list("id", "name"))


@dataclass(frozen=True)
class DecisionPage:
    decisions: list[JmaDecision]
    count: int  # every decision of the organisation
    page: int
    has_more: bool


def decision_page(*, organization: Organization, page: int, per_page: int = DECISIONS_PER_PAGE) -> DecisionPage:
    """The audit log of one organisation, newest first, with each decision's document (without its bytes).
    Two queries: the count and the page."""
    query = JmaDecision.objects.filter(organization=organization)
    count = query.count()
    start = (page - 1) * per_page
    rows = list(
        query.select_related("document")
        .defer("document__raw", "document__summary")
        .order_by("-decided_at", "-id")[start : start + per_page]
    )
    return DecisionPage(decisions=rows, count=count, page=page, has_more=start + len(rows) < count)


def document_list(*, kind: str = "", limit: int = DOCUMENTS_MAX) -> list[JmaDocument]:
    """Stored JMA documents, newest report first (those without a report time last), without their bytes."""
    query = JmaDocument.objects.defer("raw", "summary")
    if kind:
        query = query.filter(kind=kind)
    return list(query.order_by(F("report_datetime").desc(nulls_last=True), "-received_at", "-id")[:limit])


def documents_raw(*, document_ids: Sequence[int]) -> dict[int, JmaDocument]:
    """The stored documents with these ids, bytes included, by id (unknown ids are absent)."""
    return {d.id: d for d in JmaDocument.objects.filter(id__in=set(document_ids)).only("id", "url", "raw")}


def people_rows(*, organization: Organization, person_ids: Iterable[int], limit: int = PEOPLE_MAX) -> list[User]:
    """The first `limit` of these people of the organisation (by login ID), with their department."""
    ids = set(person_ids)
    if not ids:
        return []
    return list(
        User.objects.filter(organization=organization, id__in=ids)
        .select_related("department")
        .only("id", "login_id", "last_name", "first_name", "region_code", "department__name")
        .order_by("login_id", "id")[:limit]
    )
