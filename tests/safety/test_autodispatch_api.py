"""The automatic-dispatch REST API under /<slug>/api/safety/auto/: who may use it, rules and their validation,
the preset rule of a new organisation, the drill-mode switch, verification (検証) and replay of real JMA
messages, uploaded or stored, which store and send nothing, broken uploads, the audit log and the documents.

Real PostgreSQL, the real JMA fixtures in ../shared/fixtures/jma, and the local push service (which must
receive nothing from a verification or a replay, and does receive the live dispatch of the same message)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from directory.models import Organization, Role, User
from directory.services import organization_create
from safety import autodispatch
from safety.jma.ingest import jma_document_ingest
from safety.models import (
    Delivery,
    Dispatch,
    DispatchRule,
    Incident,
    JmaDecision,
    JmaDocument,
    MessageTemplate,
    SafetySettings,
)
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import safety_person, subscribe
from tests.services import shared_fixtures

pytestmark = pytest.mark.django_db

NOTO_VXSE51 = "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
NOTO_AFTERSHOCK = "earthquake/REAL_2024-01-01_noto_aftershock_vxse51_max3__IntensityReportS.xml"
TOHOKU_TSUNAMI = "tsunami/tohoku2011_vtse41_1449_MAJOR_iwate_miyagi_fukushima__32-39_11_02_250206_VTSE41.xml"
NARA_SPECIAL = "weather/nara2011_vpww53_SPECIAL_heavyrain_issued__15_08_01_130412_VPWW53.xml"
TRAINING_TSUNAMI = "tsunami/TRAINING_nankai2016_vtse41_MAJOR_29areas__32-39_12_02_250206_VTSE41.xml"
BASE = "/acme/api/safety/auto/"

XXE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Report [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>&xxe;</Title></Control></Report>"""


def fixture(name: str) -> Path:
    return shared_fixtures("jma") / name


def upload(name: str, raw: bytes | None = None) -> SimpleUploadedFile:
    data = raw if raw is not None else fixture(name).read_bytes()
    return SimpleUploadedFile(Path(name).name, data, content_type="application/xml")


def ingest(name: str, django_capture_on_commit_callbacks: Any) -> JmaDocument:
    """Store a real document as the poller would; after commit it is DECIDED for every organisation."""
    with django_capture_on_commit_callbacks(execute=True):
        return jma_document_ingest(
            url=f"https://example.invalid/{Path(name).name}", raw=fixture(name).read_bytes(), source="pull"
        )


def rule(org: Organization, **fields: Any) -> DispatchRule:
    fields.setdefault("name", f"{fields.get('hazard', 'earthquake')} rule")
    fields.setdefault("hazard", "earthquake")
    return autodispatch.rule_create(organization=org, actor=None, **fields)


def post(client: Client, path: str, body: Any) -> Any:
    return client.post(BASE + path, body, content_type="application/json")


def snapshot() -> dict[str, Any]:
    """What a verification or replay must leave as it was."""
    return {
        "incidents": Incident.objects.count(),
        "dispatches": Dispatch.objects.count(),
        "deliveries": Delivery.objects.count(),
        "decisions": JmaDecision.objects.count(),
        "documents": JmaDocument.objects.count(),
        "rules": sorted(DispatchRule.objects.values_list("id", "updated_at")),
        "settings": sorted(SafetySettings.objects.values_list("organization_id", "drill_mode", "jma_state")),
    }


@pytest.fixture
def crisis_client(org: Organization) -> Client:
    """A crisis manager who reads English, so that messages can be compared with their msgids."""
    return signed_in(factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,), language="en"))


@pytest.fixture
def noto_people(org: Organization) -> dict[str, User]:
    """People based in 石川 (17), 新潟 (15), 東京 (13); one in 石川 without a safety ID, one who left."""
    sales = factories.department(org, "SALES")
    people = {
        "kanazawa": safety_person(org, "kanazawa", region_code="17", department=sales),
        "wajima": safety_person(org, "wajima", region_code="17"),
        "niigata": safety_person(org, "niigata", region_code="15"),
        "tokyo": safety_person(org, "tokyo", region_code="13"),
        "no-anpi": safety_person(org, "no-anpi", region_code="17", anpi=False),
        "left": safety_person(org, "left", region_code="17"),
    }
    people["left"].is_active = False
    people["left"].save(update_fields=["is_active"])
    return people


# --- who may use it -----------------------------------------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, Any]] = [
    ("get", "rules/", None),
    ("post", "rules/", {"name": "n", "hazard": "earthquake"}),
    ("get", "rules/{r}/", None),
    ("patch", "rules/{r}/", {"name": "changed"}),
    ("delete", "rules/{r}/", None),
    ("get", "settings/", None),
    ("put", "settings/", {"drill_mode": True}),
    ("patch", "settings/", {"drill_mode": True}),
    ("post", "verify/", {"hazard": "earthquake", "area": "17", "level": "6-"}),
    ("post", "replay/", {"document_ids": [1]}),
    ("get", "decisions/", None),
    ("get", "documents/", None),
]


