"""The live disaster board: what a board shows, and the frames its ticker sends.

Stream `board.<incident>` is the whole incident (crisis managers, safety administrators, managers);
`board.<incident>-<department>` is one department's subtree (a department manager's own, or a narrower view
that anyone who may see that subtree can open). The stream name is the channel-layer group name, so a socket
only ever joins a group whose every frame it may read.

Every frame holds absolute numbers: a board that missed one needs only the next, and the snapshot sent on
subscribe, on reconnect or on a gap has the same shape. Frames are not kept in the outbox: their sequence
numbers are bumped on the stream's counter (consumers.models.Stream) inside the transaction that reads the
numbers, so a snapshot taken under the same row lock is never older than a frame numbered after it.

One ticker per incident (consumers/ticker.py) calls `board_tick`; answers only mark the incident dirty
(`board_touch`), so a burst of a thousand answers costs a few reads of the tally, not a thousand frames.

While the incident is open the board also lists the people nobody could reach (連絡がつかない人: unanswered,
and every push and e-mail delivery failed, or neither channel at all; safety.escalation), with their phone
numbers, for the managers of their department's subtree to call. One more query per tick, capped per department.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import math
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Case, Count, F, IntegerField, Q, Value, When, Window
from django.db.models.functions import RowNumber
from django.http import Http404
from django.utils import timezone

from consumers.models import Stream
from consumers.publisher import wire_frame
from directory.groups import phone_href
from directory.models import Department, Organization, User
from safety.escalation import unreachable_reasons
from safety.events import BOARD_TALLY, InstructionData, board_group
from safety.models import Delivery, Incident, Instruction, Recipient
from safety.selectors import access_incident, result_scope

ATTENTION_LIMIT = 50  # people shown at the top of one board
UNREACHABLE_LIMIT = 50  # people nobody could reach, shown on one board
SERIES_POINTS = 120
SERIES_MIN_WIDTH = 10  # seconds
MILESTONES = (25, 50, 75)
INSTRUCTIONS_SHOWN = 50
STATUSES = ("safe", "minor", "serious", "answered", "none")

_KEY_RE = re.compile(r"^([1-9][0-9]{0,17})(?:-([1-9][0-9]{0,17}))?$")


def _parse_key(key: str) -> tuple[int, int | None]:
    match = _KEY_RE.match(key)
    if match is None:
        raise Http404
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _dirty_key(incident_id: int) -> str:
    return f"board:dirty:{incident_id}"


def board_touch(incident_id: int) -> None:
    """The incident's numbers may have changed: its ticker reads them on its next tick. Call after commit."""
    cache.set(_dirty_key(incident_id), 1, timeout=3600)


def board_take_dirty(ticker_key: str) -> bool:
    """Whether the incident was touched since the last call (and clear it)."""
    return bool(cache.delete(_dirty_key(int(ticker_key))))


# --- Who may read which board ---------------------------------------------------------------------------------


def board_access(user: User, key: str) -> tuple[Incident, int | None]:
    """The incident and department of a board key that `user` may read; Http404 otherwise. The whole incident
    needs an organisation-wide view; a department's subtree needs that department inside the caller's scope."""
    incident_id, department_id = _parse_key(key)
    incident = access_incident(user, incident_id)
    scope = result_scope(user)
    if department_id is None:
        if scope is not None:
            raise Http404
    elif not Department.objects.filter(id=department_id, organization_id=user.organization_id).exists() or (
        scope is not None and department_id not in scope
    ):
        raise Http404
    return incident, department_id


def board_key_for(user: User, incident: Incident) -> str:
    """The board a person opens by default: the whole incident, or a department manager's own subtree."""
    if result_scope(user) is None or not user.department_id:
        return board_group(incident.id)
    return board_group(incident.id, user.department_id)


def board_stream_access(user: User, key: str) -> str:
    incident, department_id = board_access(user, key)
    return board_group(incident.id, department_id)


def board_stream_snapshot(user: User, key: str) -> dict[str, object]:
    incident, department_id = board_access(user, key)
    return board_snapshot(incident, department_id)


