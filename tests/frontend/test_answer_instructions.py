"""Instructions (対策指示) on the employee's side, through the Django test client: the answer page in the app and
the signed link page (which works without JavaScript) list the incident's instructions newest first, only that
incident's, as text (markup in an instruction is never run), marked as a drill for a drill, and not at all when
there are none; the person's list shows the latest; the APIs the pages refresh from carry them; and a person who
was not asked sees none of it (404)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone, translation

from directory.models import Organization, Role, User
from safety import services
from safety.models import Incident, Instruction
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db

SCRIPT = '<script>alert("x")</script> 本社へ集合'


def tr(language: str, message: str, context: str = "") -> str:
    with translation.override(language):
        return translation.pgettext(context, message) if context else translation.gettext(message)


def html(response: Any) -> str:
    return str(response.content.decode())


def section(page: str) -> str:
    """The #instructions section of a page ("" if there is none)."""
    match = re.search(r'<section id="instructions".*?</section>', page, re.S)
    return match.group(0) if match else ""


def shown_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="instruction" data-instruction="(\d+)"', section(page))]


def page_data(response: Any) -> Any:
    match = re.search(r'<script id="answer-data" type="application/json">(.*?)</script>', html(response), re.S)
    assert match, "no #answer-data in the page"
    return json.loads(match.group(1))


def both_pages(client: Client, incident: Incident, person: User) -> list[Any]:
    """The answer page in the app (signed in) and the signed link page (not signed in)."""
    return [signed_in(person).get(f"/acme/safety/{incident.id}/"), client.get(services.answer_url(incident, person.id))]


@pytest.fixture
def crisis(org: Organization) -> User:
    user = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    user.last_name, user.first_name = "危機", "管理"
    user.save(update_fields=["last_name", "first_name"])
    return user


@pytest.fixture
def hanako(org: Organization) -> User:
    return factories.person(org, "hanako", anpi_login_id="anpi-hanako")


def sent_to(org: Organization, crisis: User, people: list[User], **fields: Any) -> Incident:
    incident = services.incident_create(
        organization=org,
        actor=crisis,
        title=fields.pop("title", "震度6強の地震"),
        message=fields.pop("message", "安否を回答してください。"),
        **fields,
    )
    services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [p.id for p in people]}
    )
    return Incident.objects.select_related("organization").get(id=incident.id)


def post(incident: Incident, crisis: User, body: str, *, minutes_ago: int = 0) -> Instruction:
    instruction = services.instruction_post(incident=incident, actor=crisis, body=body)
    if minutes_ago:  # posted earlier (created_at orders the list)
        Instruction.objects.filter(id=instruction.id).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return instruction


@pytest.fixture
def incident(org: Organization, crisis: User, hanako: User) -> Incident:
    return sent_to(org, crisis, [hanako])


@pytest.fixture
def posted(org: Organization, crisis: User, hanako: User, incident: Incident) -> list[Instruction]:
    """Three instructions of the incident, oldest first, and one of another incident Hanako was also asked."""
    other = sent_to(org, crisis, [hanako], title="別の訓練")
    post(other, crisis, "別の事案の指示です", minutes_ago=5)
    return [
        post(incident, crisis, "本社ビルから退避してください。\n階段を使ってください。", minutes_ago=20),
        post(incident, crisis, SCRIPT, minutes_ago=10),
        post(incident, crisis, "帰宅は指示があるまで待ってください。"),
    ]


def test_answer_page_in_the_app_lists_the_incidents_instructions_newest_first(
    incident: Incident, hanako: User, posted: list[Instruction]
) -> None:
    response = signed_in(hanako).get(f"/acme/safety/{incident.id}/")
    assert response.status_code == 200
    page = html(response)
    assert shown_ids(page) == [posted[2].id, posted[1].id, posted[0].id]
    shown = section(page)
    assert "hidden" not in shown[: shown.index(">")]
    assert tr("ja", "Instructions", "safety instructions") in shown
    assert "別の事案の指示です" not in page  # another incident's instruction
    # Each with its time and who posted it; line breaks kept for the page's pre-line.
    local = timezone.localtime(posted[2].created_at)
    assert f'<time datetime="{posted[2].created_at.isoformat()}">{local:%H:%M}</time>' in shown
    assert "危機 管理" in shown
    assert "本社ビルから退避してください。\n階段を使ってください。" in shown
    # The script gets the same list to keep current, newest first.
    assert [i["id"] for i in page_data(response)["request"]["instructions"]] == [p.id for p in reversed(posted)]


