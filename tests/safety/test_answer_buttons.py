"""Answer buttons in the push (無事 / 要支援) and answers that are kept exactly once.

A safety push carries the buttons its form can take, each with the signed answer API to post to and the body to
post, in the person's language; a tap answers with `quick: true` (only the questions given are checked), and the
browser's `client_key` makes a post sent twice (offline queue, two tabs, a retry) one answer. The last test
posts the buttons to a real daphne exactly as the service worker does."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connections
from django.test import Client

from consumers.webpush import _serialise_payload
from directory.models import Organization
from safety import services
from safety.models import Answer, AnswerSource, Delivery, Incident, Recipient
from safety.questions import default_questions, questions_clean, quick_answers
from safety.tokens import answer_path, answer_token, answer_token_read
from tests.safety.conftest import answer, incident_make, pushes_by_person, safety_person, send, subscribe
from tests.services import daphne, require_postgres, require_redis, subprocess_env

pytestmark = pytest.mark.django_db

DEFAULT_ACTIONS = {"safe": {"safety": "safe", "help": "no"}, "help": {"help": "yes"}}


def token_for(incident: Any, person: Any) -> str:
    return answer_token(organization_id=incident.organization_id, incident_id=incident.id, person_id=person.id)


def api(incident: Any, person: Any) -> str:
    return f"/acme/api/safety/answer/{token_for(incident, person)}/"


def post(client: Client, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, body, content_type="application/json")


def recipient(incident: Any, person: Any) -> Recipient:
    return Recipient.objects.get(incident=incident, person=person)


@pytest.fixture
def anon() -> Client:
    """A service worker's fetch: no cookies, and a CSRF check that would refuse it if one were asked."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def hanako(org):
    return safety_person(org, "hanako")


@pytest.fixture
def asked(org, crisis, incident, hanako):
    send(incident, crisis, run=False)
    return incident


def custom(*extra: dict[str, Any], keep: tuple[str, ...] = ("safety", "help")) -> list[Any]:
    """A form of the default questions named in `keep` plus `extra` ones."""
    return questions_clean([q for q in default_questions() if q["key"] in keep] + list(extra))


WORK_REQUIRED = {
    "key": "work2",
    "kind": "single",
    "label": "出社できますか",
    "required": True,
    "choices": [{"key": "can", "label": "可"}, {"key": "cannot", "label": "不可"}],
}


# --- which buttons a form offers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "actions"),
    [
        (default_questions(), DEFAULT_ACTIONS),
        (custom(keep=("safety",)), {"safe": {"safety": "safe"}, "help": {"safety": "serious"}}),
        (custom(keep=("help",)), {"help": {"help": "yes"}}),
        (custom(WORK_REQUIRED), DEFAULT_ACTIONS),
        (custom(WORK_REQUIRED, keep=()), {}),
        ([], {}),
        # A hand-made form whose safety question lacks the choices: no button that would be refused.
        ([{"key": "safety", "kind": "single", "choices": [{"key": "minor"}]}], {}),
        ([{"key": "safety", "kind": "text", "choices": []}], {}),
    ],
)
def test_the_buttons_a_form_can_take(form, actions):
    assert quick_answers(form) == actions


# --- the payload ------------------------------------------------------------------------------------------------


