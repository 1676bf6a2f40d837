"""The automatic-dispatch pages (/<slug>/safety/auto/) through the Django test client: the rules with the preset
rule marked and the drill-mode switch, the rule form (add, change, delete; a bad rule re-renders with the
service's message and stores nothing), verification (who a report would reach, and which rule fires), replay of
real JMA messages (uploaded or stored) and the audit log. Crisis managers and safety administrators see every
page; everyone else gets the 403 page, another organisation the 404 page, and signed-out people the sign-in page.
Verify and replay send and store nothing."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone, translation
from django.utils.html import escape

from directory.models import Organization, Role, User
from safety import autodispatch, services
from safety.jma.ingest import jma_document_ingest
from safety.models import (
    Delivery,
    DispatchRule,
    Incident,
    JmaDecision,
    JmaDocument,
    MessageTemplate,
    Recipient,
    SafetySettings,
)
from safety.questions import default_questions
from tests import factories
from tests.conftest import signed_in
from tests.services import ROOT, shared_fixtures

pytestmark = pytest.mark.django_db

MANAGING_ROLES = (Role.CRISIS_MANAGER, Role.ADMIN_ANPI)
NOTO_VXSE51 = "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
NOTO_VXSE53 = ROOT / "tests" / "safety" / "jma" / "noto2024_vxse53_serial2_reconstructed.xml"
ISHIKAWA, TOYAMA, TOKYO, OSAKA = "17", "16", "13", "27"


def tr(language: str, message: str, **values: Any) -> str:
    """A msgid as the template writes it ({% translate %} is not escaped; wrap text from the view in escape())."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def ntr(language: str, singular: str, plural: str, n: int) -> str:
    with translation.override(language):
        return translation.ngettext(singular, plural, n) % {"n": n}


def text_of(response: Any) -> str:
    return str(response.content.decode())


class World:
    """A crisis manager; people based in 石川県 (two), 富山県, 東京都 and nowhere; a department "能登工場" with a
    person in 大阪府; the preset rule (震度5強 or more, based) and a message template."""

    def __init__(self, org: Organization) -> None:
        self.org = org
        self.crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
        self.factory = factories.department(org, "NOTO")
        self.factory.name = "能登工場"
        self.factory.save(update_fields=["name"])
        self.wajima = self.named("wajima", "輪島", "一郎", region_code=ISHIKAWA)
        self.kanazawa = self.named("kanazawa", "金沢", "花子", region_code=ISHIKAWA)
        self.toyama = self.named("toyama", "富山", "次郎", region_code=TOYAMA)
        self.tokyo = self.named("tokyo", "東京", "三郎", region_code=TOKYO)
        self.nowhere = self.named("nowhere", "未設定", "四郎")
        self.osaka = self.named("osaka", "大阪", "五郎", region_code=OSAKA, department=self.factory)
        self.preset = autodispatch.preset_rule_create(org)
        self.template = MessageTemplate.objects.create(organization=org, name="地震（自動）", body="落ち着いて回答を。")

    def named(self, login_id: str, last: str, first: str, **kwargs: Any) -> User:
        user = factories.person(self.org, login_id, anpi_login_id=login_id, **kwargs)
        user.last_name, user.first_name = last, first
        user.save(update_fields=["last_name", "first_name"])
        return user

    def person(self, *roles: Role, language: str = "ja") -> User:
        return factories.person(self.org, roles=roles, language=language)


@pytest.fixture
def world(org: Organization) -> World:
    return World(org)


@pytest.fixture
def crisis(world: World) -> Client:
    return signed_in(world.crisis)


def urls(world: World) -> list[str]:
    return [
        "/acme/safety/auto/",
        "/acme/safety/auto/rules/new/",
        f"/acme/safety/auto/rules/{world.preset.id}/",
        f"/acme/safety/auto/rules/{world.preset.id}/delete/",
        "/acme/safety/auto/verify/",
        "/acme/safety/auto/replay/",
        "/acme/safety/auto/log/",
    ]