def call(client: Client, method: str, path: str, body: Any, *, slug: str = "acme", r: int = 0) -> Any:
    url = f"/{slug}/api/safety/auto/" + path.format(r=r)
    if body is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, body, content_type="application/json")


@pytest.mark.parametrize("role", [None, Role.MANAGER, Role.DEPARTMENT_MANAGER, Role.SYSTEM_ADMIN, Role.ADMIN_GOTALK])
def test_everyone_but_crisis_managers_and_safety_admins_gets_403_and_changes_nothing(org, role):
    theirs = rule(org, name="mine")
    client = signed_in(factories.person(org, "someone", roles=(role,) if role else ()))
    before = snapshot()
    for method, path, body in ENDPOINTS:
        response = call(client, method, path, body, r=theirs.id)
        assert response.status_code == 403, (role, method, path, response.status_code)
        assert response.json()["code"] == "permission_denied"
    assert snapshot() == before and DispatchRule.objects.get(id=theirs.id).name == "mine"


def test_anonymous_callers_are_refused_as_the_other_safety_apis_do(org):
    theirs = rule(org)
    for method, path, body in ENDPOINTS:
        response = call(Client(), method, path, body, r=theirs.id)
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["code"] == "not_authenticated"
    assert DispatchRule.objects.filter(id=theirs.id).exists()


@pytest.mark.parametrize("role", [Role.CRISIS_MANAGER, Role.ADMIN_ANPI])
def test_crisis_managers_and_safety_admins_may_use_every_endpoint(org, role, django_capture_on_commit_callbacks):
    document = ingest(NOTO_VXSE51, django_capture_on_commit_callbacks)
    client = signed_in(factories.person(org, "boss", roles=(role,)))
    mine = rule(org)
    for method, path, body in ENDPOINTS:
        if path == "replay/":
            body = {"document_ids": [document.id]}
        want = 204 if method == "delete" else 201 if (method, path) == ("post", "rules/") else 200
        response = call(client, method, path, body, r=mine.id)
        assert response.status_code == want, (method, path, response.status_code, response.content[:300])


def test_another_organisations_rules_are_404_and_stay_as_they_are(org, other_org, crisis_client):
    theirs = rule(other_org, name="theirs")
    for method, path, body in ENDPOINTS:
        if "{r}" in path:
            response = call(crisis_client, method, path, body, r=theirs.id)
            assert response.status_code == 404, (method, path, response.status_code)
    for method, path, body in ENDPOINTS:  # and everything under their slug
        assert call(crisis_client, method, path, body, slug="globex", r=theirs.id).status_code == 404, path
    theirs.refresh_from_db()
    assert theirs.name == "theirs" and crisis_client.get(BASE + "rules/").json()["rules"] == []
    assert not SafetySettings.objects.filter(organization=other_org, drill_mode=True).exists()


# --- rules ------------------------------------------------------------------------------------------------------


