"""Reads of the safety confirmation: access to incidents, who a send targets, the result list, the tally per
department, answer history, a person's open requests and the directory badges.

Department managers see only their department's subtree: every read that lists people takes the caller's
`scope` (None for everyone, or a set of department ids) from `result_scope`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from directory.models import Department, Organization, Role, RoleAssignment, User
from directory.selectors import department_subtree_ids, department_subtrees
from safety.models import Answer, AnswerStatus, Delivery, Incident, IncidentStatus, MessageTemplate, Recipient

ADMIN_ROLES = (Role.SYSTEM_ADMIN, Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER, Role.DEPARTMENT_MANAGER)
OPEN_STATUSES = (IncidentStatus.ACCEPTING, IncidentStatus.SENDING)
ANSWER_FILTERS = ("answered", "unanswered", "safe", "minor", "serious", "needs_help")
TARGET_MODES = ("everyone", "filter", "chosen")


def can_manage_incidents(user: User) -> bool:
    """Registers, sends, resends and completes incidents."""
    return user.has_role(Role.CRISIS_MANAGER, Role.ADMIN_ANPI)


def can_view_results(user: User) -> bool:
    return user.has_role(Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER, Role.DEPARTMENT_MANAGER)


def result_scope(user: User) -> set[int] | None:
    """The departments whose people `user` may see in results: None for all of them. A department manager sees
    their department's subtree (nothing, if they have no department)."""
    if user.has_role(Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER):
        return None
    if user.has_role(Role.DEPARTMENT_MANAGER) and user.department_id:
        return department_subtree_ids(department=user.department)  # type: ignore[arg-type]
    return set()


def access_incident(user: User, incident_id: int) -> Incident:
    """An incident of the caller's organisation that the caller may see the results of; Http404 otherwise."""
    if not can_view_results(user):
        raise Http404
    incident = Incident.objects.filter(organization_id=user.organization_id, id=incident_id).first()
    if incident is None:
        raise Http404
    return incident


def access_request(user: User, incident_id: int) -> Recipient:
    """The caller's own request to answer an incident (they were sent it); Http404 otherwise."""
    recipient = (
        Recipient.objects.filter(incident_id=incident_id, person=user, incident__organization_id=user.organization_id)
        .select_related("incident", "answer")
        .first()
    )
    if recipient is None:
        raise Http404
    return recipient


def template_search(*, organization: Organization, query: str = "", limit: int = 50) -> list[MessageTemplate]:
    templates = MessageTemplate.objects.filter(organization=organization)
    for term in query.split():
        templates = templates.filter(Q(name__icontains=term) | Q(title__icontains=term) | Q(body__icontains=term))
    return list(templates[:limit])


def incident_list(*, organization: Organization, scope: set[int] | None = None, limit: int = 100) -> list[Incident]:
    """The organisation's incidents, newest first, with how many people were asked and answered (within `scope`)."""
    asked = Q() if scope is None else Q(recipients__person__department_id__in=scope)
    return list(
        Incident.objects.filter(organization=organization).annotate(
            recipients_count=Count("recipients", filter=asked, distinct=True),
            answered_count=Count("recipients", filter=asked & ~Q(recipients__status=""), distinct=True),
        )[:limit]
    )


# --- Who a send reaches -------------------------------------------------------------------------------------


def target_people_ids(*, incident: Incident, target: Mapping[str, Any]) -> list[int]:
    """The people a send with this target reaches: active people of the organisation with a safety-confirmation
    ID (ANPI_LOGIN_ID), narrowed by the target. `target` is already checked (see services.target_clean)."""
    people = User.objects.filter(organization_id=incident.organization_id, is_active=True, anpi_login_id__isnull=False)
    mode = target.get("mode", "everyone")
    if mode == "chosen":
        people = people.filter(id__in=target.get("person_ids", []))
    elif mode == "filter":
        department_ids = target.get("department_ids") or []
        if department_ids:
            subtrees = department_subtrees(organization_id=incident.organization_id, department_ids=department_ids)
            people = people.filter(department_id__in=set().union(*subtrees.values()))
        if target.get("regions"):
            people = people.filter(region_code__in=target["regions"])
        if target.get("roles"):
            people = people.filter(id__in=RoleAssignment.objects.filter(role__in=target["roles"]).values("user_id"))
        answer = target.get("answer")
        if answer:
            asked = Recipient.objects.filter(incident=incident)
            if answer == "unanswered":
                # Not answered yet, including people never asked before.
                people = people.exclude(id__in=asked.exclude(status="").values("person_id"))
            else:
                people = people.filter(id__in=_answer_filter(asked, answer).values("person_id"))
    return list(people.order_by("id").values_list("id", flat=True))


