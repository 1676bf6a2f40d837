"""The person's safety-check pages through the Django test client: answering from the signed link without
signing in (and without JavaScript), links that are altered, expired, for another incident or another
organisation, a completed incident, the person's own requests and the answer page in the app, and the headers
that keep the token in the address from leaking."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from unittest import mock

import pytest
from django.test import Client
from django.utils import translation

from directory.models import Organization, Role, User
from safety import services
from safety.models import Answer, AnswerSource, Incident, Recipient
from safety.tokens import answer_path, answer_token
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db


def tr(language: str, message: str, **values: Any) -> str:
    """What the page shows for a msgid (English until the Japanese catalogue has it)."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def page_data(response: Any) -> Any:
    match = re.search(
        r'<script id="answer-data" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, "no #answer-data in the page"
    return json.loads(match.group(1))


def html(response: Any) -> str:
    return str(response.content.decode())


def safety_user(org: Organization, login_id: str, **kwargs: Any) -> User:
    return factories.person(org, login_id, anpi_login_id=f"anpi-{login_id}", **kwargs)


def sent_incident(org: Organization, people: list[User], **fields: Any) -> Incident:
    """An incident sent to `people` (the sending itself is not run: these tests only need the requests)."""
    crisis = User.objects.filter(organization=org, login_id="crisis").first() or factories.person(
        org, "crisis", roles=(Role.CRISIS_MANAGER,)
    )
    incident = services.incident_create(
        organization=org,
        actor=crisis,
        title=fields.pop("title", "震度6強の地震"),
        message=fields.pop("message", "安否を回答してください。\n出社は不要です。"),
        **fields,
    )
    services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [p.id for p in people]}
    )
    incident.refresh_from_db()
    return incident


def link(incident: Incident, person: User) -> str:
    return services.answer_url(incident, person.id)


@pytest.fixture
def hanako(org: Organization) -> User:
    return safety_user(org, "hanako")


@pytest.fixture
def incident(org: Organization, hanako: User) -> Incident:
    return sent_incident(org, [hanako])


def assert_private(response: Any) -> None:
    assert response["Referrer-Policy"] == "no-referrer"
    cache = response["Cache-Control"]
    assert "no-store" in cache and "no-cache" in cache and "private" in cache, cache


# --- The signed link ---------------------------------------------------------------------------------------


def test_link_page_shows_the_form_without_signing_in(client: Client, incident: Incident, hanako: User) -> None:
    url = link(incident, hanako)
    response = client.get(url)
    assert response.status_code == 200
    assert_private(response)
    page = html(response)
    assert '<html lang="ja">' in page
    assert "ACME株式会社" in page  # the organisation
    assert "震度6強の地震" in page and "出社は不要です。" in page
    # The three safety answers are the form's submit buttons (one tap), each with an icon and a word.
    buttons = re.findall(r'<button type="submit" name="safety" value="(\w+)"[^>]*>\s*<span class="safety-icon"', page)
    assert buttons == ["safe", "minor", "serious"]
    for word in ("無事", "軽傷", "重傷", "救助・支援が必要ですか", "出社できますか", "自宅の状況", "コメント"):
        assert word in page
    assert '<form method="post" id="answer-form"' in page
    form = page[page.index('<form method="post" id="answer-form"') :]
    assert 'name="csrfmiddlewaretoken"' not in form[: form.index("</form>")]  # the link is the credential
    # Nothing of a signed-in page: no menu, no live connection.
    assert tr("ja", "Sign out") not in page and "data-streams" not in page
    data = page_data(response)
    assert data["endpoint"] == url.replace("/acme/answer/", "/acme/api/safety/answer/")
    assert data["via"] == "link" and data["csrf"] is False
    assert data["request"]["answer"] is None
    assert [q["key"] for q in data["request"]["questions"]] == ["safety", "help", "work", "home", "comment"]