def test_a_rule_is_created_read_listed_changed_and_deleted(org, crisis_client, tree):
    template = MessageTemplate.objects.create(organization=org, name="地震", title="地震", body="本文")
    person = safety_person(org, "chosen")
    body = {
        "name": "本社 震度5弱",
        "hazard": "earthquake",
        "prefectures": ["13", "14"],
        "areas": ["390"],
        "min_intensity": "5-",
        "target_mode": "chosen",
        "department_ids": [tree.sales.id],
        "person_ids": [person.id],
        "template_id": template.id,
        "hold_minutes": 10,
        "suppress_minutes": 30,
    }
    created = post(crisis_client, "rules/", body)
    assert created.status_code == 201, created.content
    data = created.json()
    assert set(data) == {
        "id", "name", "hazard", "enabled", "prefectures", "areas", "min_intensity", "tsunami_level",
        "special_kinds", "target_mode", "department_ids", "person_ids", "questions", "template_id",
        "hold_minutes", "suppress_minutes", "is_preset", "created_at", "updated_at",
    }  # fmt: skip
    assert {k: data[k] for k in body} == body
    assert data["enabled"] is True and data["is_preset"] is False and data["questions"] is None
    url = f"rules/{data['id']}/"
    assert crisis_client.get(BASE + url).json() == data
    listed = crisis_client.get(BASE + "rules/").json()
    assert listed == {"rules": [data], "drill_mode": False}

    changed = crisis_client.patch(BASE + url, {"enabled": False, "hold_minutes": 0}, content_type="application/json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["enabled"] is False and changed.json()["hold_minutes"] == 0
    assert changed.json()["name"] == "本社 震度5弱"  # the fields not given stay
    stored = DispatchRule.objects.get(id=data["id"])
    assert not stored.enabled and stored.hold_minutes == 0 and stored.suppress_minutes == 30

    assert crisis_client.delete(BASE + url).status_code == 204
    assert not DispatchRule.objects.exists()
    assert crisis_client.get(BASE + url).status_code == 404


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prefectures": ["48"]}, "Unknown prefecture: 48"),
        ({"prefectures": "17"}, "must be a list of codes"),
        ({"hazard": "special_warning", "areas": ["390"]}, "Unknown area: 390"),  # a 細分区域, not a municipality
        ({"areas": ["1720100"]}, "Unknown area: 1720100"),  # a municipality, not a 細分区域
        ({"hazard": "volcano"}, "Choose earthquake, tsunami or special warning"),
        ({"min_intensity": "8"}, "Choose an intensity from 1 to 7"),
        ({"min_intensity": 5}, "Choose an intensity from 1 to 7"),
        ({"tsunami_level": "huge"}, "Choose a tsunami level"),
        ({"special_kinds": ["34"]}, "Unknown special-warning kind: 34"),
        ({"target_mode": "everyone"}, "Choose who the rule reaches"),
        ({"target_mode": "chosen"}, "Choose at least one department or person"),
        ({"target_mode": "chosen", "department_ids": ["1"]}, "must be a list of ids"),
        ({"person_ids": [True]}, "must be a list of ids"),
        ({"hold_minutes": 24 * 60 + 1}, "from 0 to 1440"),
        ({"hold_minutes": -1}, "from 0 to 1440"),
        ({"hold_minutes": True}, "from 0 to 1440"),  # a bool is not a number of minutes
        ({"suppress_minutes": "10"}, "from 0 to 1440"),
        ({"hold_minutes": 1.5}, "from 0 to 1440"),
        ({"name": ""}, "A rule needs a name"),
        ({"name": "x" * 101}, "A rule needs a name"),
        ({"template_id": 999999}, "Unknown message template"),
        ({"is_preset": True}, "Unknown field: is_preset"),
        ({"organization": 1}, "Unknown field: organization"),  # never reaches a service keyword
        ({"questions": [{"kind": "nonsense"}]}, "Question 1"),
        ({"questions": "safe?"}, "The questions must be a list."),
    ],
)
def test_every_field_of_a_rule_is_checked_and_nothing_is_stored(org, crisis_client, change, message):
    existing = rule(org, name="kept", min_intensity="6-")
    before = snapshot()
    body = {"name": "new", "hazard": "earthquake", **change}
    created = post(crisis_client, "rules/", body)
    assert created.status_code == 400, created.content
    assert created.json()["code"] == ("bad_questions" if "questions" in change else "bad_rule"), created.json()
    assert message in created.json()["message"]
    # the same checks apply to a change of an existing rule, which is left as it was
    changed = crisis_client.patch(BASE + f"rules/{existing.id}/", change, content_type="application/json")
    assert changed.status_code == 400, changed.content
    assert snapshot() == before
    existing.refresh_from_db()
    assert existing.name == "kept" and existing.min_intensity == "6-"


def test_people_and_departments_of_another_organisation_and_bodies_that_are_not_objects(org, other_org, crisis_client):
    their_department = factories.department(other_org, "THEIRS")
    their_person = safety_person(other_org, "their-person")
    their_template = MessageTemplate.objects.create(organization=other_org, name="t", title="t", body="b")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"target_mode": "chosen", "department_ids": [their_department.id]}, "departments are not in this"),
        ({"target_mode": "chosen", "person_ids": [their_person.id]}, "chosen people are not in this"),
        ({"template_id": their_template.id}, "Unknown message template"),
    ]
    for body, message in cases:
        response = post(crisis_client, "rules/", {"name": "n", "hazard": "earthquake", **body})
        assert response.status_code == 400 and message in response.json()["message"], response.content
    for raw in (["name"], "name", 5, None):
        response = post(crisis_client, "rules/", json.dumps(raw))
        assert response.status_code == 400 and response.json()["code"] == "bad_request", raw
    form = crisis_client.post(BASE + "rules/", {"name": "n", "hazard": "earthquake"})  # form-encoded
    assert form.status_code == 400 and form.json()["message"] == "Send a JSON object."
    assert not DispatchRule.objects.exists()


def test_changing_the_hazard_of_a_rule_is_checked_as_a_whole_rule(org, crisis_client):
    quake = rule(org, areas=["390"])
    # its 細分区域 mean nothing for a tsunami: they are dropped unless new areas come with the change
    moved = crisis_client.patch(BASE + f"rules/{quake.id}/", {"hazard": "tsunami"}, content_type="application/json")
    assert moved.status_code == 200 and moved.json()["areas"] == [] and moved.json()["hazard"] == "tsunami"
    wrong = crisis_client.patch(
        BASE + f"rules/{quake.id}/",
        {"hazard": "special_warning", "areas": ["360"]},
        content_type="application/json",
    )
    assert wrong.status_code == 400 and "Unknown area: 360" in wrong.json()["message"]
    assert DispatchRule.objects.get(id=quake.id).hazard == "tsunami"