def _answer_filter(recipients: QuerySet[Recipient], answer: str) -> QuerySet[Recipient]:
    if answer == "answered":
        return recipients.exclude(status="")
    if answer == "unanswered":
        return recipients.filter(status="")
    if answer == "needs_help":
        return recipients.filter(needs_help=True)
    return recipients.filter(status=answer)


# --- Results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFilter:
    department_id: int | None = None  # with its subtree
    answer: str = ""  # one of ANSWER_FILTERS, or "" for all
    query: str = ""  # name, kana, login ID …: the directory's search text


def _recipients(incident: Incident, scope: set[int] | None, filters: ResultFilter) -> QuerySet[Recipient]:
    from directory.search import query_terms

    rows = Recipient.objects.filter(incident=incident)
    if scope is not None:
        rows = rows.filter(person__department_id__in=scope)
    if filters.department_id is not None:
        subtrees = department_subtrees(organization_id=incident.organization_id, department_ids=[filters.department_id])
        rows = rows.filter(person__department_id__in=subtrees.get(filters.department_id, set()))
    if filters.answer:
        rows = _answer_filter(rows, filters.answer)
    for term in query_terms(filters.query):
        rows = rows.filter(person__search_text__contains=term)
    return rows


@dataclass
class ResultRow:
    recipient: Recipient
    person: User
    answer: Answer | None
    deliveries: dict[str, str] = field(default_factory=dict)  # channel -> state


def result_rows(
    *,
    incident: Incident,
    scope: set[int] | None,
    filters: ResultFilter = ResultFilter(),
    limit: int = 200,
    offset: int = 0,
) -> tuple[list[ResultRow], int]:
    """One page of the result list (people with their latest answer and delivery states), and the total that
    matches. Three queries: the count, the page, and the deliveries of the page."""
    rows = _recipients(incident, scope, filters)
    total = rows.count()
    page = list(
        rows.select_related("person", "person__department", "answer", "answer__entered_by").order_by(
            "person__department__sort_order",
            "person__department__code",
            "person__last_name_kana",
            "person__first_name_kana",
            "person_id",
        )[offset : offset + limit]
    )
    states: dict[int, dict[str, str]] = {}
    if page:
        for person_id, channel, state in Delivery.objects.filter(
            incident=incident, person_id__in=[r.person_id for r in page]
        ).values_list("person_id", "channel", "state"):
            states.setdefault(person_id, {})[channel] = state
    return [ResultRow(r, r.person, r.answer, states.get(r.person_id, {})) for r in page], total


@dataclass(frozen=True)
class DepartmentTally:
    department_id: int | None
    name: str
    counts: dict[str, int]  # safe / minor / serious / answered / none
    needs_help: int
    total: int

    @property
    def answered(self) -> int:
        return self.total - self.counts.get("none", 0)

    @property
    def rate(self) -> float:
        return self.answered / self.total if self.total else 0.0


def _empty_counts() -> dict[str, int]:
    return {"safe": 0, "minor": 0, "serious": 0, "answered": 0, "none": 0}


# The GROUP BY first, then the department names joined onto its few rows: one round trip, and the 10,000 rows are
# grouped by two narrow columns (grouping by the names too, or a second query for them, costs 1.4-1.7x; P6).
_TALLY_SQL = (
    "SELECT g.department_id, g.status, g.n, g.helped, d.name, d.sort_order, d.code FROM ("
    " SELECT u.department_id, r.status, COUNT(*) AS n, COUNT(*) FILTER (WHERE r.needs_help) AS helped"
    " FROM {recipient} r JOIN {user} u ON u.id = r.person_id"
    " WHERE r.incident_id = %s{scope}"
    " GROUP BY u.department_id, r.status"
    ") g LEFT JOIN {department} d ON d.id = g.department_id"
)