def rule_post(**overrides: Any) -> dict[str, Any]:
    """What the rule form posts for 震度6弱 or more in 石川県 (+ 能登 area), to the people based there."""
    data: dict[str, Any] = {
        "name": "北陸の拠点",
        "hazard": "earthquake",
        "enabled": "on",
        "prefectures": [ISHIKAWA, TOYAMA],
        "areas": "390 石川県能登\n",
        "min_intensity": "6-",
        "tsunami_level": "warning",
        "target_mode": "based",
        "people": "",
        "questions": "default",
        "template_id": "",
        "hold_minutes": "10",
        "suppress_minutes": "30",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# --- Who may see what ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", MANAGING_ROLES)
@pytest.mark.parametrize("language", ["ja", "en"])
def test_crisis_managers_and_safety_administrators_see_every_page(world: World, role: Role, language: str) -> None:
    client = signed_in(world.person(role, language=language))
    for url in urls(world):
        response = client.get(url)
        assert response.status_code == 200, url
        html = text_of(response)
        assert f'<html lang="{language}">' in html, url
        assert tr(language, "Automatic dispatch") in html, url


@pytest.mark.parametrize(
    "roles",
    [(), (Role.MANAGER,), (Role.DEPARTMENT_MANAGER,), (Role.SYSTEM_ADMIN,), (Role.ADMIN_GOTALK,)],
)
def test_everyone_else_gets_the_403_page_and_changes_nothing(world: World, roles: tuple[Role, ...]) -> None:
    client = signed_in(world.person(*roles))
    for url in urls(world):
        assert client.get(url).status_code == 403, url
    assert client.post("/acme/safety/auto/", {"drill_mode": "on"}).status_code == 403
    assert client.post("/acme/safety/auto/rules/new/", rule_post()).status_code == 403
    assert client.post(f"/acme/safety/auto/rules/{world.preset.id}/", rule_post()).status_code == 403
    assert client.post(f"/acme/safety/auto/rules/{world.preset.id}/delete/").status_code == 403
    assert client.post("/acme/safety/auto/verify/", {"hazard": "earthquake"}).status_code == 403
    assert client.post("/acme/safety/auto/replay/", {}).status_code == 403
    assert list(DispatchRule.objects.filter(organization=world.org)) == [world.preset]
    assert world.preset.name == DispatchRule.objects.get().name
    assert not SafetySettings.objects.filter(organization=world.org, drill_mode=True).exists()


def test_another_organisation_gets_the_404_page(world: World, other_org: Organization) -> None:
    stranger = signed_in(factories.person(other_org, "boss", roles=(Role.CRISIS_MANAGER,)))
    for url in urls(world):
        assert stranger.get(url).status_code == 404, url
    # In their own organisation, the other organisation's rule does not exist.
    for url in (
        f"/globex/safety/auto/rules/{world.preset.id}/",
        f"/globex/safety/auto/rules/{world.preset.id}/delete/",
    ):
        assert stranger.get(url).status_code == 404, url
        assert stranger.post(url, rule_post()).status_code == 404, url
    assert DispatchRule.objects.filter(id=world.preset.id).exists()
    assert stranger.get("/globex/safety/auto/").status_code == 200


def test_signed_out_people_are_sent_to_sign_in(world: World) -> None:
    for url in urls(world):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/acme/?next="), url


def test_the_incident_list_links_here_for_those_who_manage_incidents(world: World) -> None:
    html = text_of(signed_in(world.crisis).get("/acme/safety/incidents/"))
    assert 'href="/acme/safety/auto/"' in html and tr("ja", "Automatic dispatch") in html
    manager = text_of(signed_in(world.person(Role.MANAGER)).get("/acme/safety/incidents/"))
    assert 'href="/acme/safety/auto/"' not in manager


def test_an_automatic_incident_is_marked_as_such(world: World, crisis: Client) -> None:
    manual = services.incident_create(organization=world.org, actor=world.crisis, title="手動", message="m")
    automatic = services.incident_create(organization=world.org, actor=None, title="災害発生：地震", message="m")
    automatic.jma_event = "eq:通常:20240101161010"
    automatic.save(update_fields=["jma_event"])
    label = tr("ja", "Automatic")
    assert 'id="incident-automatic"' in text_of(crisis.get(f"/acme/safety/incidents/{automatic.id}/"))
    html = text_of(crisis.get(f"/acme/safety/incidents/{manual.id}/"))
    assert 'id="incident-automatic"' not in html and f">{label}<" not in html


# --- The rules and drill mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ja", "en"])
def test_rules_page_lists_each_rule_with_the_preset_marked(world: World, language: str) -> None:
    tsunami = autodispatch.rule_create(
        organization=world.org,
        actor=world.crisis,
        name="能登の海岸",
        hazard="tsunami",
        areas=["360"],
        tsunami_level="major",
        target_mode="chosen",
        department_ids=[world.factory.id],
        person_ids=[world.tokyo.id],
        enabled=False,
        hold_minutes=10,
    )
    client = signed_in(world.person(Role.CRISIS_MANAGER, language=language))
    html = text_of(client.get("/acme/safety/auto/"))
    cards = dict(re.findall(r'<li class="card rule-card[^"]*" data-id="(\d+)">(.*?)</li>', html, re.S))
    preset, coast = cards[str(world.preset.id)], cards[str(tsunami.id)]
    assert tr(language, "Preset") in preset and tr(language, "Preset") not in coast
    assert autodispatch.PRESET_NAME in preset
    assert tr(language, "Intensity %(level)s or more", level=tr(language, "5 Upper")) in preset
    assert tr(language, "Anywhere in Japan") in preset
    assert tr(language, "People based in the places hit") in preset
    assert tr(language, "Enabled") in preset and tr(language, "At once") in preset
    assert "能登の海岸" in coast and "石川県能登" in coast
    assert tr(language, "%(level)s or higher", level=tr(language, "Major tsunami warning")) in coast
    assert "能登工場" in coast and "東京 三郎" in coast
    assert tr(language, "Disabled") in coast and ntr(language, "%(n)d minute", "%(n)d minutes", 10) in coast
    for link in ("rules/new/", "verify/", "replay/", "log/"):
        assert f'href="/acme/safety/auto/{link}"' in html
    assert tr(language, "Drill mode (訓練モード)") in html


def test_drill_mode_switch_turns_on_and_off_with_a_message(world: World, crisis: Client) -> None:
    assert autodispatch.safety_settings(world.org).drill_mode is False
    page = text_of(crisis.get("/acme/safety/auto/"))
    assert tr("ja", "Turn drill mode on") in page and 'class="switch-state switch-off"' in page
    response = crisis.post("/acme/safety/auto/", {"drill_mode": "on"})
    assert response.status_code == 302 and response["Location"] == "/acme/safety/auto/"
    assert autodispatch.safety_settings(world.org).drill_mode is True
    page = text_of(crisis.get("/acme/safety/auto/"))
    assert tr("ja", "Drill mode is on: drill messages (訓練) are sent as drills.") in page
    assert tr("ja", "Turn drill mode off") in page and 'class="switch-state switch-on"' in page
    crisis.post("/acme/safety/auto/", {"drill_mode": "off"})
    assert autodispatch.safety_settings(world.org).drill_mode is False


# --- The rule form --------------------------------------------------------------------------------------


def test_form_offers_every_prefecture_level_kind_department_and_template(world: World, crisis: Client) -> None:
    html = text_of(crisis.get("/acme/safety/auto/rules/new/"))
    assert len(re.findall(r'name="prefectures" value="\d\d"', html)) == 47
    assert "石川県" in html and "沖縄県" in html and tr("ja", "Kyushu and Okinawa") in html
    intensities = re.findall(r'<select id="f-intensity" name="min_intensity">(.*?)</select>', html, re.S)[0]
    assert re.findall(r'value="([^"]+)"', intensities) == ["1", "2", "3", "4", "5-", "5+", "6-", "6+", "7"]
    assert 'value="5+" selected' in intensities  # the default threshold
    assert tr("ja", "Intensity %(level)s or more", level=tr("ja", "5 Lower")) in intensities
    assert len(re.findall(r'name="special_kinds" value="\d\d"', html)) == 7
    assert f'name="department_ids" value="{world.factory.id}"' in html and "能登工場" in html
    assert f'<option value="{world.template.id}">地震（自動）</option>' in html
    assert 'name="questions" value="default" checked' in html
    assert 'name="target_mode" value="based" checked' in html
    assert "あなたの安否" in html  # the default questions, shown


def test_adding_a_rule_through_the_form(world: World, crisis: Client) -> None:
    response = crisis.post(
        "/acme/safety/auto/rules/new/",
        rule_post(questions="none", template_id=str(world.template.id), special_kinds=["33"]),
    )
    assert response.status_code == 302 and response["Location"] == "/acme/safety/auto/"
    rule = DispatchRule.objects.get(organization=world.org, name="北陸の拠点")
    assert rule.hazard == "earthquake" and rule.enabled and not rule.is_preset
    assert rule.prefectures == [TOYAMA, ISHIKAWA] and rule.areas == ["390"]
    assert rule.min_intensity == "6-" and rule.target_mode == "based"
    assert rule.questions == [] and rule.template_id == world.template.id
    assert rule.hold_minutes == 10 and rule.suppress_minutes == 30
    page = text_of(crisis.get("/acme/safety/auto/"))
    assert tr("ja", "The rule “%(name)s” has been added.", name="北陸の拠点") in page
    assert "北陸の拠点" in page


def test_adding_a_chosen_rule_by_department_and_login_id(world: World, crisis: Client) -> None:
    response = crisis.post(
        "/acme/safety/auto/rules/new/",
        rule_post(
            name="本社へ",
            target_mode="chosen",
            department_ids=[str(world.factory.id)],
            people="tokyo\nwajima 輪島 一郎\n",
            areas="",
            prefectures=[],
            questions="default",
            hold_minutes="0",
            suppress_minutes="0",
        ),
    )
    assert response.status_code == 302
    rule = DispatchRule.objects.get(name="本社へ")
    assert rule.department_ids == [world.factory.id]
    assert rule.person_ids == sorted([world.tokyo.id, world.wajima.id])
    assert rule.questions is None and rule.prefectures == [] and rule.areas == []
    html = text_of(crisis.get(f"/acme/safety/auto/rules/{rule.id}/"))
    assert 'name="target_mode" value="chosen" checked' in html
    assert f'name="department_ids" value="{world.factory.id}" checked' in html
    assert "tokyo\nwajima</textarea>" in html and "東京 三郎" in html


def test_changing_a_rule_through_the_form(world: World, crisis: Client) -> None:
    form = text_of(crisis.get(f"/acme/safety/auto/rules/{world.preset.id}/"))
    assert f'value="{autodispatch.PRESET_NAME}"' in form and 'value="5+" selected' in form
    response = crisis.post(
        f"/acme/safety/auto/rules/{world.preset.id}/",
        rule_post(
            name="能登の津波",
            hazard="tsunami",
            areas="360\n石川県加賀",
            prefectures=[],
            tsunami_level="major",
            enabled=None,
        ),
    )
    assert response.status_code == 302 and response["Location"] == "/acme/safety/auto/"
    world.preset.refresh_from_db()
    assert world.preset.name == "能登の津波" and world.preset.hazard == "tsunami"
    assert world.preset.areas == ["360", "361"] and world.preset.tsunami_level == "major"
    assert world.preset.enabled is False and world.preset.is_preset  # still the preset, now switched off
    page = text_of(crisis.get("/acme/safety/auto/"))
    assert tr("ja", "The rule “%(name)s” has been saved.", name="能登の津波") in page
    form = text_of(crisis.get(f"/acme/safety/auto/rules/{world.preset.id}/"))
    assert "360 石川県能登\n361 石川県加賀</textarea>" in form


def test_a_rule_with_its_own_questions_keeps_them_unless_told_otherwise(world: World, crisis: Client) -> None:
    questions = [q for q in default_questions() if q["key"] in ("safety", "help")]
    autodispatch.rule_update(rule=world.preset, actor=world.crisis, questions=questions)
    html = text_of(crisis.get(f"/acme/safety/auto/rules/{world.preset.id}/"))
    assert 'name="questions" value="custom" checked' in html
    crisis.post(f"/acme/safety/auto/rules/{world.preset.id}/", rule_post(questions="custom"))
    world.preset.refresh_from_db()
    assert [q["key"] for q in world.preset.questions] == ["safety", "help"]
    crisis.post(f"/acme/safety/auto/rules/{world.preset.id}/", rule_post(questions="default"))
    world.preset.refresh_from_db()
    assert world.preset.questions is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "  "}, "A rule needs a name (at most 100 characters)."),
        ({"hazard": "volcano"}, "Choose earthquake, tsunami or special warning."),
        ({"min_intensity": "8"}, "Choose an intensity from 1 to 7."),
        ({"target_mode": "chosen"}, "Choose at least one department or person."),
        ({"hold_minutes": "ten"}, "%(what)s is a whole number of minutes from 0 to %(max)d."),
        ({"suppress_minutes": "99999"}, "%(what)s is a whole number of minutes from 0 to %(max)d."),
        ({"prefectures": ["99"]}, "Unknown %(what)s: %(codes)s"),
        ({"areas": "石川県のどこか"}, "Unknown area: %(codes)s"),
        ({"people": "nobody-here"}, "Unknown login ID: %(ids)s"),
        ({"template_id": "999999"}, "Unknown message template."),
    ],
)
def test_a_bad_rule_re_renders_the_form_with_the_error_and_stores_nothing(
    world: World, crisis: Client, overrides: dict[str, Any], message: str
) -> None:
    before = list(DispatchRule.objects.values_list("id", "name", "hazard", "min_intensity", "hold_minutes"))
    for url in ("/acme/safety/auto/rules/new/", f"/acme/safety/auto/rules/{world.preset.id}/"):
        response = crisis.post(url, rule_post(**overrides))
        assert response.status_code == 400, url
        html = text_of(response)
        error = re.search(r'<p class="error" role="alert" id="form-error" tabindex="-1">(.*?)</p>', html, re.S)
        assert error, html[:2000]
        first = tr("ja", message).split("%(")[0]
        assert first.strip()[:8] in error.group(1), (error.group(1), message)
        # What was typed is still there.
        if overrides.get("name") is None:
            assert 'value="北陸の拠点"' in html
    assert list(DispatchRule.objects.values_list("id", "name", "hazard", "min_intensity", "hold_minutes")) == before