def test_link_page_speaks_the_persons_language_and_marks_a_drill(client: Client, org: Organization) -> None:
    ken = safety_user(org, "ken", language="en")
    drill = services.incident_create(organization=org, actor=None, title="Drill", message="Practice.", is_drill=True)
    services.dispatch_create(incident=drill, actor=None, target={"mode": "chosen", "person_ids": [ken.id]})
    response = client.get(link(drill, ken), HTTP_ACCEPT_LANGUAGE="ja")
    page = html(response)
    assert '<html lang="en">' in page and response["Content-Language"] == "en"
    assert "Are you safe?" in page and ">Safe<" in page and ">Minor injury<" in page
    assert tr("en", "DRILL") in page
    assert tr("en", "One tap sends your answer.") in page
    # The other language is one tap away, on the same link.
    assert '<a href="?lang=ja" lang="ja"' in page
    assert '<html lang="ja">' in html(client.get(link(drill, ken) + "?lang=ja"))


def test_answer_without_javascript_is_recorded_from_the_link(client: Client, incident: Incident, hanako: User) -> None:
    url = link(incident, hanako)
    response = client.post(url, {"safety": "safe", "help": "no", "comment": " 家族も無事です "})
    assert response.status_code == 302 and response["Location"] == url
    assert_private(response)
    answer = Answer.objects.get(incident=incident, person=hanako)
    assert answer.source == AnswerSource.LINK
    assert answer.values == {"safety": "safe", "help": "no", "comment": "家族も無事です"}
    recipient = Recipient.objects.get(incident=incident, person=hanako)
    assert recipient.status == "safe" and recipient.answer_id == answer.id

    page = html(client.get(url))
    assert "無事" in page
    assert tr("ja", "You answered %(answer)s at %(time)s. You can change it.", answer="無事", time="")[:6] in page
    assert 'value="safe" class="safety-choice safety-safe" aria-pressed="true"' in page
    assert 'name="help" value="no" checked' in page
    assert "家族も無事です</textarea>" in page
    assert page_data(client.get(url))["request"]["answer"]["values"]["safety"] == "safe"


def test_send_keeps_the_safety_answer_and_the_push_link_records_push(
    client: Client, incident: Incident, hanako: User
) -> None:
    url = link(incident, hanako)
    client.post(url, {"safety": "minor"})
    # "Send" (not a safety button): the earlier safety answer stays, the new answers join it.
    response = client.post(url + "?via=push", {"safety_current": "minor", "help": "yes"})
    assert response.status_code == 302 and response["Location"] == url + "?via=push"
    latest = Answer.objects.filter(incident=incident, person=hanako).order_by("-id").first()
    assert latest is not None and latest.source == AnswerSource.PUSH
    assert latest.values == {"safety": "minor", "help": "yes"} and latest.needs_help
    assert Answer.objects.filter(incident=incident, person=hanako).count() == 2  # history kept
    assert page_data(client.get(url + "?via=push"))["via"] == "push"


def test_a_wrong_answer_shows_a_message_not_an_error_page(client: Client, incident: Incident, hanako: User) -> None:
    url = link(incident, hanako)
    response = client.post(url, {"safety": "fine-thanks"})
    assert response.status_code == 400
    with translation.override("ja"):
        message = tr("ja", "That is not one of the choices: %(q)s", q="あなたの安否")
    assert message in html(response)
    assert 'role="alert">' + message in html(response).replace("\n", "")
    response = client.post(url, {"help": "yes", "comment": "x" * 5000})
    assert response.status_code == 400
    assert tr("ja", "Please answer: %(q)s", q="あなたの安否") in html(response)
    assert 'name="help" value="yes" checked' in html(response)  # what they chose is still chosen
    assert not Answer.objects.filter(incident=incident).exists()


def test_completed_incident_shows_answers_closed_and_the_last_answer(
    client: Client, incident: Incident, hanako: User
) -> None:
    url = link(incident, hanako)
    client.post(url, {"safety": "serious", "help": "yes"})
    services.incident_complete(incident=incident, actor=None)
    response = client.get(url)
    assert response.status_code == 200
    page = html(response)
    assert tr("ja", "Answers are closed.") in page
    assert "重傷" in page
    assert 'id="answer-form"' not in page and 'name="safety"' not in page
    response = client.post(url, {"safety": "safe"})
    assert response.status_code == 409
    assert tr("ja", "Answers to this incident are closed.") in html(response)
    assert Answer.objects.filter(incident=incident).count() == 1


