"""The delivery status of an incident (配信状況), GET /<slug>/api/safety/incidents/<id>/deliveries/: for every
person asked and every channel, how far the notification got (queued → sent → delivered → opened → answered, or
failed), when, in which round, and why it failed.

Whoever sees the incident's results may read it; department managers see their department's subtree only
(`result_scope`), in the counts as in the list. Errors are shown as the sender recorded them, except that any
word with an "@" is masked: a bounce's diagnostic often names the address, and addresses (private ones above
all) are never shown here. Filters: `state`, `channel`, `department` (with its subtree), `q` (the directory's
search text), and `limit` / `offset` paging; a bad filter is a 400, never a 500."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django.utils.translation import gettext as _
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import ApplicationError
from config.params import is_id
from directory.api import OrgAPIView
from directory.models import User
from directory.permissions import PasswordChanged
from directory.search import query_terms
from directory.selectors import department_subtrees
from safety.api_safety import ViewsResults
from safety.escalation import failure_reason
from safety.models import Channel, Delivery, DeliveryState, Incident, Recipient
from safety.selectors import access_incident, delivery_counts, result_scope

PAGE_SIZE = 50
PAGE_MAX = 200
QUERY_MAX = 100
CHANNELS = tuple(Channel.values)
STATES = tuple(DeliveryState.values)
_ADDRESS = re.compile(r"\S*@\S*")


def error_mask(error: str) -> str:
    """A delivery's error without any address in it: every word with an "@" becomes "***"."""
    return _ADDRESS.sub("***", error) if "@" in error else error


@dataclass(frozen=True)
class DeliveryFilter:
    state: str = ""  # one of STATES, or "" for any
    channel: str = ""  # one of CHANNELS, or "" for any
    department_id: int | None = None  # with its subtree
    query: str = ""


def delivery_filter(params: Any) -> DeliveryFilter:
    """The filters of the query string; ApplicationError (400) for one that is not valid."""
    state, channel = params.get("state", ""), params.get("channel", "")
    department = params.get("department", "")
    if state and state not in STATES:
        raise ApplicationError(_("Unknown delivery state."), code="bad_filter")
    if channel and channel not in CHANNELS:
        raise ApplicationError(_("Unknown channel."), code="bad_filter")
    if department and not is_id(department):
        raise ApplicationError(_("department must be a department id."), code="bad_filter")
    query = params.get("q", "").replace("\x00", "")[:QUERY_MAX]
    return DeliveryFilter(
        state=state, channel=channel, department_id=int(department) if department else None, query=query
    )


def page_params(params: Any) -> tuple[int, int]:
    """limit (1 … PAGE_MAX, default PAGE_SIZE) and offset (default 0); anything else is the default."""
    limit, offset = params.get("limit", ""), params.get("offset", "")
    return (
        min(int(limit), PAGE_MAX) if is_id(limit) and int(limit) > 0 else PAGE_SIZE,
        int(offset) if is_id(offset) else 0,
    )


def _people(incident: Incident, scope: set[int] | None, filters: DeliveryFilter) -> QuerySet[Recipient]:
    rows = Recipient.objects.filter(incident=incident)
    if scope is not None:
        rows = rows.filter(person__department_id__in=scope)
    if filters.department_id is not None:
        subtrees = department_subtrees(organization_id=incident.organization_id, department_ids=[filters.department_id])
        rows = rows.filter(person__department_id__in=subtrees.get(filters.department_id, set()))
    for term in query_terms(filters.query):
        rows = rows.filter(person__search_text__contains=term)
    if filters.state or filters.channel:
        wanted = Delivery.objects.filter(incident_id=incident.id, person_id=OuterRef("person_id"))
        if filters.state:
            wanted = wanted.filter(state=filters.state)
        if filters.channel:
            wanted = wanted.filter(channel=filters.channel)
        rows = rows.filter(Exists(wanted))
    return rows


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment else None


def delivery_data(row: Delivery) -> dict[str, Any]:
    return {
        "state": row.state,
        "round": row.round,
        "sent_at": _iso(row.sent_at),
        "delivered_at": _iso(row.delivered_at),
        "opened_at": _iso(row.opened_at),
        "updated_at": _iso(row.updated_at),
        "error": error_mask(row.error),
        "reason": failure_reason(row.channel, row.state, row.error),
    }


def delivery_status(
    *, incident: Incident, scope: set[int] | None, filters: DeliveryFilter, limit: int = PAGE_SIZE, offset: int = 0
) -> dict[str, Any]:
    """The counts per channel and state (the caller's scope, unfiltered), and one page of people with a row per
    channel they were sent on. Four queries: the counts, the number of people matching, the page, and its
    deliveries."""
    people = _people(incident, scope, filters)
    total = people.count()
    page = list(
        people.select_related("person", "person__department").order_by(
            "person__department__sort_order",
            "person__department__code",
            "person__last_name_kana",
            "person__first_name_kana",
            "person_id",
        )[offset : offset + limit]
    )
    by_person: dict[int, dict[str, dict[str, Any]]] = {}
    if page:
        rows = Delivery.objects.filter(incident=incident, person_id__in=[r.person_id for r in page]).only(
            "person_id", "channel", "state", "round", "sent_at", "delivered_at", "opened_at", "updated_at", "error"
        )
        for row in rows:
            by_person.setdefault(row.person_id, {})[row.channel] = delivery_data(row)
    return {
        "counts": delivery_counts(incident=incident, scope=scope),
        "total": total,
        "limit": limit,
        "offset": offset,
        "results": [_person_row(r, by_person.get(r.person_id, {})) for r in page],
    }


def _person_row(recipient: Recipient, channels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    person: User = recipient.person
    return {
        "person": {
            "id": person.id,
            "name": person.display_name,
            "department": person.department.name if person.department else "",
            "department_id": person.department_id,
        },
        "status": recipient.status or "none",
        "escalated_at": _iso(recipient.escalated_at),
        "channels": {c: channels[c] for c in CHANNELS if c in channels},
    }


class DeliveriesApi(OrgAPIView):
    """GET: the delivery status of the incident, in the caller's scope (see the module's docstring)."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        filters = delivery_filter(request.query_params)
        limit, offset = page_params(request.query_params)
        return Response(
            delivery_status(
                incident=incident, scope=result_scope(self.person), filters=filters, limit=limit, offset=offset
            )
        )