def test_deleting_a_rule_asks_first(world: World, crisis: Client) -> None:
    page = text_of(crisis.get(f"/acme/safety/auto/rules/{world.preset.id}/delete/"))
    assert autodispatch.PRESET_NAME in page and 'id="delete-confirm"' in page
    assert DispatchRule.objects.filter(id=world.preset.id).exists()  # asking deletes nothing
    response = crisis.post(f"/acme/safety/auto/rules/{world.preset.id}/delete/")
    assert response.status_code == 302 and response["Location"] == "/acme/safety/auto/"
    assert not DispatchRule.objects.filter(id=world.preset.id).exists()
    page = text_of(crisis.get("/acme/safety/auto/"))
    assert tr("ja", "The rule “%(name)s” has been deleted.", name=autodispatch.PRESET_NAME) in page
    assert 'id="rules-empty"' in page
    assert crisis.get(f"/acme/safety/auto/rules/{world.preset.id}/").status_code == 404


def test_forms_without_the_csrf_token_are_refused(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.crisis)
    assert client.post("/acme/safety/auto/", {"drill_mode": "on"}).status_code == 403
    assert client.post(f"/acme/safety/auto/rules/{world.preset.id}/delete/").status_code == 403
    assert autodispatch.safety_settings(world.org).drill_mode is False
    assert DispatchRule.objects.filter(id=world.preset.id).exists()


