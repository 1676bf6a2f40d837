"""Onboarding and personal groups in a real headless Chromium against a real daphne: the printable sign-in
sheet (a QR code per person, two columns of cut-out cards per A4 page, no navigation on paper), the welcome
link on a phone, and the groups page on a phone.

Screenshots go to test-artifacts/screenshots/ for people to look at. Run with `-p no:playwright` (see
test_pwa.py for why each test calls sync_playwright() itself)."""

from __future__ import annotations

import re

import pytest
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from playwright.sync_api import expect

from directory.importer import user_search_text
from directory.models import Department, Organization, Role, User
from tests import factories
from tests.browser.test_pwa import (
    SHOTS,
    chromium,
    daphne_env,
    layout_problems,
    open_tab,
    person,
    sign_in,
    while_browsing,
)
from tests.services import daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

SLUG = "acme"
# (login ID, last name, first name, kana) — one long name, one e-mail login, one plain ASCII name.
SALES_PEOPLE = [
    ("sato", "佐藤", "花子", "サトウ ハナコ"),
    ("suzuki.ichiro@acme.example", "鈴木", "一郎", "スズキ イチロウ"),
    ("takahashi", "髙橋", "健", "タカハシ ケン"),
    ("tanaka", "田中", "美咲", "タナカ ミサキ"),
    ("watanabe", "渡邉", "長い名前の人でも折り返されます", "ワタナベ ナガイ"),
    ("smith", "Smith", "Alexandra", "スミス アレクサンドラ"),
]
OSAKA_PEOPLE = [
    ("ito", "伊藤", "翔", "イトウ ショウ"),
    ("yamamoto", "山本", "大輔", "ヤマモト ダイスケ"),
    ("nakamura", "中村", "優子", "ナカムラ ユウコ"),
    ("kobayashi", "小林", "誠", "コバヤシ マコト"),
]


def staff(org: Organization, department: Department, rows: list[tuple[str, str, str, str]]) -> list[User]:
    people = []
    for n, (login_id, last, first, kana) in enumerate(rows):
        user = person(org, login_id, last=last, first=first, department=department)
        user.last_name_kana, user.first_name_kana = kana.split(" ")
        user.phone_number = f"03-5555-{1000 + n}"
        user.mobile_phone_number = f"090-1234-{5000 + n}" if n % 2 == 0 else ""
        user.search_text = user_search_text(user)
        user.save()
        people.append(user)
    return people


def test_sign_in_sheet_has_a_qr_code_per_person_and_prints_two_columns_of_cards() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    admin = person(org, "admin", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,))
    sales = Department.objects.create(organization=org, code="SALES", name="営業部", sort_order=1)
    osaka = Department.objects.create(organization=org, code="OSAKA", name="大阪営業所", parent=sales, sort_order=2)
    # Eight cards: exactly one A4 page. Two more people later make a second page.
    people = staff(org, sales, SALES_PEOPLE) + staff(org, osaka, OSAKA_PEOPLE[:2])

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base, viewport="desktop")
        page = tab.page
        sign_in(tab, admin)
        page.goto(f"/{SLUG}/onboarding/")
        expect(page.locator(f"#department-{osaka.id}")).to_be_visible()
        tab.shot("onboarding-invitations-desktop")

        page.locator(f"#department-{sales.id} a.button").click()
        expect(page).to_have_url(f"{base}/{SLUG}/onboarding/sheet/{sales.id}/")
        expect(page.locator(".sheet-card")).to_have_count(len(SALES_PEOPLE))
        page.locator(".sheet-buttons a[href='?sub=1']").click()
        expect(page).to_have_url(re.compile(r"\?sub=1$"))
        cards = page.locator(".sheet-card")
        expect(cards).to_have_count(len(people))

        # One QR code per person, drawn, and the login ID printed beside it.
        for n in range(len(people)):
            card = cards.nth(n)
            expect(card.locator(".sheet-qr svg")).to_have_count(1)
            box = card.locator(".sheet-qr svg").bounding_box()
            assert box is not None and box["width"] >= 100 and abs(box["width"] - box["height"]) < 1, box
            assert card.locator(".sheet-qr svg path").get_attribute("d")
        logins = [c.strip() for c in page.locator(".sheet-login code").all_inner_texts()]
        assert sorted(logins) == sorted(u.login_id for u in people)
        tab.shot("onboarding-sheet")

        # On paper: no navigation or buttons, two columns of cards, four rows per A4 page, none split.
        page.emulate_media(media="print")
        expect(page.locator(".topbar")).to_be_hidden()
        expect(page.locator(".sheet-tools")).to_be_hidden()
        lefts = {round(b["x"]) for b in (cards.nth(n).bounding_box() for n in range(len(people))) if b}
        assert len(lefts) == 2, lefts
        page.set_viewport_size({"width": 794, "height": 1123})  # A4 at 96 dpi
        tab.shot("onboarding-sheet-print")
        assert pdf_pages(page.pdf(format="A4", print_background=True)) == 1, "8 cards fit one A4 page"

        people += while_browsing(staff, org, osaka, OSAKA_PEOPLE[2:])
        page.reload()
        expect(cards).to_have_count(len(people))
        pdf = page.pdf(format="A4", print_background=True)
        (SHOTS / "onboarding-sheet.pdf").write_bytes(pdf)
        assert pdf_pages(pdf) == 2, "the ninth and tenth cards start a second page"
        assert tab.errors == []

        # Both pages on a phone: one column, nothing sideways, every control big enough for a thumb.
        phone = open_tab(browser, base)
        sign_in(phone, admin)
        for name, path in (("invitations", "/acme/onboarding/"), ("sheet", f"/acme/onboarding/sheet/{sales.id}/")):
            phone.page.goto(path)
            assert layout_problems(phone.page) == [], (name, layout_problems(phone.page))
            phone.shot(f"onboarding-{name}-mobile")
        assert phone.errors == []


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


