"""The live board page (/<slug>/safety/incidents/<id>/board/) through the Django test client.

Crisis managers, safety administrators and managers get the whole incident's stream; a department manager gets
their own subtree's (`board.<incident>-<department>`) and nothing of another subtree in the HTML; `?department`
narrows to a subtree inside the caller's scope and is 404 outside it; employees get the 403 page and people of
another organisation the 404 page. The embedded snapshot is what GET /api/safety/incidents/<id>/board/ answers;
drills carry the drill banner, a completed incident the frozen banner and the 25/50/75 % report, and only those
who may post instructions get the form."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone, translation

from consumers.models import Stream
from directory.models import Organization, Role, User
from frontend import board_views
from frontend.board_views import duration_text, rate_percent
from safety import services
from safety.board import board_snapshot
from safety.models import Incident
from tests import factories
from tests.conftest import signed_in
from tests.frontend.test_safety_pages import page_data, tr

pytestmark = pytest.mark.django_db


def _named(user: User, last: str, first: str) -> User:
    user.last_name, user.first_name = last, first
    user.save(update_fields=["last_name", "first_name"])
    return user


class Board:
    """本社 › 営業部 › 東日本営業課 and a separate 工場. One incident sent to everyone: in 東日本営業課 someone
    answered 重傷 with a comment and someone 無事; in 工場 someone asked for help and someone has not answered."""

    def __init__(self, org: Organization, *, drill: bool = False) -> None:
        self.org = org
        self.hq = factories.department(org, "HQ")
        self.sales = factories.department(org, "SALES", self.hq)
        self.east = factories.department(org, "EAST", self.sales)
        self.plant = factories.department(org, "PLANT")
        for order, (d, name) in enumerate(
            ((self.hq, "本社"), (self.sales, "営業部"), (self.east, "東日本営業課"), (self.plant, "湖南工場"))
        ):
            d.name, d.sort_order = name, order
            d.save(update_fields=["name", "sort_order"])
        self.crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,), department=self.hq)
        self.injured = _named(
            factories.person(org, "injured", department=self.east, anpi_login_id="a1"), "青木", "怜奈"
        )
        self.fine = _named(factories.person(org, "fine", department=self.east, anpi_login_id="a2"), "石川", "悠真")
        self.helpless = _named(
            factories.person(org, "helpless", department=self.plant, anpi_login_id="a3"), "上野", "穂乃果"
        )
        self.silent = _named(factories.person(org, "silent", department=self.plant, anpi_login_id="a4"), "江口", "蒼汰")
        self.incident = services.incident_create(
            organization=org,
            actor=self.crisis,
            title="関東で震度6強",
            message="安否を回答してください。",
            is_drill=drill,
        )
        services.dispatch_create(incident=self.incident, actor=self.crisis, target={"mode": "everyone"})
        self.answer(self.injured, "serious", comment="足を骨折しました")
        self.answer(self.fine, "safe")
        self.answer(self.helpless, "minor", help="yes")

    def answer(self, person: User, safety: str, **values: Any) -> None:
        services.answer_submit(
            incident_id=self.incident.id, person=person, values={"safety": safety, **values}, source="app"
        )

    def person(self, *roles: Role, department: Any = None, talk: bool = False) -> User:
        return factories.person(self.org, roles=roles, department=department, talk_available=talk)

    def url(self, query: str = "") -> str:
        return f"/{self.org.slug}/safety/incidents/{self.incident.id}/board/{query}"

    def api(self, query: str = "") -> str:
        return f"/{self.org.slug}/api/safety/incidents/{self.incident.id}/board/{query}"


@pytest.fixture
def board(org: Organization) -> Board:
    return Board(org)


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The board's answer-rate series reaches up to "now": hold the clock still, so that the page and the API
    read the same board."""
    moment = timezone.now() + timedelta(minutes=1)
    monkeypatch.setattr(timezone, "now", lambda: moment)


def stream_of(html: str) -> str:
    match = re.search(r'<section id="board"[^>]*data-stream="([^"]+)"', html)
    assert match, "no #board with a stream"
    return match.group(1)


def hidden(html: str, element_id: str) -> bool:
    match = re.search(rf"<[a-z]+\b[^>]*\bid=\"{element_id}\"[^>]*>", html)
    assert match, f"no #{element_id}"
    return " hidden" in match.group(0)