def board_snapshot(incident: Incident, department_id: int | None) -> dict[str, Any]:
    """What a board shows on subscribe: the numbers and the latest instructions."""
    data: dict[str, Any] = board_view(board_source(incident), department_id)
    data["instructions"] = instruction_list(incident=incident)
    return data


# --- Instructions -----------------------------------------------------------------------------------------------


def instruction_data(instruction: Instruction) -> InstructionData:
    author = instruction.author
    return {
        "id": instruction.id,
        "incident_id": instruction.incident_id,
        "body": instruction.body,
        "author": author.display_name if author is not None else "",
        "created_at": instruction.created_at.isoformat(),
    }


def instruction_list(*, incident: Incident, limit: int = INSTRUCTIONS_SHOWN) -> list[InstructionData]:
    """The incident's instructions, newest first."""
    rows = Instruction.objects.filter(incident=incident).select_related("author").order_by("-created_at", "-id")
    return [instruction_data(i) for i in rows[:limit]]


def _followed_key(stream: str) -> str:
    return f"board:followed:{stream}"


# A mark outlives a web process that stalls for a while under load (its ticker cannot renew the mark while its
# sockets stay open): instructions go only to marked boards and, unlike a tally, are never sent again. bench.disaster
# with 2 daphne on a saturated machine saw three department boards on one process miss an instruction with 10 s.
FOLLOW_MIN_SECONDS = 60


def board_follow(streams: Sequence[str], seconds: int) -> None:
    """These boards have sockets on this process: its ticker marks them every third of `seconds` (the lease). A
    mark lasts 2 x `seconds`, at least FOLLOW_MIN_SECONDS: a board its sockets left is read that much longer."""
    cache.set_many({_followed_key(s): 1 for s in streams}, timeout=max(seconds * 2, FOLLOW_MIN_SECONDS))


def board_followed(streams: Sequence[str]) -> list[str]:
    """The department boards among `streams` that some process still marks as followed, and the whole board
    (always: there is one). A department board nobody follows any more is not read, numbered or sent."""
    marked = cache.get_many([_followed_key(s) for s in streams])
    return [s for s in streams if "-" not in s or _followed_key(s) in marked]


def board_stream_keys(incident_id: int) -> list[str]:
    """The boards of the incident that anyone has opened (each has a stream counter once snapshotted)."""
    group = board_group(incident_id)
    return list(
        Stream.objects.filter(Q(key=group) | Q(key__startswith=f"{group}-"))
        .order_by("key")
        .values_list("key", flat=True)
    )


# --- Reading the numbers once per tick -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionRow:
    person_id: int
    department_id: int | None
    name: str
    department: str
    status: str
    needs_help: bool
    answered_at: datetime | None
    comment: str


@dataclass(frozen=True)
class UnreachableRow:
    person_id: int
    department_id: int | None
    name: str
    department: str
    phones: tuple[tuple[str, str, str], ...]  # (kind, number, href)
    reasons: tuple[str, ...]
    escalated_at: datetime | None


@dataclass
class BoardSource:
    """Everything the boards of one incident show, read in a few queries; each board is cut from it."""

    incident: Incident
    departments: dict[int, tuple[str, int | None, tuple[int, str]]]  # id -> (name, parent id, sort key)
    counts: list[tuple[int | None, str, bool, int]]  # (department, status, needs help, people)
    answered: list[tuple[int | None, float]]  # (department, first answer as epoch seconds), sorted by time
    answered_by_department: dict[int | None, list[float]]  # the same, per department (each sorted)
    attention: list[AttentionRow]
    start: float  # epoch seconds: when the incident opened
    end: float  # now, or when it was completed
    # People nobody could reach: the first UNREACHABLE_LIMIT of each department, in name order, and how many
    # there are per department.
    unreachable: list[UnreachableRow] = field(default_factory=list)
    unreachable_counts: dict[int | None, int] = field(default_factory=dict)

    def subtree(self, department_id: int) -> set[int]:
        children: dict[int, list[int]] = {}
        for dept_id, (_name, parent_id, _order) in self.departments.items():
            if parent_id is not None:
                children.setdefault(parent_id, []).append(dept_id)
        ids, frontier = {department_id}, [department_id]
        while frontier:
            frontier = [c for p in frontier for c in children.get(p, ()) if c not in ids]
            ids.update(frontier)
        return ids