def _old_token(organization_id: int, incident_id: int, person_id: int, age: int) -> str:
    with mock.patch("time.time", return_value=time.time() - age):
        return answer_token(organization_id=organization_id, incident_id=incident_id, person_id=person_id)


def test_altered_expired_foreign_links_get_a_friendly_404_and_change_nothing(
    client: Client, settings: Any, org: Organization, other_org: Organization, incident: Incident, hanako: User
) -> None:
    settings.SAFETY_ANSWER_LINK_SECONDS = 3600
    token = link(incident, hanako).split("/")[3]
    # Another incident that did not ask Hanako, and one of the other organisation.
    ken = safety_user(org, "ken")
    not_asked = sent_incident(org, [ken], title="別の安否確認")
    globex_person = safety_user(other_org, "wile")
    foreign = sent_incident(other_org, [globex_person], title="Globex incident")
    altered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    bad = {
        "altered": f"/acme/answer/{altered}/",
        "expired": answer_path(slug="acme", token=_old_token(org.id, incident.id, hanako.id, age=7200)),
        "another incident": answer_path(
            slug="acme", token=answer_token(organization_id=org.id, incident_id=not_asked.id, person_id=hanako.id)
        ),
        "other organisation's incident": answer_path(
            slug="acme", token=answer_token(organization_id=org.id, incident_id=foreign.id, person_id=globex_person.id)
        ),
        "token under another slug": f"/globex/answer/{token}/",
        "other organisation's token here": answer_path(slug="acme", token=link(foreign, globex_person).split("/")[3]),
        "garbage": "/acme/answer/not-a-token-at-all/",
    }
    for name, url in bad.items():
        response = client.get(url)
        assert response.status_code == 404, name
        assert tr("ja", "This link is not valid or has expired") in html(response), name
        assert response["Referrer-Policy"] == "no-referrer", name
        assert "震度6強の地震" not in html(response) and "Globex incident" not in html(response), name
        assert client.post(url, {"safety": "safe"}).status_code == 404, name
        api = url.replace("/answer/", "/api/safety/answer/")
        assert client.post(api, {"values": {"safety": "safe"}}, content_type="application/json").status_code == 404
    assert not Answer.objects.exists()
    # A token just inside its lifetime still works; the same one an hour older does not (the expired case above).
    assert (
        client.get(answer_path(slug="acme", token=_old_token(org.id, incident.id, hanako.id, age=60))).status_code
        == 200
    )


def test_link_page_shows_nothing_of_whoever_is_signed_in(org: Organization, incident: Incident, hanako: User) -> None:
    boss = factories.person(org, "boss", roles=(Role.CRISIS_MANAGER,))
    client = signed_in(boss)
    response = client.get(link(incident, hanako))
    assert response.status_code == 200
    page = html(response)
    assert tr("ja", "Sign out") not in page and "data-streams" not in page and "boss" not in page
    client.post(link(incident, hanako), {"safety": "safe"})
    assert Answer.objects.get(incident=incident).person_id == hanako.id  # the link's person, not the session's


# --- Signed in ---------------------------------------------------------------------------------------------


def test_my_requests_lists_open_checks_with_a_button_to_answer(
    org: Organization, incident: Incident, hanako: User
) -> None:
    client = signed_in(hanako)
    response = client.get("/acme/safety/")
    assert response.status_code == 200
    page = html(response)
    assert "震度6強の地震" in page and f'href="/acme/safety/{incident.id}/"' in page
    assert tr("ja", "Answer now") in page and tr("ja", "Not answered yet") in page
    services.answer_submit(incident_id=incident.id, person=hanako, values={"safety": "safe"}, source="app")
    page = html(client.get("/acme/safety/"))
    assert tr("ja", "Change my answer") in page and "無事" in page
    services.incident_complete(incident=incident, actor=None)
    page = html(client.get("/acme/safety/"))
    assert "震度6強の地震" not in page and tr("ja", "No safety checks are waiting for your answer.") in page


