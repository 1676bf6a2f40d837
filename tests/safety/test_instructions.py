"""Instructions (対策指示) over REST: who may post them, what is refused (empty, too long, a draft or completed
incident, another organisation's), the events they publish on the boards and the organisation stream, the web
push that reaches exactly the people asked (decrypted by the local push service), and the answer pages (signed
in and by link) that show them newest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from config.errors import ApplicationError
from consumers.models import OutboxEvent, Stream
from directory.models import Organization, Role, User
from safety import services
from safety.board import board_follow
from safety.models import Incident, Instruction
from safety.tokens import answer_token
from tests import factories
from tests.conftest import CapturedEvents, signed_in
from tests.pushservice import LocalPushService
from tests.safety.conftest import Tree, incident_make, pushes_by_person, safety_person, send, subscribe

pytestmark = pytest.mark.django_db


@dataclass
class Asked:
    incident: Incident
    people: list[User]  # the people the incident asked
    outsider: User  # a safety user who joined after the send


@pytest.fixture
def asked(org: Organization, crisis: User, incident: Incident, tree: Tree) -> Asked:
    people = [
        safety_person(org, "hanako", department=tree.east),
        safety_person(org, "jiro", department=tree.plant),
        safety_person(org, "saburo"),
    ]
    send(incident, crisis)
    incident.refresh_from_db()
    return Asked(incident, people, safety_person(org, "late", department=tree.east))


def url(incident: Incident) -> str:
    return f"/acme/api/safety/incidents/{incident.id}/instructions/"


def post(client: Client, incident: Incident, body: Any) -> Any:
    return client.post(url(incident), {"body": body} if body is not ... else {}, content_type="application/json")


# --- Posting and listing --------------------------------------------------------------------------------------


def test_a_crisis_manager_posts_and_everyone_with_results_reads_newest_first(
    org: Organization, asked: Asked, crisis: User, crisis_client: Client, tree: Tree
) -> None:
    incident = asked.incident
    first = post(crisis_client, incident, "  本社3階の会議室に集合してください。\r\n点呼をとります。  ")
    assert first.status_code == 201, first.content
    data = first.json()
    saved = Instruction.objects.get()
    assert saved.author == crisis and saved.incident == incident
    assert saved.body == "本社3階の会議室に集合してください。\n点呼をとります。"
    assert data == {
        "id": saved.id,
        "incident_id": incident.id,
        "body": saved.body,
        "author": crisis.display_name,
        "created_at": saved.created_at.isoformat(),
    }
    safety_admin = factories.person(org, "anpi-admin", roles=(Role.ADMIN_ANPI,))
    second = post(signed_in(safety_admin), incident, "帰宅は指示があるまで待機")
    assert second.status_code == 201, second.content
    assert second.json()["author"] == safety_admin.display_name

    readers = [crisis, factories.person(org, "manager", roles=(Role.MANAGER,))]
    readers.append(factories.person(org, "plant-head", roles=(Role.DEPARTMENT_MANAGER,), department=tree.plant))
    for reader in readers:
        listed = signed_in(reader).get(url(incident))
        assert listed.status_code == 200, listed.content
        assert [i["body"] for i in listed.json()] == ["帰宅は指示があるまで待機", saved.body]
    # The board's snapshot carries them too, newest first.
    board = crisis_client.get(f"/acme/api/safety/incidents/{incident.id}/board/").json()["board"]
    assert [i["id"] for i in board["instructions"]] == [second.json()["id"], saved.id]
    # Employees see them only on their answer page.
    assert signed_in(asked.people[0]).get(url(incident)).status_code == 403


@pytest.mark.parametrize("role", [Role.MANAGER, Role.DEPARTMENT_MANAGER, Role.SYSTEM_ADMIN, None])
def test_only_crisis_managers_and_safety_admins_may_post(
    org: Organization, asked: Asked, tree: Tree, role: Role | None
) -> None:
    person = factories.person(org, "someone", roles=(role,) if role else (), department=tree.sales)
    response = post(signed_in(person), asked.incident, "全員避難")
    assert response.status_code == 403, response.content
    assert not Instruction.objects.exists()
    assert not OutboxEvent.objects.filter(type__in=["board.instruction", "safety.instruction"]).exists()


@pytest.mark.parametrize(
    ("body", "field_message"),
    [
        (..., "必須"),  # the crisis manager reads Japanese
        ("", "空にできません"),
        ("   \n  ", "空にできません"),
        ("あ" * 2001, "2000文字"),
        (None, "null"),
        (["避難"], "string"),
    ],
)
def test_a_bad_body_is_a_clear_400_and_nothing_is_stored(
    asked: Asked, crisis_client: Client, body: Any, field_message: str
) -> None:
    response = post(crisis_client, asked.incident, body)
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["code"] == "invalid" and "body" in error["fields"]
    assert field_message in " ".join(error["fields"]["body"])
    assert not Instruction.objects.exists()
    assert not OutboxEvent.objects.filter(type__in=["board.instruction", "safety.instruction"]).exists()


def test_two_thousand_characters_are_allowed(asked: Asked, crisis_client: Client) -> None:
    response = post(crisis_client, asked.incident, "あ" * 2000)
    assert response.status_code == 201, response.content
    assert len(Instruction.objects.get().body) == 2000


def test_the_service_refuses_empty_and_overlong_bodies(asked: Asked, crisis: User) -> None:
    for body, code in (
        ("", "empty_instruction"),
        (" \r\n ", "empty_instruction"),
        ("x" * 2001, "instruction_too_long"),
    ):
        with pytest.raises(ApplicationError) as raised:
            services.instruction_post(incident=asked.incident, actor=crisis, body=body)
        assert raised.value.code == code and raised.value.status == 400 and raised.value.message
    assert not Instruction.objects.exists()


def test_a_draft_or_completed_incident_takes_no_instructions(
    org: Organization, asked: Asked, crisis: User, crisis_client: Client
) -> None:
    draft = incident_make(org, crisis, title="下書き")
    response = post(crisis_client, draft, "集合")
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "incident_not_open" and response.json()["message"]
    services.incident_complete(incident=asked.incident, actor=crisis)
    response = post(crisis_client, asked.incident, "集合")
    assert response.status_code == 409 and response.json()["code"] == "incident_not_open"
    assert not Instruction.objects.exists()
    assert not OutboxEvent.objects.filter(type__in=["board.instruction", "safety.instruction"]).exists()


def test_another_organisations_incident_is_404(
    org: Organization, other_org: Organization, asked: Asked, crisis_client: Client
) -> None:
    foreign_crisis = factories.person(other_org, "g-crisis", roles=(Role.CRISIS_MANAGER,))
    foreign = incident_make(other_org, foreign_crisis)
    safety_person(other_org, "g-worker")
    send(foreign, foreign_crisis)
    assert post(crisis_client, foreign, "集合").status_code == 404
    assert crisis_client.get(url(foreign)).status_code == 404
    foreign_client = signed_in(foreign_crisis)
    assert foreign_client.get(url(asked.incident)).status_code == 404
    assert (
        foreign_client.post(f"/acme/api/safety/incidents/{asked.incident.id}/instructions/", {"body": "x"}).status_code
        == 404
    )
    assert not Instruction.objects.exists()


# --- What a post publishes ----------------------------------------------------------------------------------------


def test_a_post_streams_to_every_board_of_the_incident_and_asks_to_push_the_people_asked(
    org: Organization,
    asked: Asked,
    crisis: User,
    crisis_client: Client,
    tree: Tree,
    capture_events: CapturedEvents,
    django_capture_on_commit_callbacks: Any,
) -> None:
    incident = asked.incident
    other = incident_make(org, crisis, title="別の災害")
    # Boards someone opened (each has a stream counter), and another incident's board.
    opened = [f"board.{incident.id}-{tree.sales.id}", f"board.{incident.id}-{tree.plant.id}"]
    for key in opened:
        Stream.objects.create(key=key, last_seq=3)
    board_follow(opened, 5)  # their sockets' ticker marks them followed
    Stream.objects.create(key=f"board.{incident.id}-{tree.east.id}", last_seq=9)  # opened once, nobody follows it
    Stream.objects.create(key=f"board.{other.id}", last_seq=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(crisis_client, incident, "津波警報: 高台へ避難")
    assert response.status_code == 201, response.content
    assert capture_events.events == []  # nothing before commit
    for callback in callbacks:
        callback()
    data = response.json()

    boards = capture_events.of_type("board.instruction")
    assert sorted(e.stream for e in boards) == sorted([f"board.{incident.id}", *opened])
    assert all(e.data == data for e in boards)
    assert {e.stream: e.seq for e in boards if e.stream in opened} == dict.fromkeys(opened, 4)
    assert Stream.objects.get(key=f"board.{other.id}").last_seq == 1
    assert Stream.objects.get(key=f"board.{incident.id}-{tree.east.id}").last_seq == 9

    [event] = capture_events.of_type("safety.instruction")
    assert event.stream == f"org.{org.id}"
    assert event.data == {"incident_id": incident.id, "id": data["id"]}
    push = event.push
    assert push["user_ids"] == sorted(p.id for p in asked.people)
    assert push["notification"] == {
        "title": f"対策指示 / Instruction: {incident.title}",
        "body": "津波警報: 高台へ避難",
        "url": f"/acme/safety/{incident.id}/",
        "tag": f"instruction-{data['id']}",
    }
    assert push["urgency"] == "high" and push["ttl"] > 0
    # Nobody is pushed by the board events themselves.
    assert all(e.push is None for e in boards)


def test_people_who_left_since_the_send_are_not_pushed(
    asked: Asked, crisis_client: Client, capture_events: CapturedEvents, django_capture_on_commit_callbacks: Any
) -> None:
    """The directory import deactivates people who left but keeps their push subscriptions."""
    gone = asked.people[0]
    User.objects.filter(id=gone.id).update(is_active=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(crisis_client, asked.incident, "社外秘: 第二工場の薬品庫が破損").status_code == 201
    [event] = capture_events.of_type("safety.instruction")
    assert event.push["user_ids"] == sorted(p.id for p in asked.people if p.id != gone.id)


@pytest.mark.parametrize("drill", [False, True])
def test_the_push_reaches_exactly_the_people_asked(
    org: Organization,
    crisis: User,
    tree: Tree,
    push_service: LocalPushService,
    django_capture_on_commit_callbacks: Any,
    drill: bool,
) -> None:
    incident = incident_make(org, crisis, title="震度6弱 本社周辺", is_drill=drill)
    asked = [safety_person(org, f"a{i}", department=tree.east if i % 2 else tree.plant) for i in range(4)]
    unsubscribed = safety_person(org, "no-browser", department=tree.hq)
    send(incident, crisis)
    # Subscribed after the send: the only pushes are the instruction's.
    late = safety_person(org, "late", department=tree.east)
    crisis_manager_browser_owner = crisis
    employee = factories.person(org, "plain-employee", department=tree.east)
    for person in [*asked, late, crisis_manager_browser_owner, employee]:
        subscribe(push_service, person)
    subscribe(push_service, asked[0])  # a second device
    with django_capture_on_commit_callbacks(execute=True):
        response = post(signed_in(crisis), incident, "各自、上長に連絡してください")
    assert response.status_code == 201, response.content
    instruction_id = response.json()["id"]

    push_service.wait_for(5)
    received = pushes_by_person(push_service)
    assert set(received) == {p.id for p in asked}
    assert unsubscribed.id not in received
    assert len(received[asked[0].id]) == 2 and all(len(received[p.id]) == 1 for p in asked[1:])
    prefix = "【訓練 DRILL】" if drill else ""
    for payloads in received.values():
        for payload in payloads:
            assert payload["title"] == f"{prefix}対策指示 / Instruction: 震度6弱 本社周辺"
            assert payload["body"] == "各自、上長に連絡してください"
            assert payload["url"] == f"/acme/safety/{incident.id}/"
            assert payload["tag"] == f"instruction-{instruction_id}"
    assert {r.urgency for r in push_service.received} == {"high"}


# --- The answer pages ---------------------------------------------------------------------------------------------


def test_answer_pages_show_the_incidents_instructions_newest_first(
    org: Organization, asked: Asked, crisis: User
) -> None:
    incident = asked.incident
    other = incident_make(org, crisis, title="別件")
    send(other, crisis)
    services.instruction_post(incident=other, actor=crisis, body="別件の指示")
    bodies = ["第1報: 待機", "第2報: 本社に集合", "第3報: 帰宅可"]
    for body in bodies:
        services.instruction_post(incident=incident, actor=crisis, body=body)
    person = asked.people[0]

    mine = signed_in(person).get(f"/acme/api/safety/mine/{incident.id}/")
    assert mine.status_code == 200, mine.content
    assert [i["body"] for i in mine.json()["instructions"]] == bodies[::-1]
    assert all(i["author"] == crisis.display_name for i in mine.json()["instructions"])

    token = answer_token(organization_id=org.id, incident_id=incident.id, person_id=person.id)
    link = Client().get(f"/acme/api/safety/answer/{token}/")
    assert link.status_code == 200, link.content
    assert [i["body"] for i in link.json()["instructions"]] == bodies[::-1]

    # Answering returns the request without its instructions: they are not even read for it.
    client = signed_in(person)
    table = Instruction._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        answered = client.post(
            f"/acme/api/safety/mine/{incident.id}/", {"values": {"safety": "safe"}}, content_type="application/json"
        )
        by_link = Client().post(
            f"/acme/api/safety/answer/{token}/", {"values": {"safety": "minor"}}, content_type="application/json"
        )
    assert answered.status_code == 200 and "instructions" not in answered.json()
    assert by_link.status_code == 200 and "instructions" not in by_link.json()
    assert not [q["sql"] for q in queries.captured_queries if table in q["sql"]]

    # Someone the incident did not ask sees no page, so no instructions.
    assert signed_in(asked.outsider).get(f"/acme/api/safety/mine/{incident.id}/").status_code == 404


def test_an_answer_page_without_instructions_has_an_empty_list(asked: Asked) -> None:
    response = signed_in(asked.people[1]).get(f"/acme/api/safety/mine/{asked.incident.id}/")
    assert response.status_code == 200 and response.json()["instructions"] == []