# --- Verify ---------------------------------------------------------------------------------------------


def people_listed(html: str) -> list[str]:
    return re.findall(r'<tr data-login="([^"]+)"', html)


def test_verify_shows_who_intensity_6_lower_in_ishikawa_reaches_and_sends_nothing(world: World, crisis: Client) -> None:
    response = crisis.post(
        "/acme/safety/auto/verify/", {"hazard": "earthquake", "area_earthquake": ISHIKAWA, "level_earthquake": "6-"}
    )
    assert response.status_code == 200
    html = text_of(response)
    assert sorted(people_listed(html)) == ["kanazawa", "wajima"]
    assert "輪島 一郎" in html and "石川県" in html
    fired = re.search(r'<ul class="rules-fired" id="rules-fired">(.*?)</ul>', html, re.S)
    assert fired and autodispatch.PRESET_NAME in fired.group(1)
    assert (
        tr("ja", "Nothing is sent. This shows who today's rules and directory would reach if JMA reported this now.")
        in html
    )
    assert 'class="decision-tag decision-dispatch"' in html
    assert Incident.objects.count() == 0 and JmaDecision.objects.count() == 0 and Recipient.objects.count() == 0


def test_verify_below_the_threshold_says_nobody_and_why(world: World, crisis: Client) -> None:
    html = text_of(
        crisis.post(
            "/acme/safety/auto/verify/", {"hazard": "earthquake", "area_earthquake": ISHIKAWA, "level_earthquake": "5-"}
        )
    )
    assert people_listed(html) == []
    assert tr("ja", "Nobody would receive it.") in html
    assert escape(tr("ja", "Below every rule's threshold")) in html
    assert tr("ja", "No rule fires.") in html


