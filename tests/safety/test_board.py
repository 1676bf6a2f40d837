"""The live disaster board: its numbers against COUNT(*) over the recipients (whole incident and a department's
subtree), the attention list, the answer-rate series and the 25/50/75 % milestones, the frames the ticker sends
(only for opened boards whose numbers changed, numbered on the stream counter), the dirty mark answers, sends
and completion leave after commit, and who may read which board (service and REST)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db.models import Q
from django.http import Http404
from django.test import Client
from django.utils import timezone

from consumers.models import Stream
from directory.models import Department, Organization, Role, User
from safety import services
from safety.board import (
    ATTENTION_LIMIT,
    board_access,
    board_follow,
    board_key_for,
    board_snapshot,
    board_source,
    board_take_dirty,
    board_tick,
    board_touch,
    board_view,
)
from safety.models import Incident, IncidentStatus, Recipient
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import Tree, answer, incident_make, safety_person, send

pytestmark = pytest.mark.django_db

STATUSES = ("safe", "minor", "serious", "answered", "none")


# --- A crowd across the departments, answering every way ----------------------------------------------------


@dataclass
class Crowd:
    incident: Incident
    by_department: dict[int | None, list[User]]
    proxied: User
    not_asked: list[User]

    def people(self, *department_ids: int | None) -> list[User]:
        return [p for d in department_ids for p in self.by_department[d]]


def _script(incident: Incident, person: User, index: int) -> None:
    """Seven ways of answering, by the person's position in their department."""
    comment = f"{person.login_id}: 足を負傷"
    match index % 7:
        case 0:
            answer(incident, person, "safe")
        case 1:
            answer(incident, person, "minor", help="yes")
        case 2:
            answer(incident, person, "serious", comment=comment)
        case 3:
            pass  # no answer
        case 4:  # changed for the worse: now serious and asking for help
            answer(incident, person, "safe")
            answer(incident, person, "serious", help="yes", comment=comment)
        case 5:  # changed for the better: no longer needs attention
            answer(incident, person, "serious", help="yes", comment="最初の回答")
            answer(incident, person, "safe", help="no")
        case 6:
            answer(incident, person, "minor")


@pytest.fixture
def crowd(org: Organization, crisis: User, incident: Incident, tree: Tree) -> Crowd:
    sizes: dict[int | None, int] = {tree.hq.id: 7, tree.sales.id: 8, tree.east.id: 9, tree.plant.id: 10, None: 3}
    codes = {tree.hq.id: "hq", tree.sales.id: "sales", tree.east.id: "east", tree.plant.id: "plant", None: "free"}
    departments = {d.id: d for d in (tree.hq, tree.sales, tree.east, tree.plant)}
    by_department: dict[int | None, list[User]] = {}
    for dept_id, size in sizes.items():
        by_department[dept_id] = [
            safety_person(org, f"{codes[dept_id]}{i}", department=departments.get(dept_id) if dept_id else None)
            for i in range(size)
        ]
    # Not a safety-confirmation user: never asked.
    factories.person(org, "no-anpi", department=tree.sales)
    send(incident, crisis)
    for people in by_department.values():
        for index, person in enumerate(people):
            _script(incident, person, index)
    # Someone who did not answer is reached by phone: a proxy answer.
    proxied = by_department[tree.plant.id][3]
    services.proxy_answer_submit(
        incident=incident,
        actor=crisis,
        person=proxied,
        values={"safety": "serious", "comment": "電話で確認: 骨折"},
        note="電話で確認",
        scope=None,
    )
    # Joined after the send: not asked either.
    late = safety_person(org, "late", department=tree.east)
    incident.refresh_from_db()
    return Crowd(incident=incident, by_department=by_department, proxied=proxied, not_asked=[late])


def _counts(rows: Any) -> dict[str, int]:
    found = {s: rows.filter(status=s).count() for s in ("safe", "minor", "serious", "answered")}
    found["none"] = rows.filter(status="").count()
    return found


def _rate(answered: int, total: int) -> float:
    return round(answered / total, 4) if total else 0.0


def expected_total(incident: Incident, departments: set[int] | None = None) -> dict[str, Any]:
    """The board's totals, counted with the ORM straight from the recipients."""
    rows = Recipient.objects.filter(incident=incident)
    if departments is not None:
        rows = rows.filter(person__department_id__in=departments)
    total = rows.count()
    answered = rows.exclude(status="").count()
    return {
        "total": total,
        "answered": answered,
        "rate": _rate(answered, total),
        "counts": _counts(rows),
        "needs_help": rows.filter(needs_help=True).count(),
        "attention": rows.filter(Q(status="serious") | Q(needs_help=True)).count(),
    }


