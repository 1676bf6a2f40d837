"""The signed answer link: it answers one incident for one person in one organisation without signing in, and
nothing else: altered, expired, moved to another incident or organisation, or a deactivated person's link is
a 404 and changes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core import signing
from django.test import Client

from safety import services
from safety.models import Answer, AnswerSource, Recipient
from safety.tokens import SALT, answer_token, answer_token_read
from tests.safety.conftest import incident_make, safety_person, send

pytestmark = pytest.mark.django_db

DAY = 24 * 3600


def token_for(incident: Any, person: Any) -> str:
    return answer_token(organization_id=incident.organization_id, incident_id=incident.id, person_id=person.id)


def signed_at(value: Any, seconds_ago: int, *, salt: str = SALT) -> str:
    """A token signed `seconds_ago` (Django's signing with its timestamp moved back)."""

    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - seconds_ago)

    return PastSigner(salt=salt).sign_object(value, compress=False)


def url(token: str, slug: str = "acme") -> str:
    return f"/{slug}/api/safety/answer/{token}/"


def post(client: Client, token: str, values: Any = None, slug: str = "acme", **extra: Any) -> Any:
    body = {"values": values if values is not None else {"safety": "safe"}, **extra}
    return client.post(url(token, slug), body, content_type="application/json")


@pytest.fixture
def anon() -> Client:
    """A browser that never signed in, and that would be refused a missing CSRF token if one were asked."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def hanako(org):
    return safety_person(org, "hanako", language="en")


@pytest.fixture
def asked(org, crisis, incident, hanako):
    send(incident, crisis, run=False)
    return incident


def test_link_answers_without_signing_in(anon, asked, hanako):
    token = token_for(asked, hanako)
    shown = anon.get(url(token))
    assert shown.status_code == 200, shown.content
    data = shown.json()
    assert data["incident"]["id"] == asked.id and data["incident"]["is_open"] and data["answer"] is None
    assert data["questions"][0]["label"] == "Are you safe?"  # in the person's language
    answered = post(anon, token, {"safety": "minor", "help": "yes"})
    assert answered.status_code == 200, answered.content
    assert answered.json()["answer"]["values"] == {"safety": "minor", "help": "yes"}
    saved = Answer.objects.get()
    assert saved.person == hanako and saved.source == AnswerSource.LINK and saved.entered_by is None
    assert Recipient.objects.get(person=hanako).status == "minor"


def test_answer_from_the_notification_records_push_as_the_source(anon, asked, hanako):
    assert post(anon, token_for(asked, hanako), via="push").status_code == 200
    assert post(anon, token_for(asked, hanako), via="app").status_code == 200  # anything else is the link
    assert list(Answer.objects.values_list("source", flat=True)) == ["push", "link"]


def test_the_link_in_the_notification_is_the_one_that_works(org, crisis, incident, hanako, anon):
    send(incident, crisis, run=False)
    path = services.answer_url(incident, hanako.id)
    token = path.removeprefix("/acme/answer/").strip("/")
    assert post(anon, token).status_code == 200


def test_an_altered_token_is_refused(anon, asked, hanako):
    token = token_for(asked, hanako)
    payload, stamp, signature = token.split(":")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for altered in (
        f"{payload}:{stamp}:{flipped}",
        f"{payload[:-1]}{'x' if payload[-1] != 'x' else 'y'}:{stamp}:{signature}",
        f"{payload}:{stamp}",
        token + "x",
        "x" * 20,
        "short",
        "a" * 400,
    ):
        assert anon.get(url(altered)).status_code == 404, altered
        assert post(anon, altered).status_code == 404, altered
    assert not Answer.objects.exists()


def test_an_expired_token_is_refused(anon, asked, hanako, settings):
    value = [asked.organization_id, asked.id, hanako.id]
    lifetime = settings.SAFETY_ANSWER_LINK_SECONDS
    stale = signed_at(value, lifetime + 60)
    fresh = signed_at(value, lifetime - 60)
    assert anon.get(url(stale)).status_code == 404 and post(anon, stale).status_code == 404
    assert not Answer.objects.exists()
    assert anon.get(url(fresh)).status_code == 200
    settings.SAFETY_ANSWER_LINK_SECONDS = 3600  # a shorter lifetime applies to links already sent
    assert anon.get(url(fresh)).status_code == 404
    assert answer_token_read(fresh) is None and answer_token_read(fresh, max_age=lifetime) is not None


def test_signed_values_that_are_not_a_link_are_refused(anon, asked, hanako):
    org_id, incident_id, person_id = asked.organization_id, asked.id, hanako.id
    for value in (
        {"o": org_id, "i": incident_id, "p": person_id},
        [org_id, incident_id],
        [org_id, incident_id, str(person_id)],
        [org_id, incident_id, True],
    ):
        token = signing.dumps(value, salt=SALT, compress=False)
        assert anon.get(url(token)).status_code == 404, value
    other_salt = signing.dumps([org_id, incident_id, person_id], salt="another-purpose", compress=False)
    assert anon.get(url(other_salt)).status_code == 404


def test_a_token_for_another_incident_is_refused(org, crisis, anon, hanako):
    asked_one = incident_make(org, crisis, title="地震")
    not_asked = incident_make(org, crisis, title="台風")
    send(asked_one, crisis, run=False)
    stranger = safety_person(org, "stranger")
    send(not_asked, crisis, {"mode": "chosen", "person_ids": [stranger.id]}, run=False)
    # hanako was never asked by the second incident: her token for it opens nothing
    assert anon.get(url(token_for(not_asked, hanako))).status_code == 404
    assert post(anon, token_for(not_asked, hanako)).status_code == 404
    assert not Answer.objects.exists()
    # and a token answers its own incident only
    both = incident_make(org, crisis, title="津波")
    send(both, crisis, run=False)
    assert post(anon, token_for(asked_one, hanako)).status_code == 200
    assert list(Answer.objects.values_list("incident_id", flat=True)) == [asked_one.id]
    assert Recipient.objects.get(incident=both, person=hanako).status == ""


def test_a_token_is_never_usable_in_another_organisation(org, other_org, crisis, anon, asked, hanako):
    from directory.models import Role
    from tests import factories

    # our token under their slug
    assert anon.get(url(token_for(asked, hanako), "globex")).status_code == 404
    assert post(anon, token_for(asked, hanako), slug="globex").status_code == 404
    # their token under our slug
    their_manager = factories.person(other_org, "their-crisis", roles=(Role.CRISIS_MANAGER,))
    theirs = incident_make(other_org, their_manager)
    their_person = safety_person(other_org, "their-person")
    send(theirs, their_manager, run=False)
    their_token = token_for(theirs, their_person)
    assert anon.get(url(their_token, "globex")).status_code == 200  # valid where it belongs
    assert anon.get(url(their_token)).status_code == 404
    assert post(anon, their_token).status_code == 404
    # even signed with our organisation's id, their incident is not ours
    mixed = answer_token(organization_id=org.id, incident_id=theirs.id, person_id=their_person.id)
    assert anon.get(url(mixed)).status_code == 404 and post(anon, mixed).status_code == 404
    assert anon.get(url(token_for(asked, hanako), "no-such-org")).status_code == 404
    assert not Answer.objects.exists()


def test_a_deactivated_persons_token_is_refused(anon, asked, hanako):
    token = token_for(asked, hanako)
    hanako.is_active = False
    hanako.save()
    assert anon.get(url(token)).status_code == 404 and post(anon, token).status_code == 404
    assert not Answer.objects.exists()


def test_a_completed_incident_shows_but_takes_no_answers(anon, crisis, asked, hanako):
    token = token_for(asked, hanako)
    services.incident_complete(incident=asked, actor=crisis)
    shown = anon.get(url(token)).json()
    assert shown["incident"]["status"] == "completed" and not shown["incident"]["is_open"]
    refused = post(anon, token)
    assert refused.status_code == 409 and refused.json()["code"] == "incident_closed"
    assert not Answer.objects.exists()


def test_an_invalid_answer_from_the_link_changes_nothing(anon, asked, hanako):
    refused = post(anon, token_for(asked, hanako), {"safety": "fine"})
    assert refused.status_code == 400 and refused.json()["code"] == "bad_answer"
    assert not Answer.objects.exists() and Recipient.objects.get(person=hanako).answer_count == 0


def test_link_answers_are_rate_limited(anon, asked, hanako):
    token = token_for(asked, hanako)
    for _ in range(30):
        assert post(anon, token).status_code == 200
    limited = post(anon, token)
    assert limited.status_code == 429 and limited.json()["code"] == "too_many_answers"
    assert Answer.objects.count() == 30


def test_after_a_key_rotation_links_signed_with_the_old_key_work_only_while_it_is_a_fallback(
    anon, asked, hanako, settings
):
    old_key = settings.SECRET_KEY
    token = token_for(asked, hanako)
    settings.SECRET_KEY = "rotated-" + "k" * 50
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert anon.get(url(token)).status_code == 200
    assert post(anon, token, {"safety": "safe"}).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert anon.get(url(token)).status_code in (400, 403, 404)
    fresh = token_for(asked, hanako)
    assert fresh != token
    assert anon.get(url(fresh)).status_code == 200