def test_verify_a_chosen_rule_and_a_finer_area(world: World, crisis: Client) -> None:
    rule = autodispatch.rule_create(
        organization=world.org,
        actor=world.crisis,
        name="能登工場へ",
        hazard="earthquake",
        areas=["390"],
        min_intensity="4",
        target_mode="chosen",
        department_ids=[world.factory.id],
    )
    html = text_of(
        crisis.post(
            "/acme/safety/auto/verify/", {"hazard": "earthquake", "area_earthquake": "390", "level_earthquake": "4"}
        )
    )
    assert people_listed(html) == ["osaka"]  # the factory's person, wherever they are based
    assert f'href="/acme/safety/auto/rules/{rule.id}/">能登工場へ</a>' in html
    fired = re.search(r'id="rules-fired">(.*?)</ul>', html, re.S)
    assert fired and autodispatch.PRESET_NAME not in fired.group(1)


def test_verify_tsunami_and_special_warning(world: World, crisis: Client) -> None:
    autodispatch.rule_create(
        organization=world.org, actor=world.crisis, name="津波", hazard="tsunami", tsunami_level="warning"
    )
    autodispatch.rule_create(
        organization=world.org, actor=world.crisis, name="大雨", hazard="special_warning", special_kinds=["33"]
    )
    html = text_of(
        crisis.post("/acme/safety/auto/verify/", {"hazard": "tsunami", "area_tsunami": "360", "level_tsunami": "major"})
    )
    assert sorted(people_listed(html)) == ["kanazawa", "wajima"]
    # A municipality typed by name (輪島市 is in 石川県).
    html = text_of(
        crisis.post(
            "/acme/safety/auto/verify/",
            {
                "hazard": "special_warning",
                "pref_special_warning": TOYAMA,
                "city_special_warning": "石川県輪島市",
                "level_special_warning": "33",
            },
        )
    )
    assert sorted(people_listed(html)) == ["kanazawa", "wajima"]
    html = text_of(
        crisis.post(
            "/acme/safety/auto/verify/",
            {"hazard": "special_warning", "pref_special_warning": TOYAMA, "level_special_warning": "38"},
        )
    )
    assert people_listed(html) == [] and tr("ja", "Nobody would receive it.") in html