def expected_departments(incident: Incident, departments: set[int] | None = None) -> list[dict[str, Any]]:
    """One row per department with someone asked, in the directory's order; people without one last."""
    ordered: list[Department | None] = list(
        Department.objects.filter(organization_id=incident.organization_id).order_by("sort_order", "code")
    )
    if departments is None:
        ordered.append(None)
    rows = []
    for department in ordered:
        if department is not None and departments is not None and department.id not in departments:
            continue
        asked = Recipient.objects.filter(incident=incident, person__department=department)
        if department is None:
            asked = Recipient.objects.filter(incident=incident, person__department__isnull=True)
        total = asked.count()
        if not total:
            continue
        answered = asked.exclude(status="").count()
        rows.append(
            {
                "id": department.id if department else None,
                "name": department.name if department else "",
                "total": total,
                "answered": answered,
                "rate": _rate(answered, total),
                "counts": _counts(asked),
                "needs_help": asked.filter(needs_help=True).count(),
            }
        )
    return rows


def expected_attention(incident: Incident, departments: set[int] | None = None) -> list[Recipient]:
    rows = Recipient.objects.filter(incident=incident).filter(Q(status="serious") | Q(needs_help=True))
    if departments is not None:
        rows = rows.filter(person__department_id__in=departments)
    found = list(rows.select_related("person", "person__department", "answer"))
    assert all(r.answered_at is not None for r in found)

    def order(r: Recipient) -> tuple[bool, float, int]:
        assert r.answered_at is not None
        return (r.status != "serious", -r.answered_at.timestamp(), -r.id)

    return sorted(found, key=order)


def assert_numbers(board: dict[str, Any], incident: Incident, departments: set[int] | None) -> None:
    assert board["total"] == expected_total(incident, departments)
    assert board["departments"] == expected_departments(incident, departments)
    attention = expected_attention(incident, departments)
    assert [a["id"] for a in board["attention"]] == [r.person_id for r in attention][:ATTENTION_LIMIT]
    for shown, row in zip(board["attention"], attention, strict=False):
        values = row.answer.values if row.answer else {}
        assert shown["status"] == row.status and shown["needs_help"] == row.needs_help
        assert shown["name"] == row.person.display_name
        assert shown["department"] == (row.person.department.name if row.person.department else "")
        assert shown["comment"] == values.get("comment", "")
        assert datetime.fromisoformat(shown["answered_at"]) == row.answered_at
    assert board["series"]["points"][-1] == board["total"]["answered"]


# --- The numbers ------------------------------------------------------------------------------------------------