_ANSWERED_SQL = (
    "SELECT u.department_id, EXTRACT(EPOCH FROM r.first_answered_at)::float8 FROM {recipient} r"
    " JOIN {user} u ON u.id = r.person_id WHERE r.incident_id = %s AND r.first_answered_at IS NOT NULL"
    " ORDER BY r.first_answered_at"
)


def _answered_times(incident: Incident) -> list[tuple[int | None, float]]:
    if connection.vendor == "postgresql":
        # Epoch floats: reading 10,000 timestamps with their time zones costs several times more.
        sql = _ANSWERED_SQL.format(recipient=Recipient._meta.db_table, user=User._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(sql, [incident.id])
            return [(d, float(t)) for d, t in cursor.fetchall()]
    rows = (
        Recipient.objects.filter(incident=incident, first_answered_at__isnull=False)
        .order_by("first_answered_at")
        .values_list("person__department_id", "first_answered_at")
    )
    return [(d, t.timestamp()) for d, t in rows if t is not None]


# Unanswered people whose push and e-mail rows are all failed or absent (LEFT JOIN: at most one row per channel,
# unique per incident, person and channel), the first %(limit)s per department in name order, with how many per
# department. The partial window keeps the cost to the unanswered people, read through recipient_incident_status.
_UNREACHABLE_SQL = (
    "SELECT * FROM ("
    " SELECT r.person_id, u.department_id, u.last_name, u.first_name, u.login_id, u.phone_number,"
    " u.mobile_phone_number, p.state, p.error, e.state, e.error, r.escalated_at, o.phone_url_scheme,"
    " ROW_NUMBER() OVER (PARTITION BY u.department_id"
    "  ORDER BY u.last_name_kana, u.first_name_kana, u.login_id, r.person_id) AS n,"
    " COUNT(*) OVER (PARTITION BY u.department_id) AS department_total"
    " FROM {recipient} r JOIN {user} u ON u.id = r.person_id JOIN {organization} o ON o.id = u.organization_id"
    " LEFT JOIN {delivery} p ON p.incident_id = r.incident_id AND p.person_id = r.person_id AND p.channel = 'push'"
    " LEFT JOIN {delivery} e ON e.incident_id = r.incident_id AND e.person_id = r.person_id AND e.channel = 'email'"
    " WHERE r.incident_id = %s AND r.status = '' AND r.answer_count = 0"
    " AND (p.id IS NULL OR p.state = 'failed') AND (e.id IS NULL OR e.state = 'failed')"
    ") x WHERE x.n <= %s ORDER BY x.department_id, x.n"
)


def _unreachable(
    incident: Incident, departments: Mapping[int, tuple[str, int | None, tuple[int, str]]]
) -> tuple[list[UnreachableRow], dict[int | None, int]]:
    """The people nobody could reach (one query); nobody once the incident is closed (answers are over)."""
    if not incident.is_open:
        return [], {}
    sql = _UNREACHABLE_SQL.format(
        recipient=Recipient._meta.db_table,
        user=User._meta.db_table,
        organization=Organization._meta.db_table,
        delivery=Delivery._meta.db_table,
    )
    rows: list[UnreachableRow] = []
    counts: dict[int | None, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [incident.id, UNREACHABLE_LIMIT])
        for (
            person_id,
            dept_id,
            last_name,
            first_name,
            login_id,
            phone,
            mobile,
            push_state,
            push_error,
            email_state,
            email_error,
            escalated_at,
            scheme,
            _n,
            department_total,
        ) in cursor.fetchall():
            channels: dict[str, tuple[str, str]] = {}
            if push_state is not None:
                channels["push"] = (push_state, push_error or "")
            if email_state is not None:
                channels["email"] = (email_state, email_error or "")
            reasons = unreachable_reasons(channels) or []
            numbers = (("phone", phone or ""), ("mobile", mobile or ""))
            rows.append(
                UnreachableRow(
                    person_id=person_id,
                    department_id=dept_id,
                    name=f"{last_name} {first_name}".strip() or login_id,  # as User.display_name
                    department=departments[dept_id][0] if dept_id in departments else "",
                    phones=tuple(
                        (kind, number, phone_href(scheme=scheme, number=number))
                        for kind, number in numbers
                        if any(ch.isdigit() for ch in number)
                    ),
                    reasons=tuple(reasons),
                    escalated_at=_aware(escalated_at),
                )
            )
            counts[dept_id] = int(department_total)
    return rows, counts


def _aware(moment: datetime | None) -> datetime | None:
    """A timestamp from a raw query: aware on PostgreSQL, naive UTC on SQLite."""
    if moment is None or timezone.is_aware(moment):
        return moment
    return moment.replace(tzinfo=UTC)


def board_source(incident: Incident, *, now: datetime | None = None) -> BoardSource:
    departments: dict[int, tuple[str, int | None, tuple[int, str]]] = {
        d: (name, parent, (order, code))
        for d, name, parent, order, code in Department.objects.filter(
            organization_id=incident.organization_id
        ).values_list("id", "name", "parent_id", "sort_order", "code")
    }
    counts = [
        (d, status or "none", bool(helped), n)
        for d, status, helped, n in Recipient.objects.filter(incident=incident)
        .values_list("person__department_id", "status", "needs_help")
        .annotate(n=Count("id"))
        .order_by()
    ]
    # Serious injuries first, then requests for help, newest first; the first ATTENTION_LIMIT of each department,
    # so every board (any subtree) finds its own first ATTENTION_LIMIT among the rows read.
    serious_first = Case(When(status="serious", then=Value(0)), default=Value(1), output_field=IntegerField())
    attention_rows = (
        Recipient.objects.filter(incident=incident)
        .filter(Q(status="serious") | Q(needs_help=True))
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("person__department_id")],
                order_by=[serious_first.asc(), F("answered_at").desc(nulls_last=True), F("id").desc()],
            )
        )
        .filter(rank__lte=ATTENTION_LIMIT)
        .order_by(serious_first.asc(), F("answered_at").desc(nulls_last=True), "-id")
        # Plain rows, not model instances: up to ATTENTION_LIMIT per department, on every tick.
        .values_list(
            "person_id",
            "person__department_id",
            "person__last_name",
            "person__first_name",
            "person__login_id",
            "status",
            "needs_help",
            "answered_at",
            "answer__values",
        )
    )
    attention = []
    for (
        person_id,
        dept_id,
        last_name,
        first_name,
        login_id,
        status,
        needs_help,
        answered_at,
        values,
    ) in attention_rows:
        comment = values.get("comment") if isinstance(values, dict) else None
        attention.append(
            AttentionRow(
                person_id=person_id,
                department_id=dept_id,
                name=f"{last_name} {first_name}".strip() or login_id,  # as User.display_name
                department=departments[dept_id][0] if dept_id in departments else "",
                status=status or "none",
                needs_help=needs_help,
                answered_at=answered_at,
                comment=comment[:200] if isinstance(comment, str) else "",
            )
        )
    answered = _answered_times(incident)
    by_department: dict[int | None, list[float]] = {}
    for department_id, t in answered:
        by_department.setdefault(department_id, []).append(t)
    unreachable, unreachable_counts = _unreachable(incident, departments)
    start = incident.opened_at or incident.created_at
    end = incident.completed_at or now or timezone.now()
    return BoardSource(
        incident=incident,
        departments=departments,
        counts=counts,
        answered=answered,
        answered_by_department=by_department,
        attention=attention,
        start=start.timestamp(),
        end=max(end.timestamp(), start.timestamp()),
        unreachable=unreachable,
        unreachable_counts=unreachable_counts,
    )