def get(client: Client, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return response


# --- Who sees which board ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER])
def test_organisation_wide_roles_get_the_whole_incident_stream(board: Board, role: Role) -> None:
    response = get(signed_in(board.person(role)), board.url())
    html = response.content.decode()
    assert stream_of(html) == f"board.{board.incident.id}"
    assert f'data-incident="{board.incident.id}"' in html
    assert 'data-live-state="reconnecting"' in html
    # board.js follows the stream itself, from the page's seq: it is not among the streams opened with the socket.
    assert f"&quot;board.{board.incident.id}&quot;" not in html
    assert f"&quot;org.{board.org.id}&quot;" in html
    for name in ("青木 怜奈", "上野 穂乃果", "江口 蒼汰", "湖南工場", "東日本営業課"):
        assert name in html
    data = page_data(response, "board-data")
    assert data["total"]["total"] == 4
    assert data["total"]["answered"] == 3
    assert data["total"]["counts"] == {"safe": 1, "minor": 1, "serious": 1, "answered": 0, "none": 1}
    assert re.search(r'data-board="rate">75%<', html)
    assert re.search(r'data-board="answered">3<', html)
    assert re.search(r'data-board="total">4<', html)
    assert re.search(r'data-count="serious">1<', html)
    assert re.search(r'data-count="none">1<', html)


def test_serious_injuries_and_help_requests_are_listed_first(board: Board) -> None:
    html = get(signed_in(board.crisis), board.url()).content.decode()
    attention = html[html.index('id="board-attention"') : html.index('id="board-attention-empty"')]
    people = re.findall(r'<li data-person="(\d+)"', attention)
    assert people == [str(board.injured.id), str(board.helpless.id)]  # 重傷 first, then the request for help
    assert "足を骨折しました" in attention
    assert "石川 悠真" not in attention  # safe people are not at the top
    rows = re.findall(r'<li data-department="(\w+)"', html)
    assert rows == [str(board.east.id), str(board.plant.id)]


def test_department_manager_gets_their_subtree_and_nothing_else(board: Board) -> None:
    manager = board.person(Role.DEPARTMENT_MANAGER, department=board.sales)
    client = signed_in(manager)
    response = get(client, board.url())
    html = response.content.decode()
    assert stream_of(html) == f"board.{board.incident.id}-{board.sales.id}"
    assert "青木 怜奈" in html and "石川 悠真" in html
    for other in ("上野 穂乃果", "江口 蒼汰", "湖南工場", "本社"):
        assert other not in html, f"{other} leaked into a department manager's board"
    data = page_data(response, "board-data")
    assert data["scope"] == {"department_id": board.sales.id, "name": "営業部"}
    assert data["total"]["total"] == 2
    assert [p["id"] for p in data["attention"]] == [board.injured.id]
    # Narrower inside the scope is fine; the whole incident, another subtree or nonsense is not.
    narrow = get(client, board.url(f"?department={board.east.id}")).content.decode()
    assert stream_of(narrow) == f"board.{board.incident.id}-{board.east.id}"
    for query in (
        f"?department={board.plant.id}",
        f"?department={board.hq.id}",
        "?department=abc",
        "?department=-1",
        "?department=0",
        "?department=%C2%B2",  # "²": a digit to str.isdigit(), not to int()
        "?department=" + "9" * 5000,  # more digits than int() reads
    ):
        assert client.get(board.url(query)).status_code == 404, query[:40]


@pytest.mark.parametrize("query", ["?department=0", "?department=00", "?department=" + "1" * 19, "?department=1.0"])
def test_a_department_that_names_none_is_404_as_on_the_api(board: Board, query: str) -> None:
    """?department=0 is not "no department given" (the caller's default board): the API says 404 and so does the
    page. An empty ?department= is the default board on both."""
    client = signed_in(board.crisis)
    assert client.get(board.api(query)).status_code == 404
    assert client.get(board.url(query)).status_code == 404
    assert stream_of(get(client, board.url("?department=")).content.decode()) == f"board.{board.incident.id}"
    assert client.get(board.api("?department=")).json()["stream"] == f"board.{board.incident.id}"


def test_full_scope_viewer_can_narrow_to_a_department(board: Board) -> None:
    client = signed_in(board.crisis)
    response = get(client, board.url(f"?department={board.plant.id}"))
    html = response.content.decode()
    assert stream_of(html) == f"board.{board.incident.id}-{board.plant.id}"
    assert "上野 穂乃果" in html and "青木 怜奈" not in html
    assert page_data(response, "board-page")["scope_department"] == board.plant.id
    other = factories.department(factories.organization(), "X")
    assert client.get(board.url(f"?department={other.id}")).status_code == 404


def test_employees_get_403(board: Board) -> None:
    response = signed_in(board.fine).get(board.url())
    assert response.status_code == 403


def test_department_manager_without_a_department_gets_403(board: Board) -> None:
    response = signed_in(board.person(Role.DEPARTMENT_MANAGER)).get(board.url())
    assert response.status_code == 403


def test_another_organisation_gets_404(board: Board, other_org: Organization) -> None:
    outsider = factories.person(other_org, "outsider", roles=(Role.CRISIS_MANAGER,))
    client = signed_in(outsider)
    assert client.get(board.url()).status_code == 404
    # Their own organisation's address with this organisation's incident: not theirs either.
    assert client.get(f"/{other_org.slug}/safety/incidents/{board.incident.id}/board/").status_code == 404


def test_signed_out_people_are_sent_to_sign_in(board: Board) -> None:
    response = Client().get(board.url())
    assert response.status_code == 302
    assert response["Location"].startswith(f"/{board.org.slug}/?next=")


# --- The embedded snapshot is the API's --------------------------------------------------------------------


@pytest.mark.usefixtures("fixed_now")
@pytest.mark.parametrize("who", ["crisis", "department_manager"])
def test_embedded_snapshot_equals_the_api(board: Board, who: str) -> None:
    person = board.crisis if who == "crisis" else board.person(Role.DEPARTMENT_MANAGER, department=board.sales)
    services.instruction_post(incident=board.incident, actor=board.crisis, body="北側の駐車場に集合してください。")
    client = signed_in(person)
    page = get(client, board.url())
    api = client.get(board.api()).json()
    assert page_data(page, "board-data") == api["board"]
    assert stream_of(page.content.decode()) == api["stream"]
    assert api["board"]["instructions"][0]["body"] == "北側の駐車場に集合してください。"


def seq_of(html: str) -> int:
    match = re.search(r'<section id="board"[^>]*data-seq="(\d+)"', html)
    assert match, "no #board with a seq"
    return int(match.group(1))


@pytest.mark.parametrize("who", ["crisis", "department_manager"])
def test_the_page_carries_the_seq_its_snapshot_was_read_at(board: Board, who: str) -> None:
    """board.js subscribes from this seq, so a board that has not moved answers "subscribed" and nothing more:
    it must be the stream's counter as it stood when the snapshot was read (the row is created, as subscribing
    would, and read under its lock)."""
    person = board.crisis if who == "crisis" else board.person(Role.DEPARTMENT_MANAGER, department=board.sales)
    client = signed_in(person)
    html = get(client, board.url()).content.decode()
    key = stream_of(html)
    assert Stream.objects.get(key=key).last_seq == 0
    assert seq_of(html) == 0
    Stream.objects.filter(key=key).update(last_seq=41)
    assert seq_of(get(client, board.url()).content.decode()) == 41


@pytest.mark.django_db(transaction=True)
def test_the_seq_is_read_with_the_counter_locked(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the snapshot is read the stream's row is locked (SELECT … FOR UPDATE) in the transaction that read
    the seq, as the socket's snapshot does: a ticker numbering a frame waits, so the seq shown is never older than
    the numbers. (A transactional test: outside the view's own transaction there is none.)"""
    seen: list[bool] = []

    def watching(incident: Incident, department_id: int | None) -> Any:
        seen.append(connection.in_atomic_block)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE l.pid = pg_backend_pid() AND c.relname = %s AND l.mode = 'RowShareLock'",
                [Stream._meta.db_table],
            )
            seen.append(cursor.fetchone()[0] > 0)
        return board_snapshot(incident, department_id)

    monkeypatch.setattr(board_views, "board_snapshot", watching)
    get(signed_in(board.crisis), board.url())
    assert seen == [True, True]


@pytest.mark.usefixtures("fixed_now")
def test_embedded_people_page_equals_the_results_api(board: Board) -> None:
    client = signed_in(board.crisis)
    page = page_data(get(client, board.url()), "board-page")
    api = client.get(f"/{board.org.slug}/api/safety/incidents/{board.incident.id}/results/?limit=50").json()
    assert page["people"] == {"total": api["total"], "results": api["results"]}
    assert page["stream"] == f"board.{board.incident.id}"
    assert page["can_post"] is True


# --- Drill, completion, instructions -----------------------------------------------------------------------


def test_drill_board_carries_the_drill_banner(org: Organization) -> None:
    drill = Board(org, drill=True)
    html = get(signed_in(drill.crisis), drill.url()).content.decode()
    assert 'class="drill-banner' in html
    with translation.override("ja"):
        assert translation.pgettext("board banner", "DRILL") in html


def test_real_incident_has_no_drill_banner(board: Board) -> None:
    html = get(signed_in(board.crisis), board.url()).content.decode()
    assert "drill-banner" not in html


def test_open_board_is_live_and_not_frozen(board: Board) -> None:
    html = get(signed_in(board.crisis), board.url()).content.decode()
    assert hidden(html, "board-frozen")
    assert hidden(html, "board-report")
    assert not hidden(html, "instruction-form")
    milestones = html[html.index('id="board-milestones"') : html.index("</ul>", html.index('id="board-milestones"'))]
    # 3 of 4 answered: 25, 50 and 75 % are reached already, and the times are shown while live.
    assert milestones.count('class="reached"') == 3


def test_completed_incident_shows_final_numbers_and_the_report(board: Board) -> None:
    Incident.objects.filter(id=board.incident.id).update(opened_at=timezone.now() - timedelta(minutes=20))
    board.incident.refresh_from_db()
    services.incident_complete(incident=board.incident, actor=board.crisis)
    response = get(signed_in(board.crisis), board.url())
    html = response.content.decode()
    data = page_data(response, "board-data")
    assert data["frozen"] is True
    assert not hidden(html, "board-frozen")
    assert tr("ja", "Completed — final numbers") in html
    assert not hidden(html, "board-report")
    report = html[html.index('id="board-report"') : html.index("</section>", html.index('id="board-report"'))]
    with translation.override("ja"):
        for milestone in data["milestones"]:
            assert milestone["seconds"] is not None
            assert duration_text(milestone["seconds"]) in report
            assert tr("ja", "Time to %(percent)s%% answered") % {"percent": milestone["percent"]} in report
        assert duration_text(20 * 60) in report  # open for 20 minutes
    assert "<b>75%</b>" in report  # the total answer rate
    # The form is gone: nothing can be posted to a completed incident.
    assert hidden(html, "instruction-form")


def test_unreached_milestones_say_so_after_completion(board: Board) -> None:
    # Eight more people asked: 3 of 12 answered reaches 25 %, never 50 or 75 %.
    for n in range(8):
        factories.person(board.org, anpi_login_id=f"x{n}")
    services.dispatch_create(incident=board.incident, actor=board.crisis, target={"mode": "everyone"})
    services.incident_complete(incident=board.incident, actor=board.crisis)
    response = get(signed_in(board.crisis), board.url())
    data = page_data(response, "board-data")
    assert data["total"]["total"] == 12
    assert [m["seconds"] is not None for m in data["milestones"]] == [True, False, False]
    html = response.content.decode()
    report = html[html.index('id="board-report"') : html.index("</section>", html.index('id="board-report"'))]
    assert report.count(tr("ja", "not reached")) == 2


@pytest.mark.parametrize(
    ("role", "may_post"),
    [(Role.CRISIS_MANAGER, True), (Role.ADMIN_ANPI, True), (Role.MANAGER, False), (Role.DEPARTMENT_MANAGER, False)],
)
def test_instruction_form_only_for_people_who_manage_incidents(board: Board, role: Role, may_post: bool) -> None:
    person = board.person(role, department=board.sales)
    html = get(signed_in(person), board.url()).content.decode()
    assert ('id="instruction-form"' in html) is may_post
    assert ('<textarea id="instruction-body" name="body"' in html) is may_post
    assert 'id="board-instructions"' in html


def test_instructions_are_listed_newest_first(board: Board) -> None:
    first = services.instruction_post(incident=board.incident, actor=board.crisis, body="第一報：建物の外へ")
    second = services.instruction_post(incident=board.incident, actor=board.crisis, body="第二報：北側駐車場に集合")
    html = get(signed_in(board.person(Role.MANAGER)), board.url()).content.decode()
    assert re.findall(r'data-instruction="(\d+)"', html) == [str(second.id), str(first.id)]
    assert hidden(html, "board-instructions-empty")


def test_instruction_form_is_disabled_before_the_incident_opens(org: Organization) -> None:
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    draft = services.incident_create(organization=org, actor=crisis, title="訓練前", message="準備中")
    html = get(signed_in(crisis), f"/{org.slug}/safety/incidents/{draft.id}/board/").content.decode()
    assert re.search(r'<textarea id="instruction-body"[^>]*disabled', html, re.S)
    assert not hidden(html, "instruction-closed")


# --- The instruction room ------------------------------------------------------------------------------------


def test_room_button_for_managers_who_use_talk(board: Board) -> None:
    talker = board.person(Role.CRISIS_MANAGER, talk=True)
    html = get(signed_in(talker), board.url()).content.decode()
    assert 'id="board-room-create"' in html and 'id="room-dialog"' in html
    # Without talk the room cannot be opened: the board says why instead of offering a button that fails.
    html = get(signed_in(board.crisis), board.url()).content.decode()
    assert 'id="board-room-create"' not in html
    assert tr("ja", "Opening the instruction room needs talk: ask an administrator to turn talk on for you.") in html
    # A manager only reads.
    html = get(signed_in(board.person(Role.MANAGER, talk=True)), board.url()).content.decode()
    assert 'id="board-room-create"' not in html and 'id="room-dialog"' not in html


def test_room_link_for_members(board: Board) -> None:
    talker = board.person(Role.CRISIS_MANAGER, talk=True)
    room = services.instruction_room_open(incident=board.incident, actor=talker, member_ids=[])
    html = get(signed_in(talker), board.url()).content.decode()
    assert f'href="/{board.org.slug}/talk/{room.id}/"' in html
    other = board.person(Role.ADMIN_ANPI, talk=True)
    html = get(signed_in(other), board.url()).content.decode()
    assert f"/talk/{room.id}/" not in html
    assert 'id="board-room-join"' in html


# --- Links and words ------------------------------------------------------------------------------------------


def test_incident_page_and_list_link_to_the_board(board: Board) -> None:
    client = signed_in(board.crisis)
    detail = get(client, f"/{board.org.slug}/safety/incidents/{board.incident.id}/").content.decode()
    assert f'href="{board.url()}"' in detail
    assert re.search(r'class="button board-link primary"[^>]*href="' + re.escape(board.url()), detail)
    listing = get(client, f"/{board.org.slug}/safety/incidents/").content.decode()
    assert f'href="{board.url()}"' in listing
    html = get(client, board.url()).content.decode()
    assert f'href="/{board.org.slug}/safety/incidents/{board.incident.id}/"' in html


def test_board_in_english(board: Board) -> None:
    person = factories.person(board.org, roles=(Role.CRISIS_MANAGER,), language="en")
    html = get(signed_in(person), board.url()).content.decode()
    assert "Serious injuries and requests for help" in html
    assert "Answer rate over time" in html


@pytest.mark.parametrize(
    ("answered", "total", "percent"),
    [(0, 0, 0), (3, 4, 75), (1, 3, 33), (2, 3, 67), (1, 8, 13), (199, 200, 99), (5, 5, 100)],
)
def test_rate_percent(answered: int, total: int, percent: int) -> None:
    assert rate_percent(answered, total) == percent


@pytest.mark.parametrize(("seconds", "text"), [(750, "12 min 30 s"), (45, "45 s"), (3900, "1 h 5 min"), (0, "0 s")])
def test_duration_text(seconds: int, text: str) -> None:
    with translation.override("en"):
        assert duration_text(seconds) == text