def test_a_safety_push_carries_buttons_receipt_and_texts_in_each_persons_language(org, crisis, incident, push_service):
    japanese = safety_person(org, "japanese", language="ja")
    english = safety_person(org, "english", language="en")
    for person in (japanese, english):
        subscribe(push_service, person)
    send(incident, crisis)
    received = pushes_by_person(push_service)
    texts = {
        "ja": ("無事", "要支援", "回答を送信しました：", "接続が戻ったら送信します", "回答できませんでした。"),
        "en": ("Safe", "Need help", "Answer sent: ", "sent when the connection is back", "could not be sent"),
    }
    for person, language in ((japanese, "ja"), (english, "en")):
        [payload] = received[person.id]
        safe_title, help_title, done, queued, failed = texts[language]
        # The token signed at send time (its timestamp may be a second older than one signed here): for this person.
        token = payload["receipt"].removeprefix("/acme/api/safety/answer/").removesuffix("/receipt/")
        link = answer_token_read(token)
        assert link is not None
        assert (link.organization_id, link.incident_id, link.person_id) == (org.id, incident.id, person.id)
        path = f"/acme/api/safety/answer/{token}/"
        assert payload["receipt"] == path + "receipt/"
        assert payload["url"] == answer_path(slug="acme", token=token) + "?via=push"
        assert payload["kind"] == "safety" and payload["tag"] == f"incident-{incident.id}"
        assert payload["requireInteraction"] is True
        assert payload["actions"] == [
            {
                "action": "safe",
                "title": safe_title,
                "post": path,
                "body": {"values": {"safety": "safe", "help": "no"}, "via": "push", "quick": True},
                "done": f"{done}{safe_title}",
            },
            {
                "action": "help",
                "title": help_title,
                "post": path,
                "body": {"values": {"help": "yes"}, "via": "push", "quick": True},
                "done": f"{done}{help_title}",
            },
        ]
        assert queued in payload["queued"] and failed in payload["failed"]
        link = answer_token_read(path.split("/")[-2])
        assert link is not None and (link.incident_id, link.person_id) == (incident.id, person.id)


def test_a_form_without_the_safety_questions_has_no_buttons(org, crisis, push_service):
    incident = incident_make(org, crisis, questions=custom(WORK_REQUIRED, keep=()))
    person = safety_person(org, "custom")
    subscribe(push_service, person)
    send(incident, crisis)
    [payload] = pushes_by_person(push_service)[person.id]
    assert payload["actions"] == [] and payload["receipt"].endswith("/receipt/")


def test_a_form_without_the_help_question_asks_for_help_as_serious(org, crisis, push_service):
    incident = incident_make(org, crisis, questions=custom(keep=("safety",)))
    person = safety_person(org, "nohelp")
    subscribe(push_service, person)
    send(incident, crisis)
    [payload] = pushes_by_person(push_service)[person.id]
    assert [(a["action"], a["body"]["values"]) for a in payload["actions"]] == [
        ("safe", {"safety": "safe"}),
        ("help", {"safety": "serious"}),
    ]


@pytest.mark.parametrize("language", ["ja", "en"])
@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("𠮷" * 200, "𠮷" * 5000),  # four bytes a character
        ('"' * 200, "\\" * 5000),  # escaped in JSON
        ("\x01" * 200, "\t" * 5000),  # control characters: six bytes each in JSON
        ("震度7の地震が発生しました。" * 20, "安否を回答してください。" * 400),
    ],
)
def test_the_worst_payload_stays_far_under_the_push_limit(language, title, message):
    """A push service only has to take 4 KB; the payload stays under 3,000 bytes of JSON whatever the title,
    the message, the organisation's address and the ids."""
    organization = Organization(id=2**31 - 1, slug="a" * 50, name="x")
    incident = Incident(
        id=2**31 - 1,
        organization=organization,
        title=title[:200],
        message=message,
        is_drill=True,
        questions=default_questions(),
    )
    payload = services._notification(incident, 2**31 - 1, language)
    size = len(_serialise_payload(payload))
    assert size < 3000, (size, payload)
    assert len(payload["actions"]) == 2


def test_an_automatic_incident_payload_in_both_languages_is_small(org, crisis):
    incident = incident_make(org, crisis)
    incident.titles = {"ja": "災害発生：" + "地" * 195, "en": "Disaster occurred: " + "x" * 181}
    for language in ("ja", "en"):
        payload = services._notification(incident, 2**31 - 1, language)
        assert payload["title"] == incident.titles[language][:200]
        assert len(_serialise_payload(payload)) < 3000


# --- quick answers (the buttons) ---------------------------------------------------------------------------------


