"""The live disaster board page, /<slug>/safety/incidents/<id>/board/: what crisis managers, safety
administrators, managers and department managers watch on a laptop during a disaster.

The view reads and renders; it only creates the stream's counter row, as subscribing would. The first screen is
`board_snapshot` (the same data the board socket sends on subscribe and GET /api/safety/incidents/<id>/board/
answers), embedded for the script and drawn in the HTML, with the stream's seq read under the same lock.
frontend/static/frontend/board.js follows the board's stream (`board.<incident>`, or a department manager's
`board.<incident>-<department>`) from that seq through app.js `Live.follow`, so opening the board reads it once,
not twice; it reads the people list from the results API and posts instructions and opens the instruction room
through the board API. Who may open which board is `safety.board.board_access`: anyone else gets the 403 page,
another organisation's incident or a department outside the caller's scope the 404 page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from consumers.models import Stream
from directory.models import Organization
from frontend.safety_views import _answer_filter_labels, _departments, _labels, _viewer
from frontend.views import _page, org_page
from safety import selectors
from safety.api_board import department_param, room_data
from safety.api_safety import result_row_data
from safety.board import board_access, board_key_for, board_snapshot
from safety.events import board_group
from safety.selectors import ResultFilter, access_incident, result_scope
from safety.services import MAX_INSTRUCTION

# People in one page of the board's people list.
PEOPLE_PAGE = 50
# The people list follows the numbers, but reads the results API at most this often.
PEOPLE_REFRESH_MS = 3000


def rate_percent(answered: int, total: int) -> int:
    """The answer rate as a whole percent, rounded half up, but never 100 % while someone has not answered
    (board.js rounds the same way)."""
    if not total:
        return 0
    percent = int(answered * 100 / total + 0.5)
    return 99 if percent == 100 and answered < total else percent


def duration_text(seconds: int | None) -> str:
    """The time between two moments as people say it: "12分30秒", "1時間5分", "45秒" (English: "12 min 30 s", …).
    board.js has the same rule."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(h)s h %(m)s min") % {"h": hours, "m": minutes}
    if minutes:
        return _("%(m)s min %(s)s s") % {"m": minutes, "s": secs}
    return _("%(s)s s") % {"s": secs}


def _local(iso: str | None) -> datetime | None:
    moment = parse_datetime(iso) if iso else None
    return timezone.localtime(moment) if moment is not None else None


def _clock(iso: str | None, *, seconds: bool = False) -> str:
    """A time as the board shows it: "14:05" today, "3/11 14:05" on another day (board.js does the same)."""
    local = _local(iso)
    if local is None:
        return ""
    time = local.strftime("%H:%M:%S" if seconds else "%H:%M")
    if local.date() == timezone.localdate():
        return time
    return f"{local.month}/{local.day} {time}"