def test_verify_with_a_place_that_does_not_exist_says_so(world: World, crisis: Client) -> None:
    for data in (
        {"hazard": "earthquake", "area_earthquake": "999", "level_earthquake": "6-"},
        {"hazard": "earthquake", "area_earthquake": ISHIKAWA, "level_earthquake": "9"},
        {
            "hazard": "special_warning",
            "pref_special_warning": TOYAMA,
            "city_special_warning": "どこか",
            "level_special_warning": "33",
        },
        {"hazard": "volcano"},
    ):
        response = crisis.post("/acme/safety/auto/verify/", data)
        assert response.status_code == 400, data
        assert 'id="form-error"' in text_of(response) and 'id="verify-result"' not in text_of(response)
    inland = crisis.post(
        "/acme/safety/auto/verify/", {"hazard": "tsunami", "area_tsunami": "20", "level_tsunami": "major"}
    )
    assert inland.status_code == 400
    assert escape(tr("ja", "%(place)s has no coast (津波予報区).", place="長野県")) in text_of(inland)


# --- Replay ----------------------------------------------------------------------------------------------


def upload(path: Any, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type="application/xml")


def replay_items(html: str) -> list[tuple[str, str]]:
    """(decision, the card's HTML) per replayed document, in order."""
    return re.findall(r'<li class="card replay-item" data-decision="(\w+)">(.*?)</li>', html, re.S)