def test_answer_page_in_the_app(org: Organization, incident: Incident, hanako: User) -> None:
    client = signed_in(hanako)
    response = client.get(f"/acme/safety/{incident.id}/")
    assert response.status_code == 200
    page = html(response)
    assert "data-streams" in page  # the app's page: live banner and events
    assert 'name="csrfmiddlewaretoken"' in page
    data = page_data(response)
    assert data["endpoint"] == f"/acme/api/safety/mine/{incident.id}/"
    assert data["via"] == "app" and data["csrf"] is True
    # Without JavaScript too.
    response = client.post(f"/acme/safety/{incident.id}/", {"safety": "safe", "work": "cannot"})
    assert response.status_code == 302
    answer = Answer.objects.get(incident=incident, person=hanako)
    assert answer.source == AnswerSource.APP and answer.values == {"safety": "safe", "work": "cannot"}
    page = html(client.get(f"/acme/safety/{incident.id}/"))
    assert tr("ja", "Answer sent at %(time)s.", time="")[:4] in page


def test_answer_page_is_404_for_someone_not_asked(
    org: Organization, other_org: Organization, incident: Incident, hanako: User
) -> None:
    ken = safety_user(org, "ken")
    client = signed_in(ken)
    assert client.get(f"/acme/safety/{incident.id}/").status_code == 404
    assert client.post(f"/acme/safety/{incident.id}/", {"safety": "safe"}).status_code == 404
    assert client.get("/acme/safety/999999/").status_code == 404
    assert "震度6強の地震" not in html(client.get("/acme/safety/"))
    # Nor under another organisation's address, even for the person asked.
    assert signed_in(hanako).get(f"/globex/safety/{incident.id}/").status_code == 404
    assert not Answer.objects.exists()


def test_signed_out_person_is_sent_to_sign_in(client: Client, incident: Incident) -> None:
    response = client.get(f"/acme/safety/{incident.id}/")
    assert response.status_code == 302 and response["Location"].startswith("/acme/?next=")


def test_home_has_the_place_for_open_requests(org: Organization, hanako: User) -> None:
    page = html(signed_in(hanako).get("/acme/home/"))
    assert 'id="safety-requests"' in page and 'id="safety-request-list"' in page


def test_a_custom_form_and_a_form_without_questions_work_without_javascript(client: Client, org: Organization) -> None:
    hanako = safety_user(org, "hanako")
    custom = sent_incident(
        org,
        [hanako],
        title="備蓄の確認",
        questions=[
            {"key": "needs", "kind": "multiple", "label": "不足している物", "choices": ["水", "食料", "薬"]},
            {"key": "note", "kind": "text", "label": "連絡事項"},
        ],
    )
    url = link(custom, hanako)
    page = html(client.get(url))
    assert 'name="safety"' not in page  # no safety question, so no one-tap buttons: a Send button instead
    assert 'type="checkbox" name="needs" value="c1"' in page and 'id="answer-send"' in page
    assert client.post(url, {"needs": ["c3", "c1"], "note": "薬が切れそう"}).status_code == 302
    answer = Answer.objects.get(incident=custom)
    assert answer.values == {"needs": ["c1", "c3"], "note": "薬が切れそう"} and answer.status == "answered"
    page = html(client.get(url))
    assert 'name="needs" value="c1" checked' in page and 'name="needs" value="c2">' in page
    # No safety word to quote: "You answered at 10:02. You can change it."
    assert tr("ja", "You answered at %(time)s. You can change it.", time="\x00").split("\x00")[1] in page

    notice = sent_incident(org, [hanako], title="お知らせのみ", questions=[])
    url = link(notice, hanako)
    page = html(client.get(url))
    assert 'id="answer-send"' in page and "<fieldset" not in page
    assert client.post(url, {}).status_code == 302
    assert Answer.objects.get(incident=notice).status == "answered"