def _texts() -> dict[str, str]:
    """Everything board.js writes, translated here: the script carries no language of its own."""
    return {
        "network": _("The server could not be reached. Check the connection and try again."),
        "failed": _("That did not work: %(message)s"),
        "live": _("Live"),
        "connecting": _("Connecting…"),
        "reconnecting": _("Reconnecting…"),
        "stream_error": _("The live updates of this board could not be started: %(message)s"),
        "updated": _("Updated %(time)s"),
        "completed_at": _("Completed at %(time)s"),
        "report_of": _("(%(answered)s of %(total)s answered)"),
        "filter_department": _("Show these people in the list below"),
        "rate_label": _("Answer rate"),
        "people_n": _("%(n)s people"),
        "people_one": _("1 person"),
        "no_department": _("No department"),
        "needs_help": _("Needs help"),
        "attention_none": _("Nobody has reported a serious injury or asked for help."),
        "attention_more": _("Showing the newest %(shown)s of %(total)s."),
        "attention_new": _("Needs attention: %(name)s (%(department)s), %(status)s"),
        "attention_new_help": _("Asked for help: %(name)s (%(department)s), %(status)s"),
        "departments_none": _("Nobody has been asked yet."),
        "department_of": _("%(name)s: %(answered)s of %(total)s answered (%(rate)s%%)"),
        "chart_label": _("Answer rate over time: %(rate)s%% now, %(elapsed)s after the start"),
        "chart_empty": _("Nobody has been asked yet."),
        "milestone": _("%(percent)s%% answered"),
        "milestone_at": _("after %(duration)s (%(time)s)"),
        "milestone_not_yet": _("not yet"),
        "milestone_never": _("not reached"),
        "h_m": _("%(h)s h %(m)s min"),
        "m_s": _("%(m)s min %(s)s s"),
        "s": _("%(s)s s"),
        "instructions_none": _("No instructions yet."),
        "instruction_new": _("New instruction: %(body)s"),
        "instruction_sent": _("Sent. It reaches everyone asked by push and in the app."),
        "instruction_empty": _("Write the instruction."),
        "instruction_long": _("An instruction is at most %(n)d characters."),
        "sending": _("Sending…"),
        "chars": _("%(n)s / %(max)s characters"),
        "people_none": _("Nobody matches."),
        "people_showing": _("%(from)s–%(to)s of %(total)s"),
        "people_loading": _("Loading…"),
        "answers_n": _("%(n)s answers"),
        "proxy_by": _("Entered by %(name)s"),
        "frozen_now": _("The incident is completed. These are the final numbers."),
        "room_open": _("Open the instruction room"),
        "room_join": _("Join the instruction room"),
        "room_add": _("Add people"),
        "room_add_chosen": _("Add the chosen people"),
        "room_create": _("Open the instruction room"),
        "room_created": _("The instruction room is open."),
        "room_added": _("The people were added."),
        "room_members_only": _("This incident has an instruction room; its members talk there."),
        "room_none": _("No instruction room yet. Crisis managers and safety administrators can open one."),
        "room_needs_talk": _("Opening the instruction room needs talk: ask an administrator to turn talk on for you."),
        "nobody_found": _("Nobody found."),
        "searching": _("Searching…"),
        "search_failed": _("The search failed. Check the connection and try again."),
        "add": _("Add"),
        "remove": _("Remove"),
        "chosen_none": _("Nobody chosen yet: the room starts with you alone, and you can add people later."),
        "chosen_n": _("%(n)s chosen"),
        "unreachable_more": _("Showing %(shown)s of %(total)s."),
        "unreachable_escalated": _("Sent again %(time)s"),
        "unreachable_no_phone": _("No phone number in the directory"),
        "phone_phone": _("Phone"),
        "phone_mobile": _("Mobile"),
        "call": _("Call %(name)s: %(number)s"),
    }


@never_cache
@require_GET
@org_page()
def board_page(request: HttpRequest, organization: Organization, incident_id: int) -> HttpResponse:
    """The board of the whole incident, of a department manager's own subtree, or (?department=N) of one
    department's subtree inside the caller's scope."""
    person = _viewer(request)
    incident = access_incident(person, incident_id)
    scope = result_scope(person)
    if scope is not None and not scope:
        raise PermissionDenied  # a department manager without a department sees nobody
    wanted = department_param(request.GET.get("department", ""))
    default_stream = board_key_for(person, incident)
    # ?department=0 names no department: 404 (board_access refuses the key), not the caller's default board.
    stream = default_stream if wanted is None else board_group(incident.id, wanted)
    incident, department_id = board_access(person, stream.split(".", 1)[1])
    # The seq the page subscribes from (board.js: Live.follow(stream, seq)), read as the socket's snapshot reads
    # it (consumers/live.py _snapshot): with the stream's counter locked, so no board frame is numbered between
    # the two reads. A board that has not moved since then answers the subscription with "subscribed" alone.
    Stream.objects.get_or_create(key=stream)
    with transaction.atomic():
        seq = Stream.objects.select_for_update().filter(key=stream).values_list("last_seq", flat=True).get()
        board = board_snapshot(incident, department_id)

    slug = organization.slug
    tree = _departments(organization, scope)
    # A department manager's subtree starts at their own department's depth: indent from there.
    base = min((d["depth"] for d in tree), default=0)
    departments = [{**d, "depth": d["depth"] - base, "label": "\u3000" * (d["depth"] - base) + d["name"]} for d in tree]
    people_departments = _people_department_options(departments, department_id)
    rows, people_total = selectors.result_rows(
        incident=incident, scope=scope, filters=ResultFilter(department_id=department_id), limit=PEOPLE_PAGE
    )
    people_results = [result_row_data(r) for r in rows]
    people = {"total": people_total, "results": people_results}
    can_post = selectors.can_manage_incidents(person)
    room = room_data(incident, person, slug=slug)
    now = timezone.now()
    labels = _labels()
    page: dict[str, Any] = {
        "stream": stream,
        "default_stream": default_stream,
        "incident_id": incident.id,
        "incident_url": f"/{slug}/safety/incidents/{incident.id}/",
        "board_url": f"/{slug}/safety/incidents/{incident.id}/board/",
        "scope_department": department_id,
        "full_scope": scope is None,
        "departments": departments,
        "people_departments": people_departments,
        "people": people,
        "people_page": PEOPLE_PAGE,
        "people_refresh_ms": PEOPLE_REFRESH_MS,
        "can_post": can_post,
        "instruction_max": MAX_INSTRUCTION,
        "room": room,
        "can_open_room": can_post,
        "uses_talk": bool(person.talk_available),
        "labels": labels,
        "timezone": settings.TIME_ZONE,
        "rendered_at": now.isoformat(),
    }
    total = board["total"]
    answer_labels = labels["answer"]
    return _page(
        request,
        "frontend/safety/board.html",
        organization,
        incident=incident,
        board=board,
        stream=stream,
        seq=seq,
        page_data=page,
        texts=_texts(),
        rate=rate_percent(total["answered"], total["total"]),
        departments=departments,
        people_departments=people_departments,
        department_rows=[_department_row(d, answer_labels) for d in board["departments"]],
        attention=[
            {**a, "time": _clock(a["answered_at"]), "status_label": answer_labels.get(a["status"], a["status"])}
            for a in board["attention"]
        ],
        milestones=[_milestone_row(m, frozen=board["frozen"]) for m in board["milestones"]],
        unreachable=[_unreachable_row(u, labels["reason"]) for u in board["unreachable"]],
        instructions=[{**i, "time": _clock(i["created_at"])} for i in board["instructions"]],
        people_rows=[{**r, "time": _clock(r["answered_at"]), "comment": _comment(r)} for r in people_results],
        people_total=people_total,
        answer_filters=_answer_filter_labels(),
        updated=timezone.localtime(now).strftime("%H:%M:%S"),
        completed=_clock(board["incident"]["completed_at"]),
        elapsed=_elapsed(board),
        can_post=can_post,
        room=room,
        can_open_room=can_post,
        uses_talk=bool(person.talk_available),
        instruction_max=MAX_INSTRUCTION,
    )