def test_link_page_without_sign_in_lists_them_too(
    client: Client, incident: Incident, hanako: User, posted: list[Instruction]
) -> None:
    response = client.get(services.answer_url(incident, hanako.id))
    assert response.status_code == 200
    page = html(response)
    assert shown_ids(page) == [posted[2].id, posted[1].id, posted[0].id]
    assert "別の事案の指示です" not in page
    assert "帰宅は指示があるまで待ってください。" in section(page)
    # A form posted without JavaScript that comes back with an error still shows them.
    response = client.post(services.answer_url(incident, hanako.id), {"safety": "fine-thanks"})
    assert response.status_code == 400
    assert shown_ids(html(response)) == [posted[2].id, posted[1].id, posted[0].id]


def test_markup_in_an_instruction_shows_as_text(
    client: Client, incident: Incident, hanako: User, posted: list[Instruction]
) -> None:
    for response in both_pages(client, incident, hanako):
        page = html(response)
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; 本社へ集合" in section(page)
        assert '<script>alert("x")' not in page  # neither in the list nor in the page's JSON
        assert page_data(response)["request"]["instructions"][1]["body"] == SCRIPT


def test_no_instructions_no_list(client: Client, incident: Incident, hanako: User) -> None:
    for response in both_pages(client, incident, hanako):
        shown = section(html(response))
        # The section is there for a live first instruction, but hidden and empty.
        assert shown.startswith('<section id="instructions"') and " hidden>" in shown[: shown.index("\n")]
        assert "data-instruction" not in shown
        assert page_data(response)["request"]["instructions"] == []


def test_a_drills_instructions_are_marked_as_a_drill(
    client: Client, org: Organization, crisis: User, hanako: User
) -> None:
    drill = sent_to(org, crisis, [hanako], title="避難訓練", is_drill=True)
    post(drill, crisis, "訓練：屋外へ避難してください。")
    shown = section(html(client.get(services.answer_url(drill, hanako.id))))
    assert 'class="answer-instructions is-drill"' in shown
    item = shown[shown.index("<li") :]
    assert f'<span class="instruction-drill">{tr("ja", "DRILL")}</span>' in item
    # A real incident's are not.
    real = sent_to(org, crisis, [hanako])
    post(real, crisis, "退避してください。")
    assert "instruction-drill" not in section(html(client.get(services.answer_url(real, hanako.id))))


def test_a_completed_incident_still_shows_what_was_instructed(
    client: Client, incident: Incident, crisis: User, hanako: User
) -> None:
    first = post(incident, crisis, "退避してください。")
    services.incident_complete(incident=incident, actor=crisis)
    page = html(client.get(services.answer_url(incident, hanako.id)))
    assert tr("ja", "Answers are closed.") in page
    assert shown_ids(page) == [first.id]


def test_my_requests_show_the_latest_instruction(incident: Incident, hanako: User, posted: list[Instruction]) -> None:
    page = html(signed_in(hanako).get("/acme/safety/"))
    card = page[page.index(f'data-incident="{incident.id}"') :]
    card = card[: card.index("</article>")]
    assert f'data-instruction="{posted[2].id}"' in card and "帰宅は指示があるまで待ってください。" in card
    assert tr("ja", "Latest instruction") in card
    assert "本社ビルから退避" not in card  # only the latest


def test_the_apis_the_pages_refresh_from_carry_the_instructions(
    client: Client, incident: Incident, hanako: User, posted: list[Instruction]
) -> None:
    mine = signed_in(hanako).get(f"/acme/api/safety/mine/{incident.id}/")
    assert mine.status_code == 200
    rows = mine.json()["instructions"]
    assert [i["id"] for i in rows] == [p.id for p in reversed(posted)]
    assert rows[0] == {
        "id": posted[2].id,
        "incident_id": incident.id,
        "body": "帰宅は指示があるまで待ってください。",
        "author": "危機 管理",
        "created_at": posted[2].created_at.isoformat(),
    }
    token = services.answer_url(incident, hanako.id).rstrip("/").rsplit("/", 1)[1]
    linked = client.get(f"/acme/api/safety/answer/{token}/")
    assert linked.status_code == 200
    assert [i["id"] for i in linked.json()["instructions"]] == [p.id for p in reversed(posted)]


def test_a_person_who_was_not_asked_gets_404(
    org: Organization, incident: Incident, posted: list[Instruction], other_org: Organization
) -> None:
    jiro = factories.person(org, "jiro", anpi_login_id="anpi-jiro")
    jiro_client = signed_in(jiro)
    assert jiro_client.get(f"/acme/api/safety/mine/{incident.id}/").status_code == 404
    response = jiro_client.get(f"/acme/safety/{incident.id}/")
    assert response.status_code == 404
    assert "帰宅は指示があるまで" not in html(response)
    assert "帰宅は指示があるまで" not in html(jiro_client.get("/acme/safety/"))
    # Nor someone of another organisation.
    stranger = factories.person(other_org, "stranger")
    assert signed_in(stranger).get(f"/acme/api/safety/mine/{incident.id}/").status_code == 404