def test_a_new_organisation_starts_with_the_preset_rule(db):
    created = organization_create(slug="newco", name="新会社", admin_email="admin@newco.example")
    client = signed_in(factories.person(created.organization, "crisis", roles=(Role.CRISIS_MANAGER,)))
    listed = client.get("/newco/api/safety/auto/rules/").json()
    assert listed["drill_mode"] is False
    [preset] = listed["rules"]
    assert preset["is_preset"] is True and preset["enabled"] is True
    assert (preset["hazard"], preset["min_intensity"], preset["target_mode"]) == ("earthquake", "5+", "based")
    assert preset["prefectures"] == [] and preset["areas"] == []  # any prefecture
    assert preset["hold_minutes"] == 0


# --- drill mode -------------------------------------------------------------------------------------------------


def test_drill_mode_is_switched_on_and_off(org, crisis_client):
    assert crisis_client.get(BASE + "settings/").json() == {"drill_mode": False, "escalate_after_minutes": 30}
    assert not SafetySettings.objects.exists()  # reading never creates the settings row
    on = crisis_client.put(BASE + "settings/", {"drill_mode": True}, content_type="application/json")
    assert on.status_code == 200 and on.json() == {"drill_mode": True, "escalate_after_minutes": 30}
    assert SafetySettings.objects.get(organization=org).drill_mode is True
    assert crisis_client.get(BASE + "settings/").json()["drill_mode"] is True
    assert crisis_client.get(BASE + "rules/").json()["drill_mode"] is True
    for bad in ({"drill_mode": "yes"}, {"drill_mode": 1}, {}, {"drill_mode": None}):
        response = crisis_client.patch(BASE + "settings/", bad, content_type="application/json")
        assert response.status_code == 400 and response.json()["message"] == "drill_mode must be true or false."
    assert SafetySettings.objects.get(organization=org).drill_mode is True
    off = crisis_client.patch(BASE + "settings/", {"drill_mode": False}, content_type="application/json")
    assert off.json()["drill_mode"] is False and SafetySettings.objects.get(organization=org).drill_mode is False


# --- verify -----------------------------------------------------------------------------------------------------