# --- One board, cut from the source ---------------------------------------------------------------------------------


def _counts_dict() -> dict[str, int]:
    return {s: 0 for s in STATUSES}


def _rate(answered: int, total: int) -> float:
    return round(answered / total, 4) if total else 0.0


def _series(times: list[float], start: float, end: float) -> dict[str, Any]:
    """Cumulative first answers at the end of each interval since the incident opened (at most SERIES_POINTS)."""
    span = max(end - start, 1.0)
    width = max(SERIES_MIN_WIDTH, math.ceil(span / SERIES_POINTS / SERIES_MIN_WIDTH) * SERIES_MIN_WIDTH)
    count = max(1, math.ceil(span / width))
    # `times` is in order: the running total at the end of an interval is how many came before that end
    # (answers before the start count in the first interval, any after the end in the last).
    points = [bisect.bisect_left(times, start + (i + 1) * width) for i in range(count - 1)]
    points.append(len(times))
    return {"width": width, "points": points}


def _milestones(times: list[float], total: int, start: float) -> list[dict[str, Any]]:
    """When 25, 50 and 75 % of the people asked had answered, in seconds after the incident opened."""
    rows = []
    for percent in MILESTONES:
        needed = math.ceil(total * percent / 100) if total else 0
        if needed and len(times) >= needed:
            t = times[needed - 1]
            rows.append(
                {
                    "percent": percent,
                    "seconds": max(0, round(t - start)),
                    "at": datetime.fromtimestamp(t, tz=timezone.get_current_timezone()).isoformat(),
                }
            )
        else:
            rows.append({"percent": percent, "seconds": None, "at": None})
    return rows


