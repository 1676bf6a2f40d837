"""Directory pages through the Django test client: search (without JavaScript), cards, the department tree,
the administrators' pages, phone links in the organisation's scheme, and the scheme's validation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.utils import translation

from config.errors import ApplicationError
from directory import people as people_service
from directory.models import Department, Organization, Role, User
from directory.services import phone_scheme_validate
from frontend import directory_views
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree(org: Organization) -> dict[str, Department]:
    head = people_service.department_create(organization=org, code="D100", name="本社", name_kana="ホンシャ")
    general = people_service.department_create(
        organization=org, code="D110", name="総務部", parent_id=head.id, phone_number="03-1234-1100"
    )
    sales = people_service.department_create(organization=org, code="D200", name="営業部")
    return {"head": head, "general": general, "sales": sales}


def colleague(org: Organization, login_id: str, **fields: Any) -> User:
    """A person made the way the page and the import make them, so their search text is filled in."""
    return people_service.person_create(organization=org, login_id=login_id, password="Init-1234", **fields)


@pytest.fixture
def hanako(org: Organization, tree: dict[str, Department]) -> User:
    return colleague(
        org,
        "hanako.yamada@acme.example",
        last_name="山田",
        first_name="花子",
        last_name_kana="ヤマダ",
        first_name_kana="ハナコ",
        department_id=tree["general"].id,
        position="課長",
        email="hanako.yamada@acme.example",
        phone_number="03-1234-1101",
        mobile_phone_number="090-1111-2222",
        extension_number="1101",
        region_code="13",
    )


@pytest.fixture
def ken(org: Organization, tree: dict[str, Department]) -> User:
    return colleague(
        org,
        "ken.sato@acme.example",
        last_name="佐藤",
        first_name="健",
        last_name_kana="サトウ",
        first_name_kana="ケン",
        department_id=tree["sales"].id,
        phone_number="06-5555-0000",
    )


def text(response: Any) -> str:
    return response.content.decode()


def in_language(language: str, message: str) -> str:
    with translation.override(language):
        return translation.gettext(message)


# --- Every page, in both languages -------------------------------------------------------------------


PAGES = [
    ("/acme/directory/", "Directory"),
    ("/acme/directory/?q=やまだ", "Directory"),
    ("/acme/directory/people/{hanako}/", None),
    ("/acme/directory/departments/", "Departments"),
    ("/acme/directory/people/new/", "Add a person"),
    ("/acme/directory/import/", "Import and export"),
]


@pytest.mark.parametrize("language", ["ja", "en"])
@pytest.mark.parametrize(("path", "heading"), PAGES)
def test_pages_render_in_japanese_and_english(
    admin: User, hanako: User, ken: User, language: str, path: str, heading: str | None
) -> None:
    User.objects.filter(pk=admin.pk).update(language=language)
    response = signed_in(admin).get(path.format(hanako=hanako.id))
    assert response.status_code == 200
    body = text(response)
    assert f'<html lang="{language}">' in body
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", body, re.S)
    assert h1 is not None
    assert h1.group(1).strip() == (in_language(language, heading) if heading else "山田 花子")
    # The page's own script and stylesheet, and its texts for the script, in the page's language.
    assert "frontend/directory.js" in body and "frontend/directory.css" in body
    assert 'id="directory-texts"' in body
    assert in_language(language, "Search") in body


def test_signed_out_people_are_sent_to_sign_in(client: Client, org: Organization) -> None:
    response = client.get("/acme/directory/?q=%E3%82%84")
    assert response.status_code == 302
    assert response["Location"].startswith("/acme/?next=%2Facme%2Fdirectory%2F")


# --- Search without JavaScript ---------------------------------------------------------------------------


def test_search_in_hiragana_finds_the_person_written_in_katakana(
    employee_client: Client, hanako: User, ken: User
) -> None:
    body = text(employee_client.get("/acme/directory/", {"q": "やまだ"}))
    assert "山田 花子" in body
    assert "ヤマダ ハナコ" in body
    assert "佐藤 健" not in body
    assert f'href="/acme/directory/people/{hanako.id}/"' in body
    # The search box keeps what was typed, so the person can refine it.
    assert 'value="やまだ"' in body


@pytest.mark.parametrize("query", ["山田", "ハナコ", "総務", "0312341101", "03-1234-1101", "hanako.yamada@", "課長"])
def test_search_by_name_department_phone_email_and_position(
    employee_client: Client, hanako: User, ken: User, query: str
) -> None:
    body = text(employee_client.get("/acme/directory/", {"q": query}))
    assert "山田 花子" in body and "佐藤 健" not in body


def test_department_filter_covers_the_subtree(
    employee_client: Client, tree: dict[str, Department], hanako: User, ken: User
) -> None:
    body = text(employee_client.get("/acme/directory/", {"department": tree["head"].id}))
    assert "山田 花子" in body and "佐藤 健" not in body
    # The tree beside the results marks the department being shown.
    assert re.search(rf'href="/acme/directory/\?department={tree["head"].id}"[^>]*aria-current="true"', body)


def test_nobody_found_says_so(employee_client: Client, hanako: User) -> None:
    User.objects.filter(pk=employee_client.session["_auth_user_id"]).update(language="en")
    body = text(employee_client.get("/acme/directory/", {"q": "zzzz-nobody"}))
    assert "Nobody found." in body
    assert "山田 花子" not in body


def test_a_department_of_another_organisation_is_not_found(
    employee_client: Client, other_org: Organization, hanako: User
) -> None:
    theirs = factories.department(other_org)
    assert employee_client.get("/acme/directory/", {"department": theirs.id}).status_code == 404
    # Nonsense is ignored rather than an error.
    assert employee_client.get("/acme/directory/", {"department": "x", "offset": "y"}).status_code == 200


def test_search_page_query_count_does_not_grow_with_results(
    employee_client: Client, org: Organization, tree: dict[str, Department], django_assert_max_num_queries: Any
) -> None:
    for n in range(30):
        colleague(org, f"p{n}@acme.example", last_name=f"社員{n}", department_id=tree["general"].id)
    with django_assert_max_num_queries(12):
        response = employee_client.get("/acme/directory/")
    assert text(response).count('class="person-row"') == 30 + 1 + 1  # and the employee, and the row <template>


def test_more_than_a_page_offers_the_next_page(
    employee_client: Client, org: Organization, tree: dict[str, Department]
) -> None:
    for n in range(directory_views.PAGE_SIZE + 3):
        colleague(org, f"p{n:03}@acme.example", last_name="社員", first_name=f"{n:03}")
    body = text(employee_client.get("/acme/directory/", {"q": "社員"}))
    assert f"offset={directory_views.PAGE_SIZE}" in body
    body = text(employee_client.get("/acme/directory/", {"q": "社員", "offset": directory_views.PAGE_SIZE}))
    assert body.count('class="person-row"') == 3 + 1


# --- Cards -----------------------------------------------------------------------------------------------


def test_card_shows_what_a_colleague_needs(employee_client: Client, hanako: User, tree: dict[str, Department]) -> None:
    body = text(employee_client.get(f"/acme/directory/people/{hanako.id}/"))
    assert "ヤマダ ハナコ" in body
    assert "本社 › 総務部" in body
    assert f'href="/acme/directory/?department={tree["general"].id}"' in body
    assert "課長" in body
    assert "東京都" in body
    assert 'href="tel:0312341101"' in body
    assert 'href="tel:09011112222"' in body
    assert 'href="tel:1101"' in body
    assert 'href="mailto:hanako.yamada@acme.example"' in body
    # Employees see no editor and no login details.
    assert 'id="person-form"' not in body
    assert "hanako.yamada@acme.example</code>" not in body


def test_card_of_another_organisation_is_not_found(employee_client: Client, other_org: Organization) -> None:
    stranger = factories.person(other_org, "stranger")
    assert employee_client.get(f"/acme/directory/people/{stranger.id}/").status_code == 404
    assert employee_client.get("/acme/directory/people/999999/").status_code == 404


def test_deactivated_people_are_hidden_from_employees_but_not_from_administrators(
    admin_client: Client, employee_client: Client, hanako: User
) -> None:
    User.objects.filter(pk=hanako.pk).update(is_active=False)
    assert employee_client.get(f"/acme/directory/people/{hanako.id}/").status_code == 404
    body = text(admin_client.get(f"/acme/directory/people/{hanako.id}/"))
    assert "badge-inactive" in body
    assert 'data-active="false"' in body
    assert "山田 花子" not in text(employee_client.get("/acme/directory/", {"q": "やまだ"}))


def test_administrators_can_search_deactivated_people_to_reactivate_them(
    admin_client: Client, employee_client: Client, hanako: User
) -> None:
    User.objects.filter(pk=hanako.pk).update(is_active=False)
    assert "山田 花子" not in text(admin_client.get("/acme/directory/", {"q": "やまだ"}))
    body = text(admin_client.get("/acme/directory/", {"q": "やまだ", "inactive": "1"}))
    assert "山田 花子" in body and "badge-inactive" in body
    assert 'name="inactive" value="1" checked' in body
    # Employees never see deactivated people, whatever they ask for.
    body = text(employee_client.get("/acme/directory/", {"q": "やまだ", "inactive": "1"}))
    assert "山田 花子" not in body and 'name="inactive"' not in body


def test_safety_answer_slot_is_empty_without_an_incident(employee_client: Client, hanako: User) -> None:
    body = text(employee_client.get(f"/acme/directory/people/{hanako.id}/"))
    assert re.search(r'<div class="safety-slot" data-safety-slot></div>', body)
    assert 'class="safety ' not in body


def test_safety_answer_shows_as_word_and_icon_when_there_is_one(
    employee_client: Client, hanako: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        directory_views,
        "current_safety_answers",
        lambda *, organization, user_ids: {hanako.id: {"status": "minor"}},
    )
    for path in (f"/acme/directory/people/{hanako.id}/", "/acme/directory/?q=やまだ"):
        body = text(employee_client.get(path))
        badge = re.search(r'<span class="safety safety-minor"[^>]*>(.*?</span>[^<]*)</span>', body, re.S)
        assert badge is not None, path
        assert "▲" in badge.group(1) and in_language("ja", "Minor injury") in badge.group(1)


def test_administrators_get_the_editor_on_the_card(admin_client: Client, admin: User, hanako: User) -> None:
    body = text(admin_client.get(f"/acme/directory/people/{hanako.id}/"))
    assert f'data-person-id="{hanako.id}"' in body
    assert 'name="department_id"' in body and 'name="roles"' in body and 'name="region_code"' in body
    assert re.search(r'<option value="13" selected>', body)
    # Their own card: the administrator role cannot be removed by themselves.
    own = text(admin_client.get(f"/acme/directory/people/{admin.id}/"))
    assert re.search(r'value="SYSTEM_ADMIN" checked disabled', own)
    assert 'id="person-active"' not in own


# --- Phone links ----------------------------------------------------------------------------------------


def test_phone_links_use_the_organisations_scheme(
    employee_client: Client, org: Organization, hanako: User, tree: dict[str, Department]
) -> None:
    Organization.objects.filter(pk=org.pk).update(phone_url_scheme="com050voipbiz://keypad?tel=")
    card = text(employee_client.get(f"/acme/directory/people/{hanako.id}/"))
    assert 'href="com050voipbiz://keypad?tel=0312341101"' in card
    assert 'href="tel:' not in card
    results = text(employee_client.get("/acme/directory/", {"q": "やまだ"}))
    assert 'href="com050voipbiz://keypad?tel=09011112222"' in results
    departments = text(employee_client.get("/acme/directory/departments/"))
    assert 'href="com050voipbiz://keypad?tel=0312341100"' in departments


def test_a_dangerous_scheme_saved_earlier_falls_back_to_tel(
    employee_client: Client, org: Organization, hanako: User
) -> None:
    Organization.objects.filter(pk=org.pk).update(phone_url_scheme="javascript:alert(1)//")
    card = text(employee_client.get(f"/acme/directory/people/{hanako.id}/"))
    assert "javascript:" not in card
    assert 'href="tel:0312341101"' in card


@pytest.mark.parametrize(
    "value",
    ["tel:", "sip:", "callto:", "com050voipbiz://keypad?tel=", "x-softphone+call://dial/", "  tel:  "],
)
def test_phone_scheme_accepts_phone_schemes(value: str) -> None:
    assert phone_scheme_validate(value) == value.strip()


@pytest.mark.parametrize(
    "value",
    [
        "javascript:",
        "JavaScript:alert(1)//",
        "javascript:alert(1)//",
        "data:text/html,",
        "vbscript:",
        "file:///",
        "http://evil.example/?n=",
        "https://evil.example/?n=",
        "blob:",
        "tel :",
        "te l:",
        "tel:\t1",
        'tel:"',
        "tel:'",
        "tel:<",
        "tel:>",
        'tel:"><script>',
        "tel:\\",
        "java\nscript:",
        "tel",  # no colon
        "1tel:",  # a scheme starts with a letter
        "://keypad",
        "電話:",
        "",
        "sip:" + "a" * 200,
    ],
)
def test_phone_scheme_refuses_the_rest(value: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        phone_scheme_validate(value)
    assert caught.value.code == "bad_phone_scheme"


# --- The department tree -------------------------------------------------------------------------------


def test_tree_is_nested_with_counts_and_links_to_the_search(
    employee_client: Client, tree: dict[str, Department], hanako: User, ken: User
) -> None:
    body = text(employee_client.get("/acme/directory/departments/"))
    head = body.index("本社")
    general = body.index("総務部")
    assert head < general
    # 総務部 is inside 本社's nested list.
    assert re.search(r"本社.*?<ul class=\"tree\">.*?総務部", body, re.S)
    assert f'href="/acme/directory/?department={tree["head"].id}"' in body
    # Counts include everything below: 本社 has 山田 (in 総務部).
    head_item = re.search(rf'data-department="{tree["head"].id}".*?</a>', body, re.S)
    assert head_item is not None and re.search(r'class="tree-count">1<', head_item.group(0))
    assert 'id="department-dialog"' not in body  # employees cannot change departments


def test_administrators_manage_departments_from_the_tree(admin_client: Client, tree: dict[str, Department]) -> None:
    body = text(admin_client.get("/acme/directory/departments/"))
    assert 'id="department-dialog"' in body
    assert f'data-edit-department="{tree["general"].id}"' in body
    assert 'name="parent_id"' in body


# --- Administration -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/acme/directory/import/", "/acme/directory/people/new/"])
def test_administration_pages_are_refused_to_employees(employee_client: Client, path: str) -> None:
    assert employee_client.get(path).status_code == 403


def test_safety_administrators_are_not_system_administrators(org: Organization) -> None:
    anpi = factories.person(org, "anpi", roles=(Role.ADMIN_ANPI, Role.CRISIS_MANAGER))
    assert signed_in(anpi).get("/acme/directory/import/").status_code == 403


def test_import_page_has_the_upload_progress_and_exports(admin_client: Client) -> None:
    body = text(admin_client.get("/acme/directory/import/"))
    assert '<progress id="import-bar" max="100" value="0"' in body
    assert 'aria-live="polite"' in body
    assert 'name="full_sync"' in body
    assert 'href="/acme/api/directory/export/departments.tsv"' in body
    assert 'href="/acme/api/directory/export/users.tsv"' in body


def test_import_page_follows_a_job_of_its_own_organisation_only(
    admin_client: Client, admin: User, other_org: Organization
) -> None:
    from directory.models import ImportJob

    ours = ImportJob.objects.create(organization=admin.organization, created_by=admin, users_name="a.tsv")
    theirs = ImportJob.objects.create(organization=other_org, users_name="b.tsv")
    assert f'data-job="{ours.id}"' in text(admin_client.get("/acme/directory/import/", {"job": ours.id}))
    assert 'data-job=""' in text(admin_client.get("/acme/directory/import/", {"job": theirs.id}))


def test_add_person_page_preselects_a_department(admin_client: Client, tree: dict[str, Department]) -> None:
    body = text(admin_client.get("/acme/directory/people/new/", {"department": tree["sales"].id}))
    assert re.search(rf'<option value="{tree["sales"].id}" selected>', body)
    assert 'name="login_id"' in body and 'name="password"' in body