def test_verifying_intensity_6_lower_in_ishikawa_lists_exactly_the_people_based_there_and_the_preset(db):
    org = organization_create(slug="acme", name="ACME", admin_email="admin@acme.example").organization
    preset = DispatchRule.objects.get(organization=org, is_preset=True)
    department = factories.department(org, "NOTO")
    based = [safety_person(org, f"ishikawa{i}", region_code="17", department=department) for i in range(3)]
    safety_person(org, "toyama", region_code="16")
    safety_person(org, "no-region")
    safety_person(org, "no-anpi", region_code="17", anpi=False)
    client = signed_in(factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,)))
    before = snapshot()

    response = post(client, "verify/", {"hazard": "earthquake", "area": "17", "level": "6-"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["decision"] == "dispatch" and data["reason_code"] == "dispatch"
    assert data["rules"] == [{"id": preset.id, "name": preset.name}]
    assert data["count"] == 3
    assert data["people"] == [
        {"id": p.id, "login_id": p.login_id, "name": p.display_name, "department": department.name, "region_code": "17"}
        for p in based
    ]  # fmt: skip
    assert "石川県" in data["reason"]

    below = post(client, "verify/", {"hazard": "earthquake", "area": "17", "level": "5-"}).json()
    assert (below["decision"], below["count"], below["people"], below["rules"]) == ("ignore", 0, [], [])
    assert below["reason_code"] == "below_threshold" and below["reason"]
    assert snapshot() == before


def test_verify_by_area_coast_and_special_warning(org, crisis_client, noto_people):
    noto = rule(org, name="能登 5弱", areas=["390"], min_intensity="5-")
    rule(org, name="加賀 5弱", areas=["391"], min_intensity="5-")
    coast = rule(org, name="石川県能登の津波", hazard="tsunami", areas=["360"], tsunami_level="warning")
    rain = rule(org, name="石川の大雨特別警報", hazard="special_warning", prefectures=["17"], special_kinds=["33"])
    ishikawa = sorted(["kanazawa", "wajima"])
    before = snapshot()

    quake = post(crisis_client, "verify/", {"hazard": "earthquake", "area": "390", "level": "5-"}).json()
    assert quake["rules"] == [{"id": noto.id, "name": "能登 5弱"}]
    assert [p["login_id"] for p in quake["people"]] == ishikawa and quake["count"] == 2

    tsunami = post(crisis_client, "verify/", {"hazard": "tsunami", "area": "360", "level": "major"}).json()
    assert tsunami["decision"] == "dispatch" and tsunami["rules"] == [{"id": coast.id, "name": coast.name}]
    assert [p["login_id"] for p in tsunami["people"]] == ishikawa
    advisory = post(crisis_client, "verify/", {"hazard": "tsunami", "area": "360", "level": "advisory"}).json()
    assert advisory["decision"] == "ignore" and advisory["people"] == [] and advisory["rules"] == []

    special = post(crisis_client, "verify/", {"hazard": "special_warning", "area": "1720400", "level": "33"}).json()
    assert special["decision"] == "dispatch" and special["rules"] == [{"id": rain.id, "name": rain.name}]
    assert [p["login_id"] for p in special["people"]] == ishikawa
    other_kind = post(crisis_client, "verify/", {"hazard": "special_warning", "area": "17", "level": "32"}).json()
    assert other_kind["decision"] == "ignore" and other_kind["count"] == 0
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"hazard": "volcano", "area": "17", "level": "6-"}, "Choose earthquake, tsunami or special warning."),
        ({"hazard": "earthquake", "area": "99", "level": "6-"}, "unknown prefecture or 細分区域 '99'"),
        ({"hazard": "earthquake", "area": "17", "level": "8"}, "unknown intensity '8'"),
        ({"hazard": "tsunami", "area": "17", "level": "tiny"}, "unknown tsunami level 'tiny'"),
        ({"hazard": "tsunami", "area": "09", "level": "major"}, "has no coast"),  # 栃木県
        ({"hazard": "special_warning", "area": "1799999", "level": "33"}, "unknown prefecture or municipality"),
        ({"hazard": "special_warning", "area": "17", "level": "34"}, "unknown special-warning kind '34'"),
        ({"hazard": "earthquake", "area": 17, "level": "6-"}, "Choose an area."),
        ({"hazard": "earthquake", "area": "17"}, "Choose a level."),
    ],
)
def test_verify_refuses_unknown_hazards_areas_and_levels_with_a_clear_message(org, crisis_client, body, message):
    rule(org)
    response = post(crisis_client, "verify/", body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "bad_verify" and message in response.json()["message"]


def test_verify_lists_at_most_500_people_and_counts_them_all(org, crisis_client):
    rule(org)
    User.objects.bulk_create(
        User(organization=org, login_id=f"p{i:04d}", anpi_login_id=f"a{i:04d}", region_code="17", password="!")
        for i in range(520)
    )
    data = post(crisis_client, "verify/", {"hazard": "earthquake", "area": "17", "level": "7"}).json()
    assert data["count"] == 520 and len(data["people"]) == 500
    assert data["people"][0]["login_id"] == "p0000" and data["people"][-1]["login_id"] == "p0499"
    # a replay lists at most 500 login IDs per document too, and counts them all
    [line] = crisis_client.post(BASE + "replay/", {"files": [upload(NOTO_VXSE51)]}).json()["results"]
    assert line["count"] == 520 and len(line["new_targets"]) == 500 and line["new_targets"][-1] == "p0499"


# --- replay -----------------------------------------------------------------------------------------------------


def test_replaying_an_uploaded_noto_report_shows_who_and_which_rule_and_sends_nothing(
    org, crisis_client, noto_people, push_service, django_capture_on_commit_callbacks
):
    preset = autodispatch.preset_rule_create(org)
    tokyo_only = rule(org, name="東京 震度3", prefectures=["13"], min_intensity="3")
    rule(org, name="off", min_intensity="1", enabled=False)
    for person in noto_people.values():
        subscribe(push_service, person)
    autodispatch.drill_mode_set(organization=org, actor=None, drill_mode=False)
    before = snapshot()

    response = crisis_client.post(BASE + "replay/", {"files": [upload(NOTO_VXSE51)]})
    assert response.status_code == 200, response.content
    [line] = response.json()["results"]
    assert line["file"] == Path(NOTO_VXSE51).name
    assert (line["decision"], line["hazard"], line["drill"]) == ("dispatch", "earthquake", False)
    # 5強 or more in 石川 (6強) and 新潟 (6弱) reaches the people based there; 東京 (3) has its own rule
    assert line["new_targets"] == ["kanazawa", "niigata", "tokyo", "wajima"] and line["count"] == 4
    assert line["withdrawn_targets"] == [] and line["withdrawn_count"] == 0
    assert line["rules"] == [{"id": preset.id, "name": preset.name}, {"id": tokyo_only.id, "name": "東京 震度3"}]
    assert "石川県" in line["reason"]

    assert snapshot() == before and push_service.received == []
    # the same message arriving live does send: the assertion above could fail
    ingest(NOTO_VXSE51, django_capture_on_commit_callbacks)
    assert Incident.objects.filter(organization=org).count() == 1
    assert len(push_service.received) == 4


def test_replayed_files_see_each_other_in_order_but_no_earlier_run(org, crisis_client, noto_people):
    autodispatch.preset_rule_create(org)
    for _run in range(2):
        files = [upload(NOTO_VXSE51), upload(NOTO_VXSE51), upload(NOTO_AFTERSHOCK)]
        results = crisis_client.post(BASE + "replay/", {"files": files}).json()["results"]
        assert [r["decision"] for r in results] == ["dispatch", "ignore", "ignore"]
        assert results[1]["reason_code"] == "duplicate" and results[1]["count"] == 0 and results[1]["rules"] == []
        assert results[2]["reason_code"] == "below_threshold"


def test_a_drill_message_is_replayed_as_the_switch_or_the_request_says(org, crisis_client, noto_people):
    rule(org, name="津波", hazard="tsunami", tsunami_level="advisory")
    safety_person(org, "kochi", region_code="39")

    def replay(**extra: str) -> Any:
        return crisis_client.post(BASE + "replay/", {"files": [upload(TRAINING_TSUNAMI)], **extra})

    off = replay().json()["results"][0]
    assert (off["decision"], off["drill"], off["reason_code"]) == ("ignore", True, "drill")
    assert not SafetySettings.objects.exists()  # reading the switch for a replay never creates the row
    on = replay(drill_mode="true").json()["results"][0]
    assert (on["decision"], on["drill"], on["hazard"]) == ("dispatch", True, "tsunami") and "kochi" in on["new_targets"]
    autodispatch.drill_mode_set(organization=org, actor=None, drill_mode=True)
    assert replay().json()["results"][0]["decision"] == "dispatch"
    assert replay(drill_mode="false").json()["results"][0]["reason_code"] == "drill"
    bad = replay(drill_mode="maybe")
    assert bad.status_code == 400 and bad.json()["message"] == "drill_mode must be true or false."
    assert not Incident.objects.exists()


def test_stored_documents_are_replayed_by_id_in_the_order_given(
    org, crisis_client, noto_people, django_capture_on_commit_callbacks
):
    # Ingesting decides every stored document for every organisation, live: acme has no rule yet, so it logs
    # "no rule" and sends nothing.
    noto = ingest(NOTO_VXSE51, django_capture_on_commit_callbacks)
    aftershock = ingest(NOTO_AFTERSHOCK, django_capture_on_commit_callbacks)
    tsunami = ingest(TOHOKU_TSUNAMI, django_capture_on_commit_callbacks)
    assert list(JmaDecision.objects.values_list("reason_code", flat=True)) == ["no_rule"] * 3
    preset = autodispatch.preset_rule_create(org)
    before = snapshot()

    response = post(crisis_client, "replay/", {"document_ids": [aftershock.id, noto.id, tsunami.id, noto.id]})
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["file"] for r in results] == [aftershock.url, noto.url, tsunami.url, noto.url]
    assert [r["decision"] for r in results] == ["ignore", "dispatch", "ignore", "ignore"]
    assert [r["reason_code"] for r in results] == ["below_threshold", "dispatch", "no_rule", "duplicate"]
    assert results[1]["new_targets"] == ["kanazawa", "niigata", "wajima"]
    assert results[1]["rules"] == [{"id": preset.id, "name": preset.name}]
    # JSON may ask for drill mode too (a real report is the same either way)
    again = post(crisis_client, "replay/", {"document_ids": [noto.id], "drill_mode": True}).json()["results"]
    assert again[0]["new_targets"] == results[1]["new_targets"] and again[0]["drill"] is False
    assert post(crisis_client, "replay/", {"document_ids": [noto.id], "drill_mode": 1}).status_code == 400
    assert snapshot() == before and not Incident.objects.exists()


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([999999], "Unknown documents: 999999"),
        (["1"], "document_ids must be a list of document ids."),
        ([True], "document_ids must be a list of document ids."),
        ([10**20], "document_ids must be a list of document ids."),  # past a bigint: 400, not a database error
        ([1.0], "document_ids must be a list of document ids."),
        ([], "document_ids must be a list of document ids."),
        ("1", "document_ids must be a list of document ids."),
        ([1] * 51, "at most 50"),
    ],
)
def test_stored_document_ids_must_be_known_ids(org, crisis_client, ids, message):
    response = post(crisis_client, "replay/", {"document_ids": ids})
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]