def test_the_whole_board_equals_counts_over_the_recipients(crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    board = board_view(board_source(incident), None)
    assert_numbers(board, incident, None)
    total = board["total"]
    # Everyone asked (and nobody else) is counted; every status and both attention reasons occur.
    assert total["total"] == 37 == Recipient.objects.filter(incident=incident).count()
    assert all(total["counts"][s] > 0 for s in ("safe", "minor", "serious", "none"))
    assert total["needs_help"] > 0 and total["attention"] > total["counts"]["serious"]
    asked = set(Recipient.objects.filter(incident=incident).values_list("person_id", flat=True))
    assert not asked & {p.id for p in crowd.not_asked}
    # The directory's order, people without a department last.
    assert [d["id"] for d in board["departments"]] == [tree.hq.id, tree.sales.id, tree.east.id, tree.plant.id, None]
    assert board["scope"] == {"department_id": None, "name": ""}
    assert board["incident"]["id"] == incident.id and board["incident"]["title"] == incident.title
    assert board["incident"]["has_safety"] and not board["incident"]["is_drill"]
    assert board["incident"]["is_open"] and not board["frozen"]


def test_changed_and_proxy_answers_count_once_as_their_latest(crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    board = board_view(board_source(incident), None)
    shown = {a["id"]: a for a in board["attention"]}
    hq = crowd.people(tree.hq.id)
    # index 4: safe, then serious with help → shown as serious needing help.
    assert shown[hq[4].id]["status"] == "serious" and shown[hq[4].id]["needs_help"]
    # index 5: serious with help, then safe → not in the attention list any more.
    assert hq[5].id not in shown
    # The proxy answer counts like any other.
    proxied = shown[crowd.proxied.id]
    assert proxied["status"] == "serious" and proxied["comment"] == "電話で確認: 骨折"
    plant = next(d for d in board["departments"] if d["id"] == tree.plant.id)
    assert plant["counts"]["none"] == 0  # plant3 (index 3) was the plant's only non-answer and was proxied
    assert sum(d["total"] for d in board["departments"]) == board["total"]["total"]


def test_a_subtree_board_holds_only_that_subtree(crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    board = board_view(board_source(incident), tree.sales.id)
    scope = {tree.sales.id, tree.east.id}
    assert_numbers(board, incident, scope)
    assert board["total"]["total"] == len(crowd.people(tree.sales.id, tree.east.id)) == 17
    assert [d["id"] for d in board["departments"]] == [tree.sales.id, tree.east.id]
    assert board["scope"] == {"department_id": tree.sales.id, "name": tree.sales.name}
    outside = {p.id for p in crowd.people(tree.hq.id, tree.plant.id, None)}
    inside = {p.id for p in crowd.people(tree.sales.id, tree.east.id)}
    assert board["attention"] and {a["id"] for a in board["attention"]} <= inside
    assert not {a["id"] for a in board["attention"]} & outside
    assert board["series"]["points"][-1] == board["total"]["answered"] < expected_total(incident)["answered"]
    # The leaf and the separate plant are their own boards.
    assert_numbers(board_view(board_source(incident), tree.east.id), incident, {tree.east.id})
    assert_numbers(board_view(board_source(incident), tree.plant.id), incident, {tree.plant.id})


def test_snapshot_and_rest_board_agree_with_the_counts(crowd: Crowd, crisis: User, tree: Tree) -> None:
    incident = crowd.incident
    client = signed_in(crisis)
    response = client.get(f"/acme/api/safety/incidents/{incident.id}/board/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["stream"] == f"board.{incident.id}"
    assert_numbers(body["board"], incident, None)
    assert body["board"]["instructions"] == []
    snapshot = board_snapshot(incident, None)
    for key in ("incident", "scope", "total", "departments", "attention", "milestones", "frozen", "instructions"):
        assert body["board"][key] == snapshot[key], key

    sub = client.get(f"/acme/api/safety/incidents/{incident.id}/board/?department={tree.sales.id}")
    assert sub.status_code == 200, sub.content
    assert sub.json()["stream"] == f"board.{incident.id}-{tree.sales.id}"
    assert_numbers(sub.json()["board"], incident, {tree.sales.id, tree.east.id})


def test_attention_is_serious_first_then_help_newest_first_and_at_most_fifty(
    org: Organization, crisis: User, incident: Incident, tree: Tree
) -> None:
    people = [safety_person(org, f"p{i}", department=tree.plant if i % 2 else tree.east) for i in range(60)]
    send(incident, crisis)
    for i, person in enumerate(people):
        if i % 3 == 0:
            answer(incident, person, "serious", comment=f"重傷{i}")
        else:
            answer(incident, person, "minor", help="yes", comment=f"支援{i}")
    # Known, distinct answer times, not in the order of the rows: the list must sort by time.
    base = timezone.now() - timedelta(minutes=30)
    for i, person in enumerate(people):
        Recipient.objects.filter(incident=incident, person=person).update(
            answered_at=base + timedelta(seconds=(i * 37) % 60 * 10)
        )
    board = board_view(board_source(incident), None)
    attention = board["attention"]
    assert len(attention) == ATTENTION_LIMIT == 50 and board["total"]["attention"] == 60
    statuses = [a["status"] for a in attention]
    assert statuses == ["serious"] * 20 + ["minor"] * 30
    times = [datetime.fromisoformat(a["answered_at"]) for a in attention]
    assert times[:20] == sorted(times[:20], reverse=True) and times[20:] == sorted(times[20:], reverse=True)
    assert all(a["needs_help"] for a in attention[20:])
    assert all(a["comment"] in (f"重傷{i}" for i in range(0, 60, 3)) for a in attention[:20])
    assert_numbers(board, incident, None)


def test_a_department_board_finds_its_attention_however_many_newer_ones_elsewhere(
    org: Organization, crisis: User, incident: Incident, tree: Tree
) -> None:
    """Each department's first ATTENTION_LIMIT are read, not the incident's newest: a quiet section's serious
    injury stays on its board (and serious ones stay above help on the whole board) when the plant fills up."""
    east = [safety_person(org, f"e{i}", department=tree.east) for i in range(2)]
    plant = [safety_person(org, f"p{i}", department=tree.plant) for i in range(ATTENTION_LIMIT + 5)]
    send(incident, crisis)
    answer(incident, east[0], "serious", comment="東: 骨折")
    answer(incident, east[1], "safe", help="yes")
    for person in plant:
        answer(incident, person, "minor", help="yes")
    base = timezone.now() - timedelta(minutes=30)
    Recipient.objects.filter(incident=incident, person__in=east).update(answered_at=base)
    source = board_source(incident)
    sales = board_view(source, tree.sales.id)
    assert [a["id"] for a in sales["attention"]] == [east[0].id, east[1].id]
    assert sales["total"]["attention"] == 2
    whole = board_view(source, None)["attention"]
    assert len(whole) == ATTENTION_LIMIT and whole[0]["id"] == east[0].id
    assert east[1].id not in {a["id"] for a in whole}  # older than fifty newer requests for help


def test_the_numbers_of_every_board_are_read_in_five_queries(crowd: Crowd, django_assert_num_queries: Any) -> None:
    """Departments, counts, first-answer times, the attention rows and the people nobody could reach, whatever
    the number of people or boards."""
    with django_assert_num_queries(5):
        source = board_source(crowd.incident)
    with django_assert_num_queries(0):
        for department_id in (None, *[d for d in crowd.by_department if d is not None]):
            board_view(source, department_id)


def test_series_and_milestones_use_the_first_answer_times(crowd: Crowd, crisis: User, tree: Tree) -> None:
    incident = crowd.incident
    services.incident_complete(incident=incident, actor=crisis)
    t0 = (timezone.now() - timedelta(hours=3)).replace(microsecond=0)
    answered = list(Recipient.objects.filter(incident=incident).exclude(status="").order_by("id"))
    # Distinct seconds after opening, in an order unrelated to the rows' (1117 and 3571 are coprime).
    offsets = {r.id: 5 + (i * 1117) % 3571 for i, r in enumerate(answered)}
    for row_id, offset in offsets.items():
        Recipient.objects.filter(id=row_id).update(first_answered_at=t0 + timedelta(seconds=offset))
    Incident.objects.filter(id=incident.id).update(opened_at=t0, completed_at=t0 + timedelta(seconds=3600))
    incident.refresh_from_db()

    board = board_view(board_source(incident), None)
    series = board["series"]
    assert datetime.fromisoformat(series["start"]) == t0
    assert series["width"] == 30  # an hour in at most 120 points of whole tens of seconds
    expected_points = [sum(1 for o in offsets.values() if o < (i + 1) * 30) for i in range(120)]
    assert series["points"] == expected_points
    assert series["points"][-1] == len(answered) == board["total"]["answered"]

    total = Recipient.objects.filter(incident=incident).count()
    ordered = sorted(offsets.values())
    expected: list[dict[str, Any]] = []
    for percent in (25, 50, 75):
        k = math.ceil(total * percent / 100)
        if k <= len(ordered):
            seconds = ordered[k - 1]
            expected.append({"percent": percent, "seconds": seconds, "at": t0 + timedelta(seconds=seconds)})
        else:
            expected.append({"percent": percent, "seconds": None, "at": None})
    assert expected[0]["seconds"] is not None and expected[2]["seconds"] is not None
    got = [
        {**m, "at": datetime.fromisoformat(m["at"]) if m["at"] else None}  # compare instants, not spellings
        for m in board["milestones"]
    ]
    assert got == expected

    # A subtree's milestones count its own people.
    sales = board_view(board_source(incident), tree.sales.id)
    scope_rows = [r.id for r in answered if r.person.department_id in {tree.sales.id, tree.east.id}]
    sub_total = Recipient.objects.filter(incident=incident, person__department_id__in=[tree.sales.id, tree.east.id])
    k = math.ceil(sub_total.count() * 50 / 100)
    assert sales["milestones"][1]["seconds"] == sorted(offsets[i] for i in scope_rows)[k - 1]
    assert sales["series"]["points"][-1] == len(scope_rows)

    # Completed: frozen, and time passing changes nothing.
    assert board["frozen"] and not board["incident"]["is_open"]
    assert board["incident"]["status"] == IncidentStatus.COMPLETED
    assert datetime.fromisoformat(board["incident"]["completed_at"]) == t0 + timedelta(seconds=3600)
    later = board_view(board_source(incident, now=timezone.now() + timedelta(hours=5)), None)
    assert later == board


def test_milestones_not_reached_are_empty(org: Organization, crisis: User, incident: Incident, tree: Tree) -> None:
    people = [safety_person(org, f"m{i}", department=tree.hq) for i in range(8)]
    send(incident, crisis)
    for person in people[:3]:  # 3 of 8: past 25 % (k = 2), short of 50 % (k = 4)
        answer(incident, person, "safe")
    incident.refresh_from_db()
    assert incident.opened_at is not None
    board = board_view(board_source(incident), None)
    firsts = [
        t
        for t in Recipient.objects.filter(incident=incident, first_answered_at__isnull=False)
        .order_by("first_answered_at")
        .values_list("first_answered_at", flat=True)
        if t is not None
    ]
    m25, m50, m75 = board["milestones"]
    assert m25["percent"] == 25 and datetime.fromisoformat(m25["at"]) == firsts[1]
    assert m25["seconds"] == max(0, round((firsts[1] - incident.opened_at).total_seconds()))
    assert (m50["seconds"], m50["at"], m75["seconds"], m75["at"]) == (None, None, None, None)
    assert board["series"]["width"] == 10 and board["series"]["points"][-1] == 3


def test_a_form_without_the_safety_question_counts_answers_as_answered(
    org: Organization, crisis: User, tree: Tree
) -> None:
    form = [
        {
            "key": "work",
            "kind": "single",
            "label": "出社できますか",
            "label_en": "Can you come to work?",
            "required": True,
            "choices": [
                {"key": "can", "label": "可", "label_en": "Yes"},
                {"key": "cannot", "label": "不可", "label_en": "No"},
            ],
        },
        {
            "key": "help",
            "kind": "single",
            "label": "救助・支援が必要ですか",
            "label_en": "Do you need help?",
            "required": False,
            "choices": [
                {"key": "yes", "label": "はい", "label_en": "Yes"},
                {"key": "no", "label": "いいえ", "label_en": "No"},
            ],
        },
    ]
    incident = incident_make(org, crisis, questions=form)
    people = [safety_person(org, f"c{i}", department=tree.plant) for i in range(5)]
    send(incident, crisis)
    for person, values in zip(
        people, ({"work": "can"}, {"work": "cannot", "help": "yes"}, {"work": "can"}), strict=False
    ):
        services.answer_submit(incident_id=incident.id, person=person, values=values, source="app")
    board = board_view(board_source(incident), None)
    assert not board["incident"]["has_safety"]
    assert board["total"]["counts"] == {"safe": 0, "minor": 0, "serious": 0, "answered": 3, "none": 2}
    assert board["total"]["answered"] == 3 and board["total"]["rate"] == 0.6
    assert board["total"]["needs_help"] == 1 and [a["id"] for a in board["attention"]] == [people[1].id]
    assert board["attention"][0]["status"] == "answered"
    assert board["series"]["points"][-1] == 3
    assert_numbers(board, incident, None)


def test_a_drill_says_so_and_an_empty_board_is_zeros(org: Organization, crisis: User, tree: Tree) -> None:
    drill = incident_make(org, crisis, title="避難訓練", is_drill=True)
    board = board_view(board_source(drill), None)
    assert board["incident"]["is_drill"] and board["incident"]["status"] == IncidentStatus.DRAFT
    assert board["total"] == {
        "total": 0,
        "answered": 0,
        "rate": 0.0,
        "counts": dict.fromkeys(STATUSES, 0),
        "needs_help": 0,
        "attention": 0,
    }
    assert board["departments"] == [] and board["attention"] == []
    assert [m["seconds"] for m in board["milestones"]] == [None, None, None]
    safety_person(org, "drill-1", department=tree.hq)
    send(drill, crisis)
    drill.refresh_from_db()
    board = board_view(board_source(drill), None)
    assert board["incident"]["is_drill"] and board["incident"]["is_open"]
    assert board["total"]["total"] == 1 and board["total"]["counts"]["none"] == 1


# --- The ticker's frames ----------------------------------------------------------------------------------------


def _fresh_start(incident: Incident) -> None:
    """Open the incident now, so its answer-rate series keeps one interval for the seconds a test takes."""
    Incident.objects.filter(id=incident.id).update(opened_at=timezone.now())
    incident.refresh_from_db()


def _seq(key: str) -> int:
    return Stream.objects.get(key=key).last_seq


def test_tick_sends_changed_boards_only_numbered_on_the_stream_counter(crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    _fresh_start(incident)
    whole = f"board.{incident.id}"
    sales = f"board.{incident.id}-{tree.sales.id}"
    plant = f"board.{incident.id}-{tree.plant.id}"
    other = f"board.{incident.id}0"  # another incident's board whose id starts with the same digits

    # Nobody has opened a board: nothing to tick, and no counter is made.
    assert board_tick(str(incident.id), {}) == []
    assert not Stream.objects.filter(key__startswith="board.").exists()

    Stream.objects.create(key=whole, last_seq=0)
    Stream.objects.create(key=sales, last_seq=7)
    Stream.objects.create(key=plant, last_seq=2)
    Stream.objects.create(key=other, last_seq=4)
    # A department board is read only while some process's sockets follow it (its ticker marks it).
    assert [f.stream for f in board_tick(str(incident.id), {})] == [whole]
    assert (_seq(whole), _seq(sales), _seq(plant)) == (1, 7, 2)
    Stream.objects.filter(key=whole).update(last_seq=0)
    board_follow([sales, plant, other], 5)
    frames = board_tick(str(incident.id), {})
    assert {f.stream: f.seq for f in frames} == {whole: 1, sales: 8, plant: 3}
    assert (_seq(whole), _seq(sales), _seq(plant), _seq(other)) == (1, 8, 3, 4)
    source = board_source(incident)
    departments = {whole: None, sales: tree.sales.id, plant: tree.plant.id}
    for frame in frames:
        department = departments[frame.stream]
        wire = json.loads(frame.text)
        assert set(wire) == {"type", "event", "stream", "seq", "data"}
        assert (wire["type"], wire["event"], wire["stream"], wire["seq"]) == (
            "event",
            "board.tally",
            frame.stream,
            frame.seq,
        )
        assert wire["data"] == board_view(source, department)
        assert "instructions" not in wire["data"]
    sent = {f.stream: f.digest for f in frames}

    # Nothing changed: nothing sent, no number used.
    assert board_tick(str(incident.id), sent) == []
    assert (_seq(whole), _seq(sales), _seq(plant)) == (1, 8, 3)

    # An answer at the plant changes the whole board and the plant's, not the sales subtree's.
    plant_person = crowd.people(tree.plant.id)[0]
    answer(incident, plant_person, "minor", help="yes")
    frames = board_tick(str(incident.id), sent)
    assert {f.stream: f.seq for f in frames} == {whole: 2, plant: 4}
    sent.update({f.stream: f.digest for f in frames})
    plant_frame = json.loads(next(f.text for f in frames if f.stream == plant))
    assert plant_frame["data"]["total"] == expected_total(incident, {tree.plant.id})

    # An answer in the east section (under sales) changes the whole board and the sales subtree's.
    east_person = crowd.people(tree.east.id)[3]  # had not answered
    answer(incident, east_person, "safe")
    frames = board_tick(str(incident.id), sent)
    assert {f.stream: f.seq for f in frames} == {whole: 3, sales: 9}
    sales_frame = json.loads(next(f.text for f in frames if f.stream == sales))
    assert sales_frame["data"]["total"] == expected_total(incident, {tree.sales.id, tree.east.id})
    assert _seq(other) == 4


def test_tick_skips_a_board_of_a_department_that_no_longer_exists(org: Organization, crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    _fresh_start(incident)
    gone = factories.department(org, "GONE", tree.plant)
    whole, gone_key = f"board.{incident.id}", f"board.{incident.id}-{gone.id}"
    Stream.objects.create(key=whole)
    Stream.objects.create(key=gone_key, last_seq=5)
    board_follow([gone_key], 5)
    assert {f.stream for f in board_tick(str(incident.id), {})} == {whole, gone_key}
    gone.delete()
    frames = board_tick(str(incident.id), {})
    assert [f.stream for f in frames] == [whole]
    assert _seq(gone_key) == 6  # numbered once, while it existed; skipped since


def test_tick_ignores_a_counter_whose_key_is_no_board(crowd: Crowd) -> None:
    incident = crowd.incident
    _fresh_start(incident)
    whole, junk = f"board.{incident.id}", f"board.{incident.id}-junk"
    Stream.objects.create(key=whole)
    Stream.objects.create(key=junk, last_seq=2)
    board_follow([junk], 5)
    assert [f.stream for f in board_tick(str(incident.id), {})] == [whole]
    assert _seq(junk) == 2


def test_tick_of_an_incident_that_is_gone_sends_nothing(crowd: Crowd) -> None:
    Stream.objects.create(key="board.987654321")
    assert board_tick("987654321", {}) == []
    assert _seq("board.987654321") == 0


def test_an_instruction_and_a_tally_share_one_stream_counter(crowd: Crowd, crisis: User, tree: Tree) -> None:
    incident = crowd.incident
    _fresh_start(incident)
    sales = f"board.{incident.id}-{tree.sales.id}"
    Stream.objects.create(key=sales, last_seq=3)
    board_follow([sales], 5)
    services.instruction_post(incident=incident, actor=crisis, body="3階の会議室に集合")
    assert _seq(sales) == 4
    frames = board_tick(str(incident.id), {})
    assert {f.stream: f.seq for f in frames}[sales] == 5


# --- The dirty mark ------------------------------------------------------------------------------------------------


def test_touch_marks_and_take_clears() -> None:
    assert not board_take_dirty("41")
    board_touch(41)
    board_touch(41)
    assert not board_take_dirty("42")
    assert board_take_dirty("41")
    assert not board_take_dirty("41")


def test_an_answer_over_the_api_marks_the_board_after_commit(
    crowd: Crowd, tree: Tree, django_capture_on_commit_callbacks: Any
) -> None:
    incident = crowd.incident
    person = crowd.people(tree.east.id)[3]  # had not answered
    client = signed_in(person)
    board_take_dirty(str(incident.id))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            f"/acme/api/safety/mine/{incident.id}/", {"values": {"safety": "safe"}}, content_type="application/json"
        )
        assert response.status_code == 200, response.content
    assert not board_take_dirty(str(incident.id))  # not before commit
    for callback in callbacks:
        callback()
    assert board_take_dirty(str(incident.id))


def test_proxy_answers_sends_opening_and_completion_mark_the_board(
    org: Organization, crisis: User, incident: Incident, tree: Tree, django_capture_on_commit_callbacks: Any
) -> None:
    key = str(incident.id)
    person = safety_person(org, "someone", department=tree.hq)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.incident_open(incident=incident, actor=crisis)
    assert not board_take_dirty(key)
    for callback in callbacks:
        callback()
    assert board_take_dirty(key)

    with django_capture_on_commit_callbacks(execute=True):
        send(incident, crisis, run=False)
    assert board_take_dirty(key)

    with django_capture_on_commit_callbacks(execute=True):
        services.proxy_answer_submit(
            incident=incident, actor=crisis, person=person, values={"safety": "safe"}, note="電話", scope=None
        )
    assert board_take_dirty(key)

    with django_capture_on_commit_callbacks(execute=True):
        services.incident_complete(incident=incident, actor=crisis)
    assert board_take_dirty(key)
    assert not board_take_dirty(key)


# --- Who may read which board ----------------------------------------------------------------------------------------


def _role(org: Organization, login: str, role: Role, department: Department | None = None) -> User:
    return factories.person(org, login, roles=(role,), department=department)


@pytest.mark.parametrize("role", [Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER])
def test_organisation_wide_roles_read_the_whole_board_and_any_subtree(
    org: Organization, crowd: Crowd, tree: Tree, role: Role
) -> None:
    incident = crowd.incident
    person = _role(org, "viewer", role, department=tree.east)  # their own department does not narrow it
    assert board_key_for(person, incident) == f"board.{incident.id}"
    assert board_access(person, str(incident.id)) == (incident, None)
    for department in (tree.hq, tree.sales, tree.east, tree.plant):
        assert board_access(person, f"{incident.id}-{department.id}") == (incident, department.id)
    client = signed_in(person)
    whole = client.get(f"/acme/api/safety/incidents/{incident.id}/board/")
    assert whole.status_code == 200 and whole.json()["stream"] == f"board.{incident.id}"
    assert whole.json()["board"]["total"]["total"] == 37
    plant = client.get(f"/acme/api/safety/incidents/{incident.id}/board/?department={tree.plant.id}")
    assert plant.status_code == 200 and plant.json()["board"]["total"]["total"] == 10


def test_a_department_manager_reads_only_their_subtree(org: Organization, crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    manager = _role(org, "sales-head", Role.DEPARTMENT_MANAGER, tree.sales)
    assert board_key_for(manager, incident) == f"board.{incident.id}-{tree.sales.id}"
    assert board_access(manager, f"{incident.id}-{tree.sales.id}") == (incident, tree.sales.id)
    assert board_access(manager, f"{incident.id}-{tree.east.id}") == (incident, tree.east.id)
    for key in (str(incident.id), f"{incident.id}-{tree.plant.id}", f"{incident.id}-{tree.hq.id}"):
        with pytest.raises(Http404):
            board_access(manager, key)

    client = signed_in(manager)
    url = f"/acme/api/safety/incidents/{incident.id}/board/"
    own = client.get(url)
    assert own.status_code == 200, own.content
    assert own.json()["stream"] == f"board.{incident.id}-{tree.sales.id}"
    assert_numbers(own.json()["board"], incident, {tree.sales.id, tree.east.id})
    child = client.get(f"{url}?department={tree.east.id}")
    assert child.status_code == 200 and child.json()["stream"] == f"board.{incident.id}-{tree.east.id}"
    assert_numbers(child.json()["board"], incident, {tree.east.id})
    for department in (tree.plant, tree.hq):
        assert client.get(f"{url}?department={department.id}").status_code == 404

    # A leaf's manager cannot widen to the parent; one without a department sees no board.
    east_head = _role(org, "east-head", Role.DEPARTMENT_MANAGER, tree.east)
    assert signed_in(east_head).get(f"{url}?department={tree.sales.id}").status_code == 404
    homeless = _role(org, "no-dept-head", Role.DEPARTMENT_MANAGER)
    assert signed_in(homeless).get(url).status_code == 404
    with pytest.raises(Http404):
        board_access(homeless, board_key_for(homeless, incident).split(".", 1)[1])


def test_people_without_a_results_role_get_no_board(org: Organization, crowd: Crowd, tree: Tree) -> None:
    incident = crowd.incident
    employee = crowd.people(tree.sales.id)[0]
    system_admin = _role(org, "sysadmin", Role.SYSTEM_ADMIN)
    for person in (employee, system_admin):
        for key in (str(incident.id), f"{incident.id}-{person.department_id or tree.hq.id}"):
            with pytest.raises(Http404):
                board_access(person, key)
        response = signed_in(person).get(f"/acme/api/safety/incidents/{incident.id}/board/")
        assert response.status_code == 403, response.content
    assert Client().get(f"/acme/api/safety/incidents/{incident.id}/board/").status_code in (401, 403)


def test_another_organisations_incident_and_departments_are_404(
    org: Organization, other_org: Organization, crowd: Crowd, crisis: User, tree: Tree
) -> None:
    foreign_crisis = factories.person(other_org, "globex-crisis", roles=(Role.CRISIS_MANAGER,))
    foreign = incident_make(other_org, foreign_crisis)
    foreign_department = factories.department(other_org, "G1")
    with pytest.raises(Http404):
        board_access(crisis, str(foreign.id))
    with pytest.raises(Http404):
        board_access(crisis, f"{crowd.incident.id}-{foreign_department.id}")
    with pytest.raises(Http404):
        board_access(foreign_crisis, str(crowd.incident.id))
    client = signed_in(crisis)
    assert client.get(f"/acme/api/safety/incidents/{foreign.id}/board/").status_code == 404
    url = f"/acme/api/safety/incidents/{crowd.incident.id}/board/?department={foreign_department.id}"
    assert client.get(url).status_code == 404
    # Our incident under their slug: 404 before anything is read.
    assert client.get(f"/globex/api/safety/incidents/{crowd.incident.id}/board/").status_code == 404


@pytest.mark.parametrize("key", ["", "abc", "0", "01", "-1", "1-", "1-0", "1--2", "1-2-3", "1.2", " 1", "1e3", "x-1"])
def test_malformed_board_keys_are_404(crowd: Crowd, crisis: User, key: str) -> None:
    key = key.replace("1", str(crowd.incident.id), 1) if key.startswith("1") else key
    with pytest.raises(Http404):
        board_access(crisis, key)


@pytest.mark.parametrize("department", ["abc", "-1", "1.5", "²", "0", "999999999", "99999999999999999999"])
def test_a_bad_or_unknown_department_parameter_is_404_never_a_500(crowd: Crowd, crisis: User, department: str) -> None:
    response = signed_in(crisis).get(
        f"/acme/api/safety/incidents/{crowd.incident.id}/board/", {"department": department}
    )
    assert response.status_code == 404, (department, response.status_code, response.content[:300])
    assert response.json()["code"] == "not_found"