def _people_department_options(departments: list[dict[str, Any]], department_id: int | None) -> list[dict[str, Any]]:
    """The department filter of the people list: first the board's whole scope (value ""), then each department
    inside it, indented by its depth under the board's department (the flat list is in tree order)."""
    if department_id is None:
        return [{"value": "", "label": _("All departments")}] + [
            {"value": d["id"], "label": d["label"]} for d in departments
        ]
    options: list[dict[str, Any]] = []
    top: int | None = None
    for row in departments:
        if top is not None:
            if row["depth"] <= top:
                break
            options.append({"value": row["id"], "label": "\u3000" * (row["depth"] - top) + row["name"]})
        elif row["id"] == department_id:
            top = row["depth"]
            options.append({"value": "", "label": row["name"]})
    return options


def _unreachable_row(u: dict[str, Any], reasons: dict[str, str]) -> dict[str, Any]:
    kinds = {"phone": _("Phone"), "mobile": _("Mobile")}
    return {
        **u,
        "reason_labels": [reasons.get(r, r) for r in u["reasons"]],
        "phone_rows": [{**p, "label": kinds.get(p["kind"], p["kind"])} for p in u["phones"]],
        "time": _clock(u["escalated_at"]),
    }


def _department_row(d: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    total = d["total"] or 1
    segments = [
        {
            "key": key,
            "label": labels.get(key, key),
            "n": d["counts"].get(key, 0),
            "width": f"{d['counts'].get(key, 0) * 100 / total:.2f}",
        }
        for key in ("safe", "minor", "serious", "answered", "none")
    ]
    return {**d, "segments": segments, "percent": rate_percent(d["answered"], d["total"])}


def _milestone_row(m: dict[str, Any], *, frozen: bool) -> dict[str, Any]:
    if m["seconds"] is None:
        return {**m, "text": _("not reached") if frozen else _("not yet"), "reached": False}
    return {
        **m,
        "text": _("after %(duration)s (%(time)s)") % {"duration": duration_text(m["seconds"]), "time": _clock(m["at"])},
        "reached": True,
    }


def _elapsed(board: dict[str, Any]) -> str:
    start = _local(board["incident"]["opened_at"])
    end = _local(board["incident"]["completed_at"])
    if start is None or end is None:
        return ""
    return duration_text(round((end - start).total_seconds()))


def _comment(row: dict[str, Any]) -> str:
    answer = row.get("answer") or {}
    values = answer.get("values") if isinstance(answer, dict) else None
    comment = values.get("comment") if isinstance(values, dict) else None
    return comment[:200] if isinstance(comment, str) else ""