def test_welcome_link_on_a_phone_sets_the_password_and_signs_in() -> None:
    from directory.onboarding import invitation_token_generator

    org = factories.organization(slug=SLUG, name="ACME株式会社")
    newcomer = person(org, "newcomer", last="新人", first="一郎", must_change_password=True)
    uid = urlsafe_base64_encode(force_bytes(newcomer.pk))
    path = f"/{SLUG}/welcome/{uid}/{invitation_token_generator.make_token(newcomer)}/"

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base)
        page = tab.page
        response = page.goto(path)
        assert response is not None and response.status == 200
        expect(page.locator("#login_id")).to_have_value("newcomer")
        assert layout_problems(page) == []
        tab.shot("welcome-mobile")
        page.fill("#new_password", "tsunagu-welcome-77")
        page.fill("#new_password2", "tsunagu-welcome-77")
        with page.expect_navigation():
            page.locator("main form button.primary").click()
        expect(page).to_have_url(f"{base}/{SLUG}/home/")
        expect(page.locator(".messages")).to_be_visible()

        # The link is spent: a clear page, not a form.
        response = page.goto(path)
        assert response is not None and response.status == 400
        expect(page.locator("main .error")).to_be_visible()
        tab.shot("welcome-used-mobile")
        assert tab.errors == []
    assert while_browsing(lambda: User.objects.get(pk=newcomer.pk).must_change_password) is False


@pytest.mark.parametrize("language", ["ja", "en"])
def test_groups_page_on_a_phone(language: str) -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    org.phone_url_scheme = "com050voipbiz://keypad?tel="
    org.save()
    me = person(org, "me", last="山田", first="花子", language=language)
    sales = Department.objects.create(organization=org, code="SALES", name="第一営業部 東日本エリア担当", sort_order=1)
    colleagues = staff(org, sales, SALES_PEOPLE)
    from directory.groups import group_create

    group_create(owner=me, name="いつもの連絡先", member_ids=[colleagues[0].id, colleagues[4].id])

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base, language=language)
        page = tab.page
        sign_in(tab, me)
        page.goto(f"/{SLUG}/groups/")
        expect(page.locator(".group")).to_have_count(1)
        tab.shot(f"groups-{language}-mobile")

        # A new group, then find a colleague by reading (in hiragana) and add them.
        page.fill("#new-name", "プロジェクトA")
        with page.expect_navigation():
            page.locator("#group-new button.primary").click()
        group = page.locator(".group", has_text="プロジェクトA")
        expect(group).to_be_visible()
        group.locator("input[type=search]").fill("たなか")
        with page.expect_navigation():
            group.locator(".search-row button").click()
        group = page.locator(".group", has_text="プロジェクトA")
        expect(group.locator(".candidate")).to_have_count(1)
        tab.shot(f"groups-search-{language}-mobile")
        with page.expect_navigation():
            group.locator(".candidate button").click()
        group = page.locator(".group", has_text="プロジェクトA")
        expect(group.locator(".member")).to_have_count(1)
        expect(group.locator(".candidate .in-group")).to_have_count(1)  # the search stays, marking who was added
        expect(group.locator(".member a.phone").first).to_have_attribute(
            "href", "com050voipbiz://keypad?tel=0355551003"
        )
        assert layout_problems(page) == [], layout_problems(page)
        tab.shot(f"groups-added-{language}-mobile")

        # The rename/delete panel opens and fits the phone too.
        page.locator(".group-edit summary").first.click()
        assert layout_problems(page) == [], layout_problems(page)
        assert tab.errors == []

    names = while_browsing(lambda: sorted(me.personal_groups.values_list("name", flat=True)))
    assert names == sorted(["いつもの連絡先", "プロジェクトA"])