def test_a_button_answers_a_form_with_another_required_question(org, crisis, anon):
    incident = incident_make(org, crisis, questions=custom(WORK_REQUIRED))
    person = safety_person(org, "quick")
    send(incident, crisis, run=False)
    full = post(anon, api(incident, person), {"values": {"safety": "safe", "help": "no"}})
    assert full.status_code == 400 and full.json()["code"] == "bad_answer"  # the form still needs work2
    assert not Answer.objects.exists()
    body = {"values": {"safety": "safe", "help": "no"}, "via": "push", "quick": True}
    response = post(anon, api(incident, person), body)
    assert response.status_code == 200, response.content
    saved = Answer.objects.get()
    assert saved.values == {"safety": "safe", "help": "no"} and saved.source == AnswerSource.PUSH
    assert (recipient(incident, person).status, recipient(incident, person).answer_count) == ("safe", 1)
    assert set(Delivery.objects.filter(person=person).values_list("state", flat=True)) == {"answered"}


@pytest.mark.parametrize(
    "values",
    [
        {"safety": "fine"},  # not one of the choices
        {"safety": "safe", "help": "maybe"},
        {"help": ["yes"]},
        {"nothing": "here"},  # no question of the form: nothing to answer
        {},
        "safe",
    ],
)
def test_a_quick_answer_with_a_wrong_choice_is_a_400_and_stores_nothing(asked, hanako, anon, values):
    response = post(anon, api(asked, hanako), {"values": values, "via": "push", "quick": True})
    assert response.status_code == 400, response.content
    assert response.json()["code"] in ("bad_answer", "invalid")
    assert not Answer.objects.exists()
    assert recipient(asked, hanako).answer_count == 0
    assert set(Delivery.objects.filter(person=hanako).values_list("state", flat=True)) == {"queued", "sent"}


def test_a_button_changes_only_the_questions_it_answers(asked, hanako, anon):
    answer(asked, hanako, "serious", comment="足を骨折")
    response = post(anon, api(asked, hanako), {"values": {"help": "yes"}, "via": "push", "quick": True})
    assert response.status_code == 200, response.content
    assert response.json()["answer"]["values"] == {"safety": "serious", "help": "yes", "comment": "足を骨折"}
    current = recipient(asked, hanako)
    assert (current.status, current.needs_help, current.answer_count) == ("serious", True, 2)


def test_help_button_without_an_earlier_answer_counts_as_answered_and_needing_help(asked, hanako, anon):
    assert post(anon, api(asked, hanako), {"values": {"help": "yes"}, "via": "push", "quick": True}).status_code == 200
    current = recipient(asked, hanako)
    assert (current.status, current.needs_help, current.answer.values) == ("answered", True, {"help": "yes"})


def test_quick_in_the_app_too(asked, hanako):
    from tests.conftest import signed_in

    client = signed_in(hanako)
    response = post(client, f"/acme/api/safety/mine/{asked.id}/", {"values": {"help": "yes"}, "quick": True})
    assert response.status_code == 200, response.content
    assert recipient(asked, hanako).needs_help


# --- exactly once ----------------------------------------------------------------------------------------------


@pytest.fixture
def published(monkeypatch):
    """What answer_submit publishes after commit: the person's event and the board's touch."""
    seen: list[str] = []
    monkeypatch.setattr(services, "publish_now", lambda group, kind, data: seen.append(kind))
    monkeypatch.setattr(services, "board_touch", lambda incident_id: seen.append("board"))
    return seen


def test_an_answer_posted_twice_with_its_key_is_kept_once(
    asked, hanako, anon, published, django_capture_on_commit_callbacks
):
    key = str(uuid.uuid4())
    body = {"values": {"safety": "safe", "help": "no"}, "via": "push", "quick": True, "client_key": key}
    with django_capture_on_commit_callbacks(execute=True):
        first = post(anon, api(asked, hanako), body)
    with django_capture_on_commit_callbacks(execute=True):
        again = post(anon, api(asked, hanako), body)
    assert first.status_code == again.status_code == 200, again.content
    assert again.json()["answer"] == first.json()["answer"]
    [saved] = Answer.objects.all()
    assert saved.client_key == key
    assert recipient(asked, hanako).answer_count == 1
    assert published == ["safety.answered", "board"]  # once