def board_view(source: BoardSource, department_id: int | None) -> dict[str, Any]:
    """The board of the whole incident (None) or of one department's subtree. Pure: no queries."""
    incident = source.incident
    scope = None if department_id is None else source.subtree(department_id)
    per_department: dict[int | None, dict[str, Any]] = {}
    total_counts = _counts_dict()
    total_help = total_attention = 0
    for dept, status, helped, n in source.counts:
        if scope is not None and dept not in scope:
            continue
        row = per_department.get(dept)
        if row is None:
            row = per_department[dept] = {"counts": _counts_dict(), "needs_help": 0}
        row["counts"][status] = row["counts"].get(status, 0) + n
        total_counts[status] = total_counts.get(status, 0) + n
        if helped:
            row["needs_help"] += n
            total_help += n
        if helped or status == "serious":
            total_attention += n

    def order(dept: int | None) -> tuple[int, int, str]:
        info = source.departments.get(dept) if dept is not None else None
        return (1, 0, "") if info is None else (0, *info[2])

    departments = []
    for dept in sorted(per_department, key=order):
        row = per_department[dept]
        people = sum(row["counts"].values())
        answered = people - row["counts"]["none"]
        info = source.departments.get(dept) if dept is not None else None
        departments.append(
            {
                "id": dept,
                "name": info[0] if info else "",
                "total": people,
                "answered": answered,
                "rate": _rate(answered, people),
                "counts": row["counts"],
                "needs_help": row["needs_help"],
            }
        )
    people = sum(total_counts.values())
    answered = people - total_counts["none"]
    if scope is None:
        times = [t for _dept, t in source.answered]
    else:  # the subtree's own departments merged: the cost follows the subtree's size, not the incident's
        times = list(heapq.merge(*(source.answered_by_department.get(d, ()) for d in scope)))
    attention = [
        {
            "id": a.person_id,
            "name": a.name,
            "department": a.department,
            "status": a.status,
            "needs_help": a.needs_help,
            "answered_at": a.answered_at.isoformat() if a.answered_at else None,
            "comment": a.comment,
        }
        for a in source.attention
        if scope is None or a.department_id in scope
    ]
    # The rows come serious injuries first, then requests for help, newest first within each.
    unreachable = _unreachable_view(source, scope)
    start = datetime.fromtimestamp(source.start, tz=timezone.get_current_timezone())
    return {
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "status": incident.status,
            "status_label": str(incident.get_status_display()),
            "is_drill": incident.is_drill,
            "is_open": incident.is_open,
            "opened_at": start.isoformat(),
            "completed_at": incident.completed_at.isoformat() if incident.completed_at else None,
            "has_safety": any(q.get("key") == "safety" for q in incident.questions),
        },
        "scope": {
            "department_id": department_id,
            "name": source.departments[department_id][0] if department_id in source.departments else "",
        },
        "total": {
            "total": people,
            "answered": answered,
            "rate": _rate(answered, people),
            "counts": total_counts,
            "needs_help": total_help,
            "attention": total_attention,
        },
        "departments": departments,
        "attention": attention[:ATTENTION_LIMIT],
        "unreachable": unreachable,
        "unreachable_total": sum(n for d, n in source.unreachable_counts.items() if scope is None or d in scope),
        "series": {"start": start.isoformat(), **_series(times, source.start, source.end)},
        "milestones": _milestones(times, people, source.start),
        "frozen": incident.status == "completed",
    }