def test_an_unknown_id_among_known_ones_is_named(org, crisis_client, django_capture_on_commit_callbacks):
    noto = ingest(NOTO_VXSE51, django_capture_on_commit_callbacks)
    response = post(crisis_client, "replay/", {"document_ids": [noto.id, noto.id + 1000, noto.id + 2000]})
    assert response.status_code == 400
    assert response.json() == {
        "code": "unknown_document",
        "message": f"Unknown documents: {noto.id + 1000}, {noto.id + 2000}",
    }


def test_broken_uploads_are_refused_with_the_file_named_and_change_nothing(
    org, crisis_client, noto_people, settings, push_service
):
    autodispatch.preset_rule_create(org)
    subscribe(push_service, noto_people["kanazawa"])
    settings.JMA_MAX_DOCUMENT_BYTES = 64 * 1024
    before = snapshot()
    cases = [
        ([upload("notes.txt", b"this is not XML at all")], 400, "jma_parse_error", "notes.txt"),
        ([upload("xxe.xml", XXE)], 400, "jma_parse_error", "xxe.xml"),
        ([upload("empty.xml", b"")], 400, "jma_empty", "empty.xml"),
        ([upload("blank.xml", b"  \n")], 400, "jma_empty", "blank.xml"),
        ([upload("big.xml", b"<" + b"x" * 64 * 1024)], 413, "jma_too_large", "big.xml"),
        # one bad file among good ones: nothing is replayed, the bad one is named
        ([upload(NOTO_VXSE51), upload("second.xml", b"<Report/>")], 400, "jma_parse_error", "second.xml"),
    ]
    for files, status, code, name in cases:
        response = crisis_client.post(BASE + "replay/", {"files": files})
        assert response.status_code == status, (name, response.status_code, response.content[:300])
        assert response.json()["code"] == code and name in response.json()["message"], response.json()
    xxe = crisis_client.post(BASE + "replay/", {"files": [upload("xxe.xml", XXE)]}).json()["message"]
    assert "XXE" in xxe and "root:" not in xxe
    nothing = crisis_client.post(BASE + "replay/", {})
    assert nothing.status_code == 400 and nothing.json()["code"] == "bad_replay"
    assert snapshot() == before and push_service.received == []