def tally_by_department(*, incident: Incident, scope: set[int] | None = None) -> list[DepartmentTally]:
    """The count of each answer per department, in the directory's order; people without a department come last
    under department_id None. One query (SQL of its own: see _TALLY_SQL)."""
    if scope is not None and not scope:
        return []
    params: list[Any] = [incident.id]
    where = ""
    if scope is not None:
        ids = sorted(scope)
        where = f" AND u.department_id IN ({', '.join(['%s'] * len(ids))})"
        params += ids
    sql = _TALLY_SQL.format(
        recipient=Recipient._meta.db_table, user=User._meta.db_table, department=Department._meta.db_table, scope=where
    )
    by_department: dict[int | None, dict[str, int]] = {}
    help_by_department: dict[int | None, int] = {}
    names: dict[int | None, str] = {}
    order: dict[int | None, tuple[int, int, str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for department_id, status, n, helped, name, sort_order, code in cursor.fetchall():
            counts = by_department.get(department_id)
            if counts is None:
                counts = by_department[department_id] = _empty_counts()
                help_by_department[department_id] = 0
                names[department_id] = name or ""
                order[department_id] = (1, 0, "") if name is None else (0, sort_order, code)
            counts[status or "none"] = counts.get(status or "none", 0) + n
            help_by_department[department_id] += helped
    return [
        DepartmentTally(
            department_id=key,
            name=names[key],
            counts=counts,
            needs_help=help_by_department[key],
            total=sum(counts.values()),
        )
        for key, counts in sorted(by_department.items(), key=lambda item: order[item[0]])
    ]


def tally_total(rows: Sequence[DepartmentTally]) -> DepartmentTally:
    """The whole incident (or the caller's scope) as one row, from the per-department rows."""
    counts = _empty_counts()
    for row in rows:
        for status, n in row.counts.items():
            counts[status] = counts.get(status, 0) + n
    return DepartmentTally(
        department_id=None,
        name="",
        counts=counts,
        needs_help=sum(r.needs_help for r in rows),
        total=sum(counts.values()),
    )


def answer_history(*, incident: Incident, person_ids: Iterable[int]) -> dict[int, list[Answer]]:
    """Every answer of these people to the incident, oldest first (one query)."""
    history: dict[int, list[Answer]] = {}
    for answer in Answer.objects.filter(incident=incident, person_id__in=list(person_ids)).select_related("entered_by"):
        history.setdefault(answer.person_id, []).append(answer)
    return history


def delivery_counts(*, incident: Incident, scope: set[int] | None = None) -> dict[str, dict[str, int]]:
    """channel -> state -> count, for the incident page."""
    rows = Delivery.objects.filter(incident=incident)
    if scope is not None:
        rows = rows.filter(person__department_id__in=scope)
    counts: dict[str, dict[str, int]] = {}
    for channel, state, n in rows.values_list("channel", "state").annotate(n=Count("id")).order_by():
        counts.setdefault(channel, {})[state] = n
    return counts


# --- The person's side ------------------------------------------------------------------------------------


def open_requests(*, person: User) -> list[Recipient]:
    """The open incidents the person was asked to answer, newest first, with their current answer."""
    return list(
        Recipient.objects.filter(person=person, incident__status__in=OPEN_STATUSES)
        .select_related("incident", "answer")
        .order_by("-incident__created_at")
    )


def open_incident(*, organization_id: int) -> Incident | None:
    """The organisation's newest open incident that is not a drill (the one the directory shows answers of)."""
    return (
        Incident.objects.filter(organization_id=organization_id, status__in=OPEN_STATUSES, is_drill=False)
        .order_by("-created_at", "-id")
        .first()
    )


def safety_badges(*, organization_id: int, user_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each listed person's answer to the open incident ({"status", "label"}), for the directory badges; {}
    when no incident is open. People the incident did not ask are left out. Two queries."""
    incident = open_incident(organization_id=organization_id)
    if incident is None or not user_ids:
        return {}
    labels = dict(AnswerStatus.choices)
    badges: dict[int, dict[str, Any]] = {}
    for person_id, status in Recipient.objects.filter(incident=incident, person_id__in=list(user_ids)).values_list(
        "person_id", "status"
    ):
        badges[person_id] = {
            "status": status or "none",
            "label": str(labels.get(status, "")),
            "incident_id": incident.id,
        }
    return badges
