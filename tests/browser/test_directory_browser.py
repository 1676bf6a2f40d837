"""The directory in a real headless Chromium against a real daphne: a system administrator uploads the
department file and the cp932 user file that Excel saves, watches the progress bar fill from live events,
reads the preview, confirms, watches the bar reach 100 %, then finds a person by typing their reading in
hiragana and opens their card, whose phone numbers are tel: links. Then every directory page is shot in
Japanese and English on a phone and a laptop, and checked for what a person would trip over.

Run it as its own pytest invocation (STACK_NOTES.md, "Browser tests"); see tests/browser/test_pwa.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from directory.models import Department, ImportJob, Organization, Role, User
from tests import factories
from tests.browser.test_pwa import (
    LIVE_READY,
    SLUG,
    VIEWPORTS,
    Tab,
    chromium,
    daphne_env,
    layout_problems,
    open_tab,
    person,
    sign_in,
    while_browsing,
)
from tests.services import SHARED_FIXTURES, daphne, shared_fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

FIXTURES = SHARED_FIXTURES / "directory"
DEPARTMENTS_FILE = FIXTURES / "Sample_export_department_data_20261121090000.tsv"
USERS_FILE = FIXTURES / "excel_text_cp932_export_user_data.tsv"
# Everything the page hears about imports, in order, recorded before anything is uploaded.
RECORD_EVENTS = """() => {
  window.importEvents = [];
  for (const type of ["import.progress", "import.checked", "import.finished"])
    window.tsunagu.onEvent(type, (frame) => window.importEvents.push({type, ...frame.data}));
}"""
# The server's answers to the upload and to the confirmation, rewritten in the page to "still working".
STILL_WORKING = r"""() => {
  const realFetch = window.fetch;
  window.fetch = async (input, init = {}) => {
    const response = await realFetch(input, init);
    const match = String(input).match(/\/api\/directory\/imports\/(\d+\/)?$/);
    if ((init.method || "GET") !== "POST" || !match) return response;
    const body = await response.json();
    Object.assign(body, {status: match[1] ? "applying" : "pending", preview: null, result: null, errors: []});
    const headers = {"Content-Type": "application/json"};
    return new Response(JSON.stringify(body), {status: response.status, headers});
  };
}"""


def sample_files() -> tuple[Path, Path]:
    shared_fixtures("directory")
    return DEPARTMENTS_FILE, USERS_FILE


def bar_value(page: Page) -> int:
    return int(page.locator("#import-bar").get_attribute("value") or 0)


def test_admin_imports_the_excel_files_watches_progress_and_finds_a_colleague_by_kana() -> None:
    departments_file, users_file = sample_files()
    org = factories.organization(slug=SLUG, name="株式会社サンプル")
    admin = person(org, "kanri@example.co.jp", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,))

    with daphne(daphne_env()) as base, chromium() as browser:
        laptop = open_tab(browser, base, viewport="desktop")
        page = laptop.page
        sign_in(laptop, admin)
        page.goto(f"/{SLUG}/directory/import/")
        expect(page.locator("main h1")).to_be_visible()
        page.wait_for_function(LIVE_READY)
        page.evaluate(RECORD_EVENTS)

        # 1. Upload both files; the check runs and the bar fills from the live progress events.
        page.set_input_files("#departments-file", str(departments_file))
        page.set_input_files("#users-file", str(users_file))
        page.locator("#import-upload").click()
        expect(page.locator("#import-status")).to_be_visible()
        expect(page.locator('[data-count="departments.created"]')).to_have_text("12")
        expect(page.locator('[data-count="users.created"]')).to_have_text("60")
        for cell in ("departments.updated", "departments.removed", "users.updated", "users.deactivated"):
            expect(page.locator(f'[data-count="{cell}"]')).to_have_text("0")
        expect(page.locator("#import-errors")).to_be_hidden()
        expect(page.locator("#import-confirm")).to_be_visible()
        expect(page.locator('[data-list="users.created"] summary')).to_contain_text("60")
        expect(page.locator("#import-licence")).to_contain_text("61 / 1000")  # and the administrator, who stays
        assert bar_value(page) == 50
        expect(page.locator("#import-percent")).to_have_text("50 %")
        checks = [e for e in page.evaluate("window.importEvents") if e["type"] == "import.progress"]
        assert checks and all(e["phase"] == "check" for e in checks), checks
        assert checks[-1]["percent"] == 50, checks
        seen = [int(v) for v in (page.locator("#import-bar").get_attribute("data-seen") or "").split(",") if v]
        assert seen == sorted(seen) and 0 < min(v for v in seen if v) < 50, seen  # it filled, not jumped
        assert while_browsing(User.objects.filter(organization=org).count) == 1, "the preview changed something"
        laptop.shot("directory-import-preview-ja-desktop")

        # 2. Confirm: everything is applied, and the bar reaches 100 %.
        page.locator("#import-confirm").click()
        expect(page.locator("#import-result")).to_be_visible()
        expect(page.locator("#import-percent")).to_have_text("100 %")
        assert bar_value(page) == 100
        expect(page.locator("#import-confirm")).to_be_hidden()
        applies = [e for e in page.evaluate("window.importEvents") if e["type"] == "import.progress"]
        assert any(e["phase"] == "apply" and e["percent"] == 100 for e in applies), applies
        assert while_browsing(User.objects.filter(organization=org, is_active=True).count) == 61
        assert while_browsing(Department.objects.filter(organization=org).count) == 12
        job = while_browsing(ImportJob.objects.get, organization=org)
        assert job.status == ImportJob.Status.APPLIED
        laptop.shot("directory-import-applied-ja-desktop")
        assert laptop.errors == [], laptop.errors

        # 3. On a phone: type the reading in hiragana, find 髙橋 結衣 (katakana in the file), open the card.
        phone = open_tab(browser, base, viewport="mobile")
        sign_in(phone, admin)
        mobile = phone.page
        mobile.goto(f"/{SLUG}/directory/")
        mobile.locator("#dir-q").press_sequentially("たかはしゆい", delay=30)
        rows = mobile.locator("#results .person-row")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("髙橋 結衣")
        expect(rows.first).to_contain_text("タカハシ ユイ")
        expect(rows.first.locator('a.phone[href="tel:09094466233"]')).to_be_visible()
        assert "q=" in mobile.url, "the address should keep the search"
        phone.shot("directory-search-kana-ja-mobile")
        rows.first.locator(".person-link").click()
        expect(mobile.locator("main h1")).to_have_text("髙橋 結衣")
        call = mobile.locator('.contact a.phone[href="tel:0312341100"]')
        expect(call).to_be_visible()
        assert call.bounding_box()["height"] >= 48  # type: ignore[index]
        expect(mobile.locator(".contact a.phone[href^='tel:']")).to_have_count(3)
        phone.shot("directory-card-ja-mobile")
        assert phone.errors == [], phone.errors


def test_import_page_asks_the_api_when_no_live_event_arrives() -> None:
    """Events can be missed (a dropped socket, a proxy): the page then polls the job and still shows the
    preview and, after confirming, the result. Here the socket is closed for good and the answers to the
    upload and to the confirmation are made to say "still working", so only polling can show what happened."""
    departments_file, users_file = sample_files()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    admin = person(org, "admin", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,), language="en")

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base, viewport="desktop", language="en")
        page = tab.page
        sign_in(tab, admin)
        page.goto(f"/{SLUG}/directory/import/")
        page.wait_for_function(LIVE_READY)
        page.evaluate("window.tsunagu.live.closedForGood = true; window.tsunagu.live.ws.close()")
        page.evaluate(STILL_WORKING)
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if r.method == "GET" and "/imports/" in r.url else None)

        page.set_input_files("#departments-file", str(departments_file))
        page.set_input_files("#users-file", str(users_file))
        page.locator("#import-upload").click()
        expect(page.locator("#import-phase")).to_have_text(re.compile("Checking"))
        expect(page.locator('[data-count="users.created"]')).to_have_text("60", timeout=10_000)
        assert polls, "the preview came without asking the API"

        polls.clear()
        page.locator("#import-confirm").click()
        expect(page.locator("#import-phase")).to_have_text(re.compile("Applying"))
        expect(page.locator("#import-percent")).to_have_text("100 %", timeout=10_000)
        expect(page.locator("#import-result")).to_be_visible()
        assert polls
        assert while_browsing(User.objects.filter(organization=org).count) == 61
        assert tab.errors == [], tab.errors


def test_directory_pages_in_japanese_and_english_on_phone_and_laptop() -> None:
    """Every directory page, filled with the sample directory, in both languages and both sizes."""
    departments_file, users_file = sample_files()
    from directory.importer import import_apply

    org = factories.organization(slug=SLUG, name="東日本つなぐ防災ネットワーク株式会社 本社")
    admin = person(org, "kanri.taro@example.co.jp", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,))
    import_apply(
        organization=org,
        departments_raw=departments_file.read_bytes(),
        users_raw=users_file.read_bytes(),
        actor=admin,
    )
    Organization.objects.filter(pk=org.pk).update(phone_url_scheme="com050voipbiz://keypad?tel=")
    yui = User.objects.get(organization=org, last_name="髙橋", first_name="結衣")
    sales = Department.objects.get(organization=org, code="D200")
    # A broken file gives the error table something to show.
    broken = FIXTURES / "broken_export_user_data.tsv"
    problems: dict[str, list[str]] = {}

    with daphne(daphne_env()) as base, chromium() as browser:
        for language in ("ja", "en"):
            while_browsing(User.objects.filter(pk=admin.pk).update, language=language)
            for viewport in VIEWPORTS:
                tab = open_tab(browser, base, viewport=viewport, language=language)
                page = tab.page
                sign_in(tab, admin)
                screens = {
                    "search": f"/{SLUG}/directory/?department={sales.id}",
                    "card": f"/{SLUG}/directory/people/{yui.id}/",
                    "departments": f"/{SLUG}/directory/departments/",
                    "new-person": f"/{SLUG}/directory/people/new/",
                    "import": f"/{SLUG}/directory/import/",
                }
                for name, path in screens.items():
                    response = page.goto(path)
                    assert response is not None and response.status == 200, (name, language)
                    expect(page.locator("html")).to_have_attribute("lang", language)
                    shot = f"directory-{name}-{language}-{viewport}"
                    problems[shot] = layout_problems(page)
                    tab.shot(shot)
                # Phone links in the organisation's softphone scheme.
                page.goto(f"/{SLUG}/directory/people/{yui.id}/")
                expect(page.locator('.contact a[href="com050voipbiz://keypad?tel=0312341100"]')).to_be_visible()

                # The administrator's editor shows the service's field errors next to the fields.
                page.locator("#person-admin > summary").click()
                page.fill("#f-email", "not-an-address")
                page.locator("#person-form button.primary").click()
                expect(page.locator("#e-email")).to_be_visible()
                expect(page.locator("#f-email")).to_have_attribute("aria-invalid", "true")
                problems[f"directory-card-error-{language}-{viewport}"] = layout_problems(page)
                tab.shot(f"directory-card-error-{language}-{viewport}")

                # The department editor opens as a dialog.
                page.goto(f"/{SLUG}/directory/departments/")
                page.locator(f'[data-edit-department="{sales.id}"]').click()
                expect(page.locator("#department-dialog")).to_be_visible()
                expect(page.locator("#f-code")).to_have_value("D200")
                tab.shot(f"directory-department-dialog-{language}-{viewport}")
                page.locator("#department-dialog [data-close]").click()

                if broken.exists():
                    page.goto(f"/{SLUG}/directory/import/")
                    page.wait_for_function(LIVE_READY)
                    page.set_input_files("#users-file", str(broken))
                    page.locator("#import-upload").click()
                    expect(page.locator("#import-errors")).to_be_visible()
                    expect(page.locator("#import-errors tbody tr").first).to_be_visible()
                    assert page.locator("#import-errors tbody tr").count() >= 8  # each fault, by line
                    expect(page.locator("#import-confirm")).to_be_hidden()
                    problems[f"directory-import-errors-{language}-{viewport}"] = layout_problems(page)
                    tab.shot(f"directory-import-errors-{language}-{viewport}")
                assert tab.errors == [], tab.errors
                page.context.close()

    found = [f"{name}: {problem}" for name, listed in problems.items() for problem in listed]
    assert not found, "\n".join(found)


def test_people_and_departments_are_managed_one_by_one() -> None:
    """Add a department and a person from the pages, move the department, deactivate the person."""
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    admin = person(org, "admin", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,))
    head = Department.objects.create(organization=org, code="D100", name="本社")

    with daphne(daphne_env()) as base, chromium() as browser:
        tab: Tab = open_tab(browser, base, viewport="desktop")
        page = tab.page
        page.on("dialog", lambda dialog: dialog.accept())
        sign_in(tab, admin)

        page.goto(f"/{SLUG}/directory/departments/")
        page.locator("#department-add").click()
        page.fill("#f-name", "広報課")
        page.fill("#f-code", "D130")
        page.select_option("#f-parent_id", str(head.id))
        with page.expect_navigation():
            page.locator("#department-form button.primary").click()
        expect(page.locator(".tree-node .tree-node .tree-name", has_text="広報課")).to_be_visible()
        press = while_browsing(Department.objects.get, organization=org, code="D130")
        assert press.parent_id == head.id

        # Moving it to the top level.
        page.locator(f'[data-edit-department="{press.id}"]').click()
        expect(page.locator("#f-name")).to_have_value("広報課")
        # It cannot be put inside itself.
        assert page.locator(f'#f-parent_id option[value="{press.id}"]').is_disabled()
        page.select_option("#f-parent_id", "")
        with page.expect_navigation():
            page.locator("#department-form button.primary").click()
        assert while_browsing(lambda: Department.objects.get(pk=press.pk).parent_id) is None

        # A duplicate code is refused next to the field.
        page.locator("#department-add").click()
        page.fill("#f-name", "別の課")
        page.fill("#f-code", "D130")
        page.locator("#department-form button.primary").click()
        expect(page.locator("#e-code")).to_be_visible()
        page.locator("#department-dialog [data-close]").click()

        page.goto(f"/{SLUG}/directory/people/new/")
        page.fill("#f-login_id", "hanako@acme.example")
        page.fill("#f-password", "Init-12345")
        page.fill("#f-last_name", "山田")
        page.fill("#f-first_name", "花子")
        page.fill("#f-last_name_kana", "やまだ")
        page.fill("#f-phone_number", "03-1234-5678")
        page.select_option("#f-department_id", str(press.id))
        page.locator('input[name="roles"][value="MANAGER"]').check()
        with page.expect_navigation():
            page.locator("#person-form button.primary").click()
        expect(page.locator(".ok")).to_be_visible()
        expect(page.locator("main h1")).to_have_text("山田 花子")
        expect(page.locator(".person-kana")).to_contain_text("ヤマダ")
        expect(page.locator('.contact a[href="tel:0312345678"]')).to_be_visible()
        hanako = while_browsing(User.objects.get, organization=org, login_id="hanako@acme.example")
        assert hanako.must_change_password and hanako.department_id == press.id
        assert while_browsing(lambda: hanako.has_role(Role.MANAGER))

        page.locator("#person-admin > summary").click()
        with page.expect_navigation():
            page.locator("#person-active").click()
        expect(page.locator(".badge-inactive")).to_be_visible()
        assert while_browsing(lambda: User.objects.get(pk=hanako.pk).is_active) is False
        # Deleting a department whose people are all inactive is allowed.
        page.goto(f"/{SLUG}/directory/departments/")
        page.locator(f'[data-edit-department="{press.id}"]').click()
        with page.expect_navigation():
            page.locator("#department-delete").click()
        assert not while_browsing(Department.objects.filter(pk=press.pk).exists)
        assert tab.errors == [], tab.errors