def test_at_most_50_files_are_replayed_at_a_time(org, crisis_client):
    raw = fixture(NOTO_VXSE51).read_bytes()
    before = snapshot()
    response = crisis_client.post(BASE + "replay/", {"files": [upload(f"f{i}.xml", raw) for i in range(51)]})
    assert response.status_code == 400
    assert response.json() == {"code": "too_many_files", "message": "Replay at most 50 documents at a time."}
    # over Django's own limit of files in one request (DATA_UPLOAD_MAX_NUMBER_FILES): a 400 too, never a 500
    response = crisis_client.post(BASE + "replay/", {"files": [upload(f"f{i}.xml", raw) for i in range(101)]})
    assert response.status_code == 400
    ok = crisis_client.post(BASE + "replay/", {"files": [upload(f"f{i}.xml", raw) for i in range(50)]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 50
    assert snapshot() == before


# --- the audit log and the documents --------------------------------------------------------------------------


def test_the_audit_log_lists_this_organisations_decisions_newest_first_with_reasons(
    org, other_org, crisis_client, noto_people, django_capture_on_commit_callbacks
):
    preset = autodispatch.preset_rule_create(org)
    autodispatch.preset_rule_create(other_org)
    noto = JmaDocument.objects.get(id=ingest(NOTO_VXSE51, django_capture_on_commit_callbacks).id)
    tsunami = ingest(TOHOKU_TSUNAMI, django_capture_on_commit_callbacks)
    incident = Incident.objects.get(organization=org)
    data = crisis_client.get(BASE + "decisions/").json()
    assert (data["count"], data["page"], data["per_page"], data["has_more"]) == (2, 1, 50, False)
    newest, oldest = data["decisions"]
    assert newest["document"]["id"] == tsunami.id and oldest["document"]["id"] == noto.id
    assert (newest["decision"], newest["reason_code"], newest["hazard"]) == ("ignore", "no_rule", "tsunami")
    assert newest["rules"] == [] and newest["new_count"] == 0 and "no rule" in newest["reason"]
    assert oldest["decision"] == "dispatch" and oldest["rules"] == [{"id": preset.id, "name": preset.name}]
    assert oldest["new_count"] == 3 and oldest["withdrawn_count"] == 0 and oldest["drill"] is False
    assert oldest["incident_ids"] == [incident.id] and oldest["executed_at"] and oldest["due_at"]
    assert oldest["document"] == {
        "id": noto.id,
        "title": "震度速報",
        "url": noto.url,
        "status": "通常",
        "info_type": "発表",
        "report_datetime": noto.report_datetime.isoformat(),
    }
    # a rule deleted since keeps its id in the log, without a name
    preset_id = preset.id
    preset.delete()
    assert crisis_client.get(BASE + "decisions/").json()["decisions"][1]["rules"] == [{"id": preset_id, "name": None}]
    assert JmaDecision.objects.filter(organization=other_org).count() == 2  # theirs are not listed


def test_the_audit_log_is_paged_by_50(org, crisis_client, django_capture_on_commit_callbacks):
    document = ingest(NOTO_VXSE51, django_capture_on_commit_callbacks)  # one "no rule" decision for acme
    other_docs = JmaDocument.objects.bulk_create(
        JmaDocument(url=f"u{i}", source="pull", raw=b"", sha256="", title=f"doc{i}", status="通常", info_type="発表",
                    kind="earthquake")
        for i in range(60)
    )  # fmt: skip
    start = timezone.now()
    JmaDecision.objects.bulk_create(
        JmaDecision(organization=org, document=d, decided_at=start + timedelta(seconds=i), decision="ignore",
                    reason=f"r{i}", reason_code="no_rule")
        for i, d in enumerate(other_docs)
    )  # fmt: skip
    first = crisis_client.get(BASE + "decisions/").json()
    assert first["count"] == 61 and first["has_more"] and len(first["decisions"]) == 50
    assert [d["reason"] for d in first["decisions"][:2]] == ["r59", "r58"]
    second = crisis_client.get(BASE + "decisions/?page=2").json()
    assert len(second["decisions"]) == 11 and not second["has_more"] and second["page"] == 2
    assert second["decisions"][-1]["document"]["id"] == document.id
    assert crisis_client.get(BASE + "decisions/?page=3").json()["decisions"] == []
    for bad in ("0", "x", "-1", "1.5", "١"):
        response = crisis_client.get(BASE + f"decisions/?page={bad}")
        assert response.status_code == 400 and response.json()["code"] == "bad_page", bad


def test_the_documents_to_replay_newest_first_by_kind(org, crisis_client, django_capture_on_commit_callbacks):
    noto = JmaDocument.objects.get(id=ingest(NOTO_VXSE51, django_capture_on_commit_callbacks).id)  # 2024
    tsunami = ingest(TOHOKU_TSUNAMI, django_capture_on_commit_callbacks)  # 2011
    special = ingest(NARA_SPECIAL, django_capture_on_commit_callbacks)  # 2011, later in the year
    documents = crisis_client.get(BASE + "documents/").json()["documents"]
    assert [d["id"] for d in documents] == [noto.id, special.id, tsunami.id]
    assert documents[0] == {
        "id": noto.id,
        "title": "震度速報",
        "kind": "earthquake",
        "type_code": "VXSE51",
        "status": "通常",
        "info_type": "発表",
        "event_ids": ["20240101161010"],
        "serial": noto.serial,
        "report_datetime": noto.report_datetime.isoformat(),
        "received_at": noto.received_at.isoformat(),
        "headline": noto.headline,
    }
    assert [d["id"] for d in crisis_client.get(BASE + "documents/?kind=tsunami").json()["documents"]] == [tsunami.id]
    assert [d["id"] for d in crisis_client.get(BASE + "documents/?kind=weather").json()["documents"]] == [special.id]
    bad = crisis_client.get(BASE + "documents/?kind=volcano")
    assert bad.status_code == 400 and bad.json()["code"] == "bad_kind"


def test_at_most_200_documents_are_listed(org, crisis_client):
    JmaDocument.objects.bulk_create(
        JmaDocument(url=f"u{i}", source="pull", raw=b"", sha256="", title=f"doc{i}", status="通常", info_type="発表",
                    kind="earthquake", report_datetime=timezone.now() - timedelta(minutes=i))
        for i in range(205)
    )  # fmt: skip
    documents = crisis_client.get(BASE + "documents/").json()["documents"]
    assert len(documents) == 200 and documents[0]["title"] == "doc0" and documents[-1]["title"] == "doc199"


def test_the_log_and_document_selectors_read_in_a_fixed_number_of_queries(
    org, django_capture_on_commit_callbacks, django_assert_num_queries
):
    from safety import selectors_auto

    autodispatch.preset_rule_create(org)
    for name in (NOTO_VXSE51, NOTO_AFTERSHOCK, TOHOKU_TSUNAMI):
        ingest(name, django_capture_on_commit_callbacks)
    with django_assert_num_queries(2):  # the count and the page, documents joined
        page = selectors_auto.decision_page(organization=org, page=1)
        assert [d.document.title for d in page.decisions][-1] == "震度速報"
    with django_assert_num_queries(1):
        assert len(selectors_auto.document_list()) == 3


def test_a_dispatch_on_hold_is_stopped_or_sent_now_through_the_api(
    org, crisis_client, noto_people, django_capture_on_commit_callbacks
):
    rule(org, name="10分保留", hold_minutes=10, min_intensity="5+")
    document = ingest(
        "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml",
        django_capture_on_commit_callbacks,
    )
    decision = JmaDecision.objects.get(organization=org, document=document)
    assert decision.executed_at is None and decision.due_at is not None

    employee = signed_in(factories.person(org, "plain"))
    assert employee.post(f"{BASE}decisions/{decision.id}/cancel/").status_code == 403
    response = crisis_client.post(f"{BASE}decisions/{decision.id}/cancel/")
    assert response.status_code == 200 and response.json()["executed_at"]
    assert "cancelled during the hold" in response.json()["reason"]
    again = crisis_client.post(f"{BASE}decisions/{decision.id}/send-now/")
    assert again.status_code == 409 and again.json()["code"] == "not_pending"
    assert not Incident.objects.filter(organization=org).exists()
    assert crisis_client.post(f"{BASE}decisions/999999/cancel/").status_code == 409


def test_another_organisations_held_dispatch_cannot_be_touched(
    org, other_org, crisis_client, django_capture_on_commit_callbacks
):
    rule(other_org, name="theirs", hold_minutes=10, min_intensity="5+")
    safety_person(other_org, "theirs-ishikawa", region_code="17")
    document = ingest(
        "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml",
        django_capture_on_commit_callbacks,
    )
    theirs = JmaDecision.objects.get(organization=other_org, document=document)
    assert crisis_client.post(f"{BASE}decisions/{theirs.id}/cancel/").status_code == 409
    assert crisis_client.post(f"{BASE}decisions/{theirs.id}/send-now/").status_code == 409
    theirs.refresh_from_db()
    assert theirs.executed_at is None