def test_a_key_is_one_answer_whichever_api_gets_it(asked, hanako, anon):
    from tests.conftest import signed_in

    key = str(uuid.uuid4())
    in_app = post(
        signed_in(hanako), f"/acme/api/safety/mine/{asked.id}/", {"values": {"safety": "minor"}, "client_key": key}
    )
    assert in_app.status_code == 200
    # The same answer, queued offline on the page and sent later to the signed link.
    queued = post(anon, api(asked, hanako), {"values": {"safety": "minor"}, "client_key": key})
    assert queued.status_code == 200 and queued.json()["answer"]["source"] == "app"
    assert Answer.objects.count() == 1 and recipient(asked, hanako).answer_count == 1


def test_a_repeated_key_returns_the_current_answer_not_an_older_one(asked, hanako, anon):
    key = str(uuid.uuid4())
    post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": key})
    post(anon, api(asked, hanako), {"values": {"safety": "minor"}, "client_key": str(uuid.uuid4())})
    late = post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": key})
    assert late.status_code == 200 and late.json()["answer"]["status"] == "minor"
    assert Answer.objects.count() == 2 and recipient(asked, hanako).status == "minor"


def test_different_keys_and_no_key_are_different_answers(asked, hanako, anon):
    for key in (str(uuid.uuid4()), str(uuid.uuid4()), "", ""):
        assert post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": key}).status_code == 200
    assert Answer.objects.count() == 4 and recipient(asked, hanako).answer_count == 4


def test_a_key_stored_before_the_incident_closed_still_gets_its_200(asked, hanako, anon, crisis):
    key = str(uuid.uuid4())
    assert post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": key}).status_code == 200
    services.incident_complete(incident=asked, actor=crisis)
    retried = post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": key})
    assert retried.status_code == 200 and retried.json()["answer"]["values"] == {"safety": "safe"}
    fresh = post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": str(uuid.uuid4())})
    assert fresh.status_code == 409
    assert Answer.objects.count() == 1


def test_the_same_key_of_another_person_is_their_own_answer(org, asked, hanako, anon, crisis):
    other = safety_person(org, "other")
    send(asked, crisis, {"mode": "chosen", "person_ids": [other.id]}, run=False)
    key = str(uuid.uuid4())
    for person in (hanako, other):
        assert post(anon, api(asked, person), {"values": {"safety": "safe"}, "client_key": key}).status_code == 200
    assert Answer.objects.count() == 2


@pytest.mark.parametrize("key", ["x" * 41, "ab_cd", "a b", "鍵", "<script>", 12345, ["a"], True])
def test_a_bad_client_key_is_a_400_and_stores_nothing(asked, hanako, anon, key):
    response = post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "client_key": key})
    assert response.status_code == 400, response.content
    assert not Answer.objects.exists()


def test_quick_must_be_a_boolean(asked, hanako, anon):
    response = post(anon, api(asked, hanako), {"values": {"safety": "safe"}, "quick": "sometimes"})
    assert response.status_code == 400 and not Answer.objects.exists()


# --- exactly once under a race (real transactions, one connection per thread) ----------------------------------


def _post_in_thread(url: str, body: dict[str, Any], out: list[Any], start: threading.Barrier | None = None) -> None:
    try:
        if start is not None:
            start.wait(timeout=10)
        out.append(post(Client(), url, body))
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_post_racing_an_uncommitted_answer_with_its_key_waits_and_stores_nothing(org, crisis):
    """The second post of a key blocks on the unique index until the first commits, then inserts nothing."""
    incident = incident_make(org, crisis)
    person = safety_person(org, "racer")
    send(incident, crisis, run=False)
    key = str(uuid.uuid4())
    out: list[Any] = []
    from django.db import transaction

    with transaction.atomic():
        first = services.answer_submit(
            incident_id=incident.id, person=person, values={"safety": "safe"}, source="push", client_key=key
        )
        racer = threading.Thread(
            target=_post_in_thread, args=(api(incident, person), {"values": {"safety": "safe"}, "client_key": key}, out)
        )
        racer.start()
        time.sleep(0.7)
        assert racer.is_alive(), "the second post did not wait for the first one's transaction"
    racer.join(timeout=20)
    [response] = out
    assert response.status_code == 200, response.content
    assert response.json()["answer"]["id"] == first.id
    assert Answer.objects.count() == 1 and recipient(incident, person).answer_count == 1