def test_replaying_noto_shows_the_rules_that_fire_and_the_people_and_stores_nothing(
    world: World, crisis: Client
) -> None:
    autodispatch.rule_create(
        organization=world.org,
        actor=world.crisis,
        name="富山なら東京も",
        hazard="earthquake",
        prefectures=[TOYAMA],
        min_intensity="5-",
        target_mode="chosen",
        person_ids=[world.tokyo.id],
    )
    vxse51 = shared_fixtures("jma") / NOTO_VXSE51
    response = crisis.post("/acme/safety/auto/replay/", {"files": [upload(vxse51), upload(NOTO_VXSE53)]})
    assert response.status_code == 200
    html = text_of(response)
    items = replay_items(html)
    assert [decision for decision, _ in items] == ["dispatch", "ignore"]
    first, second = items[0][1], items[1][1]
    assert vxse51.name in first and autodispatch.PRESET_NAME in first and "富山なら東京も" in first
    new = re.search(r'<dd class="new-people"><strong>(.*?)</strong>: (.*?)</dd>', first)
    assert new and new.group(1) == ntr("ja", "%(n)s person", "%(n)s people", 4)
    assert sorted(new.group(2).split("、")) == sorted(["輪島 一郎", "金沢 花子", "富山 次郎", "東京 三郎"])
    # The VXSE53 of the same quake: everyone it reaches was already asked by the VXSE51.
    assert NOTO_VXSE53.name in second and tr("ja", "Everyone it reaches was already notified") in second
    assert tr("ja", "What today's settings would have done") in html
    assert Incident.objects.count() == 0 and JmaDecision.objects.count() == 0 and JmaDocument.objects.count() == 0
    assert Delivery.objects.count() == 0


def test_replaying_a_file_that_is_not_jma_names_it(world: World, crisis: Client) -> None:
    bad = SimpleUploadedFile("kaigi.xml", b"<html>not jma</html>", content_type="application/xml")
    response = crisis.post("/acme/safety/auto/replay/", {"files": [upload(NOTO_VXSE53), bad]})
    assert response.status_code == 400
    html = text_of(response)
    error = re.search(r'<p class="error" role="alert" id="form-error">(.*?)</p>', html, re.S)
    assert error and "kaigi.xml" in error.group(1)
    assert 'id="replay-results"' not in html
    nothing = crisis.post("/acme/safety/auto/replay/", {})
    assert nothing.status_code == 400
    assert tr("ja", "Choose at least one JMA XML file or stored report.") in text_of(nothing)


def test_replaying_stored_reports_oldest_first_with_a_drill_mode_override(world: World, crisis: Client) -> None:
    vxse51 = (shared_fixtures("jma") / NOTO_VXSE51).read_bytes()
    drill = vxse51.replace("<Status>通常</Status>".encode(), "<Status>訓練</Status>".encode(), 1)
    real = jma_document_ingest(url="https://example.jp/noto51.xml", raw=vxse51, source="file")
    practice = jma_document_ingest(url="https://example.jp/noto51-drill.xml", raw=drill, source="file")
    Incident.objects.all().delete()  # what the ingest sent is not what this test is about
    page = text_of(crisis.get("/acme/safety/auto/replay/?kind=earthquake"))
    assert f'name="document_ids" value="{real.id}"' in page and f'name="document_ids" value="{practice.id}"' in page
    assert text_of(crisis.get("/acme/safety/auto/replay/?kind=tsunami")).count('name="document_ids"') == 0

    html = text_of(crisis.post("/acme/safety/auto/replay/", {"document_ids": [str(practice.id)]}))
    [(decision, body)] = replay_items(html)
    assert decision == "ignore" and tr("ja", "Drill message (訓練) while drill mode is off") in body
    html = text_of(crisis.post("/acme/safety/auto/replay/", {"document_ids": [str(practice.id)], "drill_mode": "on"}))
    [(decision, body)] = replay_items(html)
    assert decision == "dispatch" and 'class="drill-tag"' in body and "輪島 一郎" in body
    assert 'value="on" selected' in html  # the override is kept for the next run
    assert Incident.objects.count() == 0
    assert autodispatch.safety_settings(world.org).drill_mode is False


# --- The log ---------------------------------------------------------------------------------------------


