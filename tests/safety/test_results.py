"""Results: the tally per department (merged across sends), the result list and its filters, a department
manager's scope, the CSV export, the directory badges, and the query counts of the selectors."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import translation
from django.utils.translation import gettext

from directory.importer import user_search_text
from directory.models import Role, User
from directory.selectors import current_safety_answers
from safety import selectors, services
from safety.models import Incident, Recipient
from safety.selectors import ResultFilter
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import Tree, answer, incident_make, safety_person, send

pytestmark = pytest.mark.django_db


@dataclass
class Board:
    """An incident sent to seven people, five of whom answered."""

    incident: Incident
    people: dict[str, User]


@pytest.fixture
def board(org, crisis, incident, tree: Tree) -> Board:
    people = {
        "hq": safety_person(org, "hq", department=tree.hq),
        "sales": safety_person(org, "sales", department=tree.sales),
        "east1": safety_person(org, "east1", department=tree.east),
        "east2": safety_person(org, "east2", department=tree.east),
        "plant1": safety_person(org, "plant1", department=tree.plant),
        "plant2": safety_person(org, "plant2", department=tree.plant),
        "nowhere": safety_person(org, "nowhere"),
    }
    yamada = people["east2"]
    yamada.last_name, yamada.last_name_kana = "山田", "ヤマダ"
    yamada.search_text = user_search_text(yamada)
    yamada.save()
    send(incident, crisis)
    answer(incident, people["hq"], "safe")
    answer(incident, people["sales"], "minor", help="yes")
    answer(incident, people["east1"], "serious", help="yes")
    answer(incident, people["plant1"], "safe")
    answer(incident, people["nowhere"], "safe")
    return Board(incident, people)


def counts(safe: int = 0, minor: int = 0, serious: int = 0, answered: int = 0, none: int = 0) -> dict[str, int]:
    return {"safe": safe, "minor": minor, "serious": serious, "answered": answered, "none": none}


def names(rows: list[Any]) -> list[str]:
    return sorted(r.person.login_id for r in rows)


def csv_rows(response: Any) -> list[list[str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline="")))


def sales_manager(org: Any, tree: Tree) -> User:
    return factories.person(org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales)


# --- the tally --------------------------------------------------------------------------------------------


def test_tally_counts_each_answer_per_department_in_directory_order(board, tree):
    rows = selectors.tally_by_department(incident=board.incident)
    assert [(r.department_id, r.counts, r.needs_help, r.total) for r in rows] == [
        (tree.hq.id, counts(safe=1), 0, 1),
        (tree.sales.id, counts(minor=1), 1, 1),
        (tree.east.id, counts(serious=1, none=1), 1, 2),
        (tree.plant.id, counts(safe=1, none=1), 0, 2),
        (None, counts(safe=1), 0, 1),  # people without a department come last
    ]
    assert rows[0].name == tree.hq.name and rows[-1].name == ""
    overall = selectors.tally_total(rows)
    assert overall.counts == counts(safe=3, minor=1, serious=1, none=2)
    assert (overall.total, overall.answered, overall.needs_help) == (7, 5, 2)
    assert overall.rate == pytest.approx(5 / 7)


def test_resend_merges_tallies_across_sends(org, crisis, board):
    people = board.people
    before = selectors.tally_total(selectors.tally_by_department(incident=board.incident))
    send(board.incident, crisis, {"mode": "filter", "answer": "unanswered"})
    send(board.incident, crisis, {"mode": "everyone"})
    answer(board.incident, people["east2"], "safe")
    answer(board.incident, people["hq"], "minor")  # a changed answer replaces, it does not add
    assert Recipient.objects.filter(incident=board.incident).count() == 7
    after = selectors.tally_total(selectors.tally_by_department(incident=board.incident))
    assert after.total == before.total == 7
    assert after.counts == counts(safe=3, minor=2, serious=1, none=1)
    listed = board.incident.dispatches.values_list("number", "recipients")
    assert list(listed) == [(1, 7), (2, 2), (3, 7)]


def test_department_manager_tally_covers_only_their_subtree(org, board, tree):
    scope = selectors.result_scope(sales_manager(org, tree))
    assert scope == {tree.sales.id, tree.east.id}
    rows = selectors.tally_by_department(incident=board.incident, scope=scope)
    assert [r.department_id for r in rows] == [tree.sales.id, tree.east.id]
    assert selectors.tally_total(rows).total == 3


def test_a_department_manager_without_a_department_sees_nobody(org, board):
    manager = factories.person(org, "lost-manager", roles=(Role.DEPARTMENT_MANAGER,))
    assert selectors.result_scope(manager) == set()
    rows, total = selectors.result_rows(incident=board.incident, scope=set())
    assert (rows, total) == ([], 0)
    assert selectors.tally_by_department(incident=board.incident, scope=set()) == []


# --- the result list ------------------------------------------------------------------------------------


def test_result_rows_carry_the_latest_answer_and_delivery_states(board):
    rows, total = selectors.result_rows(incident=board.incident, scope=None)
    assert total == 7 and len(rows) == 7
    by_login = {r.person.login_id: r for r in rows}
    assert by_login["sales"].answer.values == {"safety": "minor", "help": "yes"}
    assert by_login["east2"].answer is None and by_login["east2"].recipient.status == ""
    assert by_login["sales"].deliveries == {"email": "answered", "inapp": "answered"}
    assert by_login["east2"].deliveries == {"email": "sent", "inapp": "sent"}
    # directory order: department sort order, then the person
    assert [r.person.login_id for r in rows][:2] == ["hq", "sales"] and rows[-1].person.login_id == "nowhere"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (ResultFilter(answer="answered"), ["east1", "hq", "nowhere", "plant1", "sales"]),
        (ResultFilter(answer="unanswered"), ["east2", "plant2"]),
        (ResultFilter(answer="needs_help"), ["east1", "sales"]),
        (ResultFilter(answer="safe"), ["hq", "nowhere", "plant1"]),
        (ResultFilter(answer="serious"), ["east1"]),
        (ResultFilter(query="やまだ"), ["east2"]),
        (ResultFilter(query="plant1"), ["plant1"]),
    ],
)
def test_result_filters(board, filters, expected):
    rows, total = selectors.result_rows(incident=board.incident, scope=None, filters=filters)
    assert names(rows) == expected and total == len(expected)


def test_result_filter_by_department_takes_its_subtree(board, tree):
    rows, _total = selectors.result_rows(
        incident=board.incident, scope=None, filters=ResultFilter(department_id=tree.sales.id)
    )
    assert names(rows) == ["east1", "east2", "sales"]
    rows, _total = selectors.result_rows(
        incident=board.incident, scope=None, filters=ResultFilter(department_id=tree.sales.id, answer="unanswered")
    )
    assert names(rows) == ["east2"]


def test_result_pages_and_the_total(board):
    first, total = selectors.result_rows(incident=board.incident, scope=None, limit=3)
    rest, _ = selectors.result_rows(incident=board.incident, scope=None, limit=3, offset=3)
    assert total == 7 and len(first) == 3 and len(rest) == 3
    assert not {r.person.id for r in first} & {r.person.id for r in rest}


def test_results_api_filters_and_scopes_a_department_manager(org, crisis_client, board, tree):
    url = f"/acme/api/safety/incidents/{board.incident.id}/results/"
    everything = crisis_client.get(url).json()
    assert everything["total"] == 7 and everything["tally"]["overall"]["total"] == 7
    unanswered = crisis_client.get(url, {"answer": "unanswered", "department": tree.hq.id}).json()
    assert [r["person"]["login_id"] for r in unanswered["results"]] == ["east2"]
    assert unanswered["results"][0]["status"] == "none" and unanswered["results"][0]["answer"] is None
    assert crisis_client.get(url, {"answer": "nonsense"}).status_code == 400
    assert crisis_client.get(url, {"department": "sales"}).status_code == 400

    manager = signed_in(sales_manager(org, tree))
    mine = manager.get(url).json()
    assert sorted(r["person"]["login_id"] for r in mine["results"]) == ["east1", "east2", "sales"]
    assert mine["total"] == 3 and mine["tally"]["overall"]["total"] == 3
    assert {d["department_id"] for d in mine["tally"]["departments"]} == {tree.sales.id, tree.east.id}
    # asking for a department outside the subtree shows nothing, not that department
    outside = manager.get(url, {"department": tree.plant.id}).json()
    assert outside["total"] == 0 and outside["results"] == []
    assert manager.get(url, {"q": "plant1"}).json()["total"] == 0
    detail = manager.get(f"/acme/api/safety/incidents/{board.incident.id}/").json()
    assert detail["tally"]["overall"]["total"] == 3
    assert sum(detail["deliveries"]["email"].values()) == 3
    plant_person = board.people["plant1"]
    history = f"/acme/api/safety/incidents/{board.incident.id}/people/{plant_person.id}/answers/"
    assert manager.get(history).status_code == 404
    assert crisis_client.get(history).status_code == 200


def test_results_api_leaves_the_tally_out_when_asked(crisis_client, board):
    """The live board refreshes its people list every few seconds and has the numbers already: ?tally=0."""
    url = f"/acme/api/safety/incidents/{board.incident.id}/results/"
    full = crisis_client.get(url).json()
    lean = crisis_client.get(url, {"tally": "0"}).json()
    assert "tally" in full and "tally" not in lean
    assert lean["results"] == full["results"] and lean["total"] == full["total"] == 7


def test_department_manager_incident_list_counts_only_their_subtree(org, board, tree):
    """BUG: the incident list's recipient and answer counts are the whole organisation's, even for a
    department manager, who may see only their subtree."""
    manager = signed_in(sales_manager(org, tree))
    [listed] = manager.get("/acme/api/safety/incidents/").json()
    assert (listed["recipients"], listed["answered"]) == (3, 2)


# --- CSV ------------------------------------------------------------------------------------------------------


def test_csv_is_excel_safe_with_history_and_location(org, crisis, crisis_client, tree):
    incident = incident_make(org, crisis, collect_location=True)
    evil = safety_person(org, "evil", department=tree.east)
    evil.last_name = '=HYPERLINK("http://evil.example/","click")'
    evil.save()
    send(incident, crisis)
    services.answer_submit(incident_id=incident.id, person=evil, values={"safety": "safe"}, source="link")
    services.proxy_answer_submit(
        incident=incident,
        actor=crisis,
        person=evil,
        values={"safety": "minor", "help": "yes", "comment": "=1+cmd|' /C calc'!A0"},
        note="電話",
        scope=None,
    )
    services.answer_submit(
        incident_id=incident.id,
        person=evil,
        values={"safety": "minor", "help": "yes", "comment": "@SUM(A1:A9)"},
        source="push",
        location={"latitude": 35.681236, "longitude": 139.767125},
    )
    response = crisis_client.get(f"/acme/api/safety/incidents/{incident.id}/results.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith(f'attachment; filename="safety-{incident.id}-')
    header, *rows = csv_rows(response)
    with translation.override(crisis.language):
        assert header[:4] == [gettext("Department code"), gettext("Department"), gettext("Login ID"), gettext("Name")]
        assert header[-6:] == [
            gettext("Answered via"),
            gettext("Entered by"),
            gettext("Latitude"),
            gettext("Longitude"),
            gettext("Map"),
            gettext("History"),
        ]
    assert header[6:11] == ["あなたの安否", "救助・支援が必要ですか", "出社できますか", "自宅の状況", "コメント"]
    [row] = rows
    cell = dict(zip(header, row, strict=True))
    assert row[3].startswith("'=HYPERLINK(")  # shown as text, never run
    assert cell["コメント"] == "'@SUM(A1:A9)"
    assert not [c for c in row if c[:1] in {"=", "+", "-", "@", "\t", "\r"}]
    assert row[2] == evil.login_id == "evil"
    assert row[-4:-1] == [
        "35.681236",
        "139.767125",
        "https://www.openstreetmap.org/?mlat=35.681236&mlon=139.767125#map=16/35.681236/139.767125",
    ]
    history = row[-1].split("; ")
    assert len(history) == 3 and crisis.display_name in history[1]
    with translation.override(crisis.language):
        assert cell[gettext("Answers")] == "3"
        assert cell["あなたの安否"] == "軽傷" and cell["救助・支援が必要ですか"] == "はい"


def test_csv_respects_filters_and_a_department_managers_scope(org, crisis_client, board, tree):
    url = f"/acme/api/safety/incidents/{board.incident.id}/results.csv"

    def logins(response: Any) -> list[str]:
        return sorted(row[2] for row in csv_rows(response)[1:])

    assert len(logins(crisis_client.get(url))) == 7
    assert logins(crisis_client.get(url, {"answer": "unanswered"})) == ["east2", "plant2"]
    assert logins(crisis_client.get(url, {"department": tree.plant.id})) == ["plant1", "plant2"]
    manager = signed_in(sales_manager(org, tree))
    assert logins(manager.get(url)) == ["east1", "east2", "sales"]
    assert logins(manager.get(url, {"department": tree.plant.id})) == []


# --- directory badges -------------------------------------------------------------------------------------


def test_directory_shows_answers_while_open_and_clears_them_on_completion(org, crisis, board, employee, admin_client):
    people = board.people
    ids = [people["hq"].id, people["east2"].id, employee.id]
    badges = current_safety_answers(organization=org, user_ids=ids)
    assert badges[people["hq"].id]["status"] == "safe" and badges[people["hq"].id]["incident_id"] == board.incident.id
    assert badges[people["east2"].id]["status"] == "none"
    assert employee.id not in badges  # not asked: no badge
    card = admin_client.get(f"/acme/api/directory/people/{people['hq'].id}/").json()
    assert card["safety_answer"]["status"] == "safe"
    page = admin_client.get(f"/acme/directory/people/{people['hq'].id}/").content.decode()
    assert "safety-safe" in page and "✓" in page
    listed = admin_client.get("/acme/api/directory/people/", {"q": "sales"}).json()["results"]
    assert [p["safety_answer"]["status"] for p in listed if p["id"] == people["sales"].id] == ["minor"]

    services.incident_complete(incident=board.incident, actor=crisis)
    assert current_safety_answers(organization=org, user_ids=ids) == {}
    assert admin_client.get(f"/acme/api/directory/people/{people['hq'].id}/").json()["safety_answer"] is None
    assert "safety-safe" not in admin_client.get(f"/acme/directory/people/{people['hq'].id}/").content.decode()


def test_a_drill_never_shows_in_the_directory(org, crisis):
    drill = incident_make(org, crisis, is_drill=True)
    person = safety_person(org, "drilled")
    send(drill, crisis)
    answer(drill, person)
    assert current_safety_answers(organization=org, user_ids=[person.id]) == {}


# --- pinned query counts ----------------------------------------------------------------------------------


def test_tally_by_department_is_one_query(board, tree, django_assert_num_queries):
    scope = {tree.sales.id, tree.east.id}
    with django_assert_num_queries(1):
        selectors.tally_by_department(incident=board.incident)
    with django_assert_num_queries(1):
        selectors.tally_by_department(incident=board.incident, scope=scope)
    with django_assert_num_queries(0):
        assert selectors.tally_by_department(incident=board.incident, scope=set()) == []


def test_result_rows_is_three_queries_for_a_page(board, tree, django_assert_num_queries):
    with django_assert_num_queries(3):
        rows, _total = selectors.result_rows(incident=board.incident, scope=None)
        for row in rows:  # everything the API and the CSV read of a row is already loaded
            _ = (row.person.department and row.person.department.name, row.answer and row.answer.entered_by)
    with django_assert_num_queries(3):
        filters = ResultFilter(answer="safe", query="hq")
        rows, _total = selectors.result_rows(incident=board.incident, scope={tree.hq.id}, filters=filters)
    assert names(rows) == ["hq"]


def test_safety_badges_are_two_queries(org, board, django_assert_num_queries):
    ids = [p.id for p in board.people.values()]
    with django_assert_num_queries(2):
        badges = selectors.safety_badges(organization_id=org.id, user_ids=ids)
    assert len(badges) == 7


def test_target_people_ids_query_counts(org, crisis, board, tree, django_assert_num_queries):
    incident = board.incident
    with django_assert_num_queries(1):
        assert len(selectors.target_people_ids(incident=incident, target={"mode": "everyone"})) == 7
    with django_assert_num_queries(1):
        target = {"mode": "filter", "answer": "unanswered", "regions": [], "roles": ["MANAGER"]}
        selectors.target_people_ids(incident=incident, target=target)
    with django_assert_num_queries(2):  # the tree once, however many departments; the people
        target = {"mode": "filter", "department_ids": [tree.sales.id, tree.plant.id], "answer": "unanswered"}
        selectors.target_people_ids(incident=incident, target=target)
    with django_assert_num_queries(2):
        target = {"mode": "filter", "department_ids": [tree.sales.id], "answer": "unanswered"}
        assert len(selectors.target_people_ids(incident=incident, target=target)) == 1


def test_results_api_refuses_numbers_that_are_no_ids(crisis_client, board):
    """ "²" passes str.isdigit() and fails int(); 5,000 digits fail int(); 20 digits overflow a bigint: never a 500."""
    url = f"/acme/api/safety/incidents/{board.incident.id}/results/"
    for raw in ("²", "١", "9" * 5000, "9" * 20):
        assert crisis_client.get(url, {"department": raw}).status_code == 400
        paged = crisis_client.get(url, {"limit": raw, "offset": raw})
        assert paged.status_code == 200 and paged.json()["total"] == 7