@pytest.mark.django_db(transaction=True)
def test_many_posts_of_one_key_at_once_store_one_answer(org, crisis):
    incident = incident_make(org, crisis)
    person = safety_person(org, "tabs")
    send(incident, crisis, run=False)
    key = str(uuid.uuid4())
    body = {"values": {"safety": "safe", "help": "no"}, "via": "push", "quick": True, "client_key": key}
    out: list[Any] = []
    start = threading.Barrier(6)
    threads = [
        threading.Thread(target=_post_in_thread, args=(api(incident, person), body, out, start)) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.status_code for r in out] == [200] * 6
    assert len({r.json()["answer"]["id"] for r in out}) == 1
    assert Answer.objects.count() == 1
    current = recipient(incident, person)
    assert (current.answer_count, current.status) == (1, "safe")


# --- the service worker's path against a live server ------------------------------------------------------------


def _http(base: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    """POST JSON as the service worker's fetch does: no cookies, no CSRF token, the token in the address."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
    try:
        connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_service_worker_answer_path_against_a_live_server(org, crisis, push_service):
    require_postgres()
    require_redis()
    incident = incident_make(org, crisis)
    person = safety_person(org, "phone")
    subscribe(push_service, person)
    send(incident, crisis)
    [payload] = pushes_by_person(push_service)[person.id]
    safe = next(a for a in payload["actions"] if a["action"] == "safe")
    body = {**safe["body"], "client_key": str(uuid.uuid4())}  # as the service worker adds it
    connections.close_all()
    with daphne(subprocess_env(CELERY_TASK_ALWAYS_EAGER="true")) as base:
        assert _http(base, payload["receipt"], {"event": "delivered"}) == (200, {"state": "delivered"})
        status, answered = _http(base, safe["post"], body)
        assert status == 200, answered
        assert answered["answer"]["values"] == {"safety": "safe", "help": "no"}
        assert answered["answer"]["source"] == "push"
        # The post is retried (the response was lost): still one answer.
        assert _http(base, safe["post"], body)[0] == 200
        # A late "opened" never takes the answered delivery back.
        assert _http(base, payload["receipt"], {"event": "opened"}) == (200, {"state": "answered"})
        bad = _http(base, payload["receipt"], {"event": "read"})
        assert bad[0] == 400 and bad[1]["message"]
        refused = _http(base, safe["post"], {**body, "values": {"safety": "fine"}, "client_key": str(uuid.uuid4())})
        assert refused[0] == 400 and refused[1]["message"]  # the service worker shows `failed`
    delivery = Delivery.objects.get(incident=incident, person=person, channel="push")
    assert delivery.state == "answered" and delivery.delivered_at is not None and delivery.opened_at is not None
    [saved] = Answer.objects.filter(incident=incident, person=person)
    assert saved.source == AnswerSource.PUSH and saved.client_key == body["client_key"]
    assert recipient(incident, person).answer_count == 1


# --- where the pages queue an answer made offline ------------------------------------------------------------------


def test_both_answer_pages_give_the_signed_answer_api_for_the_offline_queue(asked, hanako, anon):
    from tests.conftest import signed_in

    in_app = signed_in(hanako).get(f"/acme/safety/{asked.id}/")
    link = Client().get(services.answer_url(asked, hanako.id) + "?via=push")
    for response in (in_app, link):
        assert response.status_code == 200
        path = response.context["answer_api"]
        assert response.context["page_data"]["answer_api"] == path
        assert path.startswith("/acme/api/safety/answer/") and path.endswith("/")
        link_of = answer_token_read(path.split("/")[-2])
        assert link_of is not None and (link_of.incident_id, link_of.person_id) == (asked.id, hanako.id)
    # What the page queued is accepted later without a session or CSRF token.
    body = {"values": {"safety": "safe"}, "client_key": str(uuid.uuid4())}
    assert post(anon, path, body).status_code == 200
    assert post(anon, path, body).status_code == 200
    assert Answer.objects.count() == 1