def test_log_lists_the_decisions_newest_first_with_reasons_rules_and_incidents(
    world: World, crisis: Client, django_capture_on_commit_callbacks: Any
) -> None:
    vxse51 = (shared_fixtures("jma") / NOTO_VXSE51).read_bytes()
    with django_capture_on_commit_callbacks(execute=True):  # the ingest decides after commit
        jma_document_ingest(url="https://example.jp/noto51.xml", raw=vxse51, source="file")
    with django_capture_on_commit_callbacks(execute=True):
        jma_document_ingest(url="https://example.jp/noto53.xml", raw=NOTO_VXSE53.read_bytes(), source="file")
    first, second = JmaDecision.objects.filter(organization=world.org).order_by("id")
    assert first.decision == "dispatch" and first.incident_ids
    html = text_of(crisis.get("/acme/safety/auto/log/"))
    rows = re.findall(r'<tr data-id="(\d+)" data-decision="(\w+)">(.*?)</tr>', html, re.S)
    assert [(int(i), d) for i, d, _ in rows] == [(second.id, second.decision), (first.id, "dispatch")]
    dispatched = rows[1][2]
    assert "震度速報" in dispatched and autodispatch.PRESET_NAME in dispatched
    assert f'href="/acme/safety/incidents/{first.incident_ids[0]}/"' in dispatched
    assert tr("ja", "A new safety check") in dispatched and first.reason in dispatched
    assert re.search(r'class="num"[^>]*>3</td>', dispatched)  # 輪島, 金沢 (石川県) and 富山
    assert tr("ja", "Everyone it reaches was already notified") in rows[0][2]


def test_log_pages_fifty_at_a_time(world: World, crisis: Client, other_org: Organization) -> None:
    now = timezone.now()
    for n in range(52):
        document = JmaDocument.objects.create(
            url=f"https://example.jp/{n}.xml",
            source="file",
            raw=b"",
            sha256=f"{n}",
            title=f"文書{n}",
            status="訓練" if n == 51 else "通常",
            info_type="発表",
            kind="earthquake",
        )
        JmaDecision.objects.create(
            organization=world.org,
            document=document,
            decided_at=now - timedelta(minutes=100 - n),
            decision="ignore",
            reason="below",
            reason_code="below_threshold",
        )
    JmaDecision.objects.create(
        organization=other_org, document=document, decision="ignore", reason="theirs", reason_code="no_rule"
    )
    first = text_of(crisis.get("/acme/safety/auto/log/"))
    assert first.count("<tr data-id=") == 50 and "文書51" in first and "文書1<" not in first
    assert 'class="drill-tag">訓練<' in first and "theirs" not in first
    second = text_of(crisis.get("/acme/safety/auto/log/?page=2"))
    assert second.count("<tr data-id=") == 2 and "文書0<" in second and "文書1<" in second
    assert tr("ja", "Page %(n)s of %(total)s", n=2, total=2) in second


def test_an_empty_log_says_so(world: World, crisis: Client) -> None:
    html = text_of(crisis.get("/acme/safety/auto/log/"))
    assert 'id="log-empty"' in html and "<tr data-id=" not in html


def test_a_dispatch_on_hold_is_stopped_from_the_log(
    world: World, crisis: Client, django_capture_on_commit_callbacks: Any
) -> None:
    autodispatch.rule_update(rule=world.preset, actor=None, hold_minutes=10)
    with django_capture_on_commit_callbacks(execute=True):
        document = jma_document_ingest(
            url="https://example.invalid/hold.xml",
            raw=(shared_fixtures("jma") / NOTO_VXSE51).read_bytes(),
            source="pull",
        )
    decision = JmaDecision.objects.get(organization=world.org, document=document)
    page = crisis.get("/acme/safety/auto/log/").content.decode()
    assert 'name="action" value="cancel"' in page and f'name="decision" value="{decision.id}"' in page
    response = crisis.post("/acme/safety/auto/log/", {"decision": str(decision.id), "action": "cancel"})
    assert response.status_code == 302
    decision.refresh_from_db()
    assert decision.executed_at is not None and not Incident.objects.filter(organization=world.org).exists()
    page = crisis.get("/acme/safety/auto/log/").content.decode()
    assert 'value="cancel"' not in page
    bad = crisis.post("/acme/safety/auto/log/", {"decision": "²", "action": "cancel"})
    assert bad.status_code == 302