def _unreachable_view(source: BoardSource, scope: set[int] | None) -> list[dict[str, Any]]:
    """The people nobody could reach within the board's scope, in the directory's department order, then by name
    (the first UNREACHABLE_LIMIT)."""

    def order(row: UnreachableRow) -> tuple[int, int, str]:
        info = source.departments.get(row.department_id) if row.department_id is not None else None
        return (1, 0, "") if info is None else (0, *info[2])

    rows = [u for u in source.unreachable if scope is None or u.department_id in scope]
    rows.sort(key=order)  # stable: the query's name order stays within a department
    return [
        {
            "id": u.person_id,
            "name": u.name,
            "department": u.department,
            "phones": [{"kind": kind, "number": number, "href": href} for kind, number, href in u.phones],
            "reasons": list(u.reasons),
            "escalated_at": u.escalated_at.isoformat() if u.escalated_at else None,
        }
        for u in rows[:UNREACHABLE_LIMIT]
    ]


def _digest(data: Mapping[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class BoardFrame:
    stream: str
    seq: int
    text: str
    digest: str


def board_tick(ticker_key: str, sent: MutableMapping[str, str]) -> list[BoardFrame]:
    """Frames for every open board of the incident whose numbers differ from what was last sent (`sent`:
    stream -> digest, kept by the ticker; update it once the frames are out). The stream counters are locked
    while the numbers are read, so frame numbers follow the data's age, also against snapshots."""
    incident_id = int(ticker_key)
    followed = board_followed(board_stream_keys(incident_id))
    with transaction.atomic():
        keys = list(
            Stream.objects.select_for_update().filter(key__in=followed).order_by("key").values_list("key", flat=True)
        )
        incident = Incident.objects.filter(id=incident_id).first()
        if not keys or incident is None:
            return []
        source = board_source(incident)
        changed: dict[str, tuple[dict[str, Any], str]] = {}
        for key in keys:
            try:
                _incident, department_id = _parse_key(key.split(".", 1)[1])
            except Http404:
                continue
            if department_id is not None and department_id not in source.departments:
                continue  # the department was removed from the directory
            data = board_view(source, department_id)
            digest = _digest(data)
            if sent.get(key) != digest:
                changed[key] = (data, digest)
        if not changed:
            return []
        Stream.objects.filter(key__in=list(changed)).update(last_seq=F("last_seq") + 1)
        seqs = dict(Stream.objects.filter(key__in=list(changed)).values_list("key", "last_seq"))
    return [
        BoardFrame(
            stream=key,
            seq=seqs[key],
            text=wire_frame(stream=key, seq=seqs[key], event_type=BOARD_TALLY, data=data),
            digest=digest,
        )
        for key, (data, digest) in changed.items()
    ]


def board_ticker_key(stream: str) -> str:
    """All boards of one incident share one ticker, keyed by the incident id."""
    return str(_parse_key(stream.split(".", 1)[1])[0])
