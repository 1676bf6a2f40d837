"""The automatic-dispatch pages in a real headless Chromium against a real daphne and PostgreSQL: a crisis manager
verifies who a 震度6弱 in 石川県 would reach (the people based in 石川県, nobody else, through the preset rule),
replays the Noto 2024 VXSE53 uploaded through the file input and sees the rules that fire and the decision, and
looks at the rules, the rule form and the audit log on a laptop and a phone. Nothing is sent or stored by
verifying or replaying.

Run it as its own pytest invocation (STACK_NOTES.md, "Browser tests"); see tests/browser/test_pwa.py.
Screenshots go to test-artifacts/screenshots/auto-*.png."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.utils import translation
from playwright.sync_api import Page, expect

from directory.models import Organization, Role, User
from safety import autodispatch
from safety.jma.ingest import jma_document_ingest
from safety.models import Incident, JmaDecision, JmaDocument
from tests import factories
from tests.browser.test_pwa import (
    SLUG,
    chromium,
    daphne_env,
    layout_problems,
    open_tab,
    person,
    sign_in,
    while_browsing,
)
from tests.services import ROOT, daphne, shared_fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

NOTO_VXSE53 = ROOT / "tests" / "safety" / "jma" / "noto2024_vxse53_serial2_reconstructed.xml"
NOTO_VXSE51 = "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
ISHIKAWA, TOYAMA, NAGANO, TOKYO, OSAKA = "17", "16", "20", "13", "27"
TRAVEL = "能登への出張者（震度5弱以上）"


def tr(language: str, message: str, **values: Any) -> str:
    """What the page shows for a msgid: the catalog's text (English until a translation is merged)."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def ja(message: str, **values: Any) -> str:
    return tr("ja", message, **values)


def problems(page: Page) -> list[str]:
    # A radio button sits inside a label at least 48 px tall, which is what the thumb hits.
    return [p for p in layout_problems(page) if 'type="radio"' not in p]


class Company:
    """ACME with its sites: two people based in 石川県, one each in 富山県, 長野県, 東京都 and 大阪府; the preset
    rule, and a rule for 長野県 from 震度5弱."""

    def __init__(self) -> None:
        self.org: Organization = factories.organization(slug=SLUG, name="ACME株式会社")
        self.admin = self.named("anpi", "管理", "太郎", roles=(Role.CRISIS_MANAGER,))
        self.wajima = self.named("wajima", "輪島", "一郎", region_code=ISHIKAWA)
        self.kanazawa = self.named("kanazawa", "金沢", "花子", region_code=ISHIKAWA)
        self.toyama = self.named("toyama", "富山", "次郎", region_code=TOYAMA)
        self.nagano = self.named("nagano", "長野", "三郎", region_code=NAGANO)
        self.tokyo = self.named("tokyo", "東京", "四郎", region_code=TOKYO)
        self.osaka = self.named("osaka", "大阪", "五郎", region_code=OSAKA)
        self.preset = autodispatch.preset_rule_create(self.org)
        self.nagano_rule = autodispatch.rule_create(
            organization=self.org,
            actor=self.admin,
            name="長野営業所（震度5弱以上）",
            hazard="earthquake",
            prefectures=[NAGANO],
            min_intensity="5-",
            hold_minutes=10,
        )

    def named(self, login_id: str, last: str, first: str, **kwargs: Any) -> User:
        kwargs.setdefault("anpi_login_id", login_id)
        return person(self.org, login_id, last=last, first=first, **kwargs)


def test_verify_shows_who_intensity_6_lower_in_ishikawa_reaches() -> None:
    company = Company()
    with daphne(daphne_env()) as base, chromium() as browser:
        laptop = open_tab(browser, base, viewport="desktop")
        page = laptop.page
        sign_in(laptop, company.admin)

        # From the incident list to the rules: the preset rule is marked.
        page.goto(f"/{SLUG}/safety/incidents/")
        page.locator("#auto-link").click()
        expect(page).to_have_url(f"{base}/{SLUG}/safety/auto/")
        preset = page.locator(f'.rule-card[data-id="{company.preset.id}"]')
        expect(preset.locator(".preset-tag")).to_have_text(ja("Preset"))
        expect(page.locator(".rule-card .preset-tag")).to_have_count(1)
        laptop.shot("auto-rules-laptop")
        assert problems(page) == []

        # Verify: 震度6弱 in 石川県.
        page.locator(".auto-nav a", has_text=ja("Verify")).click()
        expect(page.locator(".nothing-sent")).to_be_visible()
        page.locator('input[name="hazard"][value="earthquake"]').check()
        expect(page.locator("#v-level-tsunami")).to_be_hidden()  # only the earthquake's fields show
        page.locator("#v-area-earthquake").select_option(ISHIKAWA)
        page.locator("#v-level-earthquake").select_option("6-")
        with page.expect_navigation():
            page.locator("#verify-button").click()
        rows = page.locator("#verify-people tbody tr")
        expect(rows).to_have_count(2)
        assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.login)")) == ["kanazawa", "wajima"]
        assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.region)")) == {ISHIKAWA}
        expect(page.locator("#verify-people")).to_contain_text("輪島 一郎")
        expect(page.locator("#verify-people")).to_contain_text("石川県")
        for other in ("富山 次郎", "長野 三郎", "東京 四郎", "大阪 五郎"):
            expect(page.locator("#verify-people")).not_to_contain_text(other)
        expect(page.locator("#rules-fired")).to_contain_text(autodispatch.PRESET_NAME)
        expect(page.locator("#rules-fired")).not_to_contain_text("長野営業所")
        expect(page.locator("#verdict .decision-dispatch")).to_be_visible()
        # The form keeps what was asked.
        expect(page.locator("#v-area-earthquake")).to_have_value(ISHIKAWA)
        expect(page.locator("#v-level-earthquake")).to_have_value("6-")
        page.locator("#verify-result").scroll_into_view_if_needed()
        laptop.shot("auto-verify-laptop")
        assert problems(page) == []

        # For a special warning, the municipalities offered follow the prefecture.
        page.locator('input[name="hazard"][value="special_warning"]').check()
        expect(page.locator("#v-level-earthquake")).to_be_hidden()
        page.locator("#v-pref-special").select_option(ISHIKAWA)
        expect(page.locator("#v-city-list option").first).to_have_attribute("value", re.compile(r"^17\d{5}$"))

        # The same on a phone.
        phone = open_tab(browser, base, viewport="mobile")
        sign_in(phone, company.admin)
        phone.page.goto(f"/{SLUG}/safety/auto/verify/")
        phone.page.locator("#v-area-earthquake").select_option(ISHIKAWA)
        phone.page.locator("#v-level-earthquake").select_option("6-")
        with phone.page.expect_navigation():
            phone.page.locator("#verify-button").click()
        expect(phone.page.locator("#verify-people tbody tr")).to_have_count(2)
        phone.shot("auto-verify-phone")
        assert problems(phone.page) == []
        for name, path in (
            ("rules", f"/{SLUG}/safety/auto/"),
            ("rule-form", f"/{SLUG}/safety/auto/rules/new/"),
        ):
            phone.page.goto(path)
            phone.page.wait_for_load_state("networkidle")
            phone.shot(f"auto-{name}-phone")
            assert problems(phone.page) == [], name
        assert laptop.errors == [] and phone.errors == []

    assert while_browsing(Incident.objects.count) == 0
    assert while_browsing(JmaDecision.objects.count) == 0


def test_replaying_the_noto_vxse53_shows_the_rules_that_fire() -> None:
    company = Company()
    # The log has something to show: the real VXSE51 of the same quake, decided as the feed would.
    jma_document_ingest(
        url="https://example.jp/noto51.xml", raw=(shared_fixtures("jma") / NOTO_VXSE51).read_bytes(), source="file"
    )
    decided = list(JmaDecision.objects.filter(organization=company.org))
    assert [d.decision for d in decided] == ["dispatch"]
    documents, incidents = JmaDocument.objects.count(), Incident.objects.count()

    with daphne(daphne_env()) as base, chromium() as browser:
        laptop = open_tab(browser, base, viewport="desktop")
        page = laptop.page
        sign_in(laptop, company.admin)

        # The rule form, and a rule added through it.
        page.goto(f"/{SLUG}/safety/auto/rules/new/")
        page.locator("#f-name").fill(TRAVEL)
        page.locator('input[name="hazard"][value="earthquake"]').check()
        page.locator("#prefectures label", has_text="東京都").locator("input").check()
        page.locator("#area-q").fill("能登")
        page.locator("#area-found button").first.click()
        expect(page.locator("#f-areas")).to_have_value("390 石川県能登")
        expect(page.locator("#areas-shown")).to_have_text("390 石川県能登")
        page.locator("#f-intensity").select_option("5-")
        expect(page.locator("#f-tsunami")).to_be_hidden()
        expect(page.locator("#chosen-fields")).to_be_hidden()
        page.locator('input[name="target_mode"][value="chosen"]').check()
        expect(page.locator("#chosen-fields")).to_be_visible()
        page.locator("#f-people").fill("tokyo")
        laptop.shot("auto-rule-form-laptop")
        assert problems(page) == []
        with page.expect_navigation():
            page.locator("#rule-save").click()
        expect(page.locator(".messages")).to_contain_text(TRAVEL)
        added = while_browsing(lambda: company.org.dispatch_rules.get(name=TRAVEL))
        assert added.prefectures == [TOKYO] and added.areas == ["390"] and added.min_intensity == "5-"
        assert added.target_mode == "chosen" and added.person_ids == [company.tokyo.id]

        # Replay the Noto VXSE53 (serial 2, 45 prefectures) through the file input.
        page.locator(".auto-nav a", has_text=ja("Replay")).click()
        expect(page.locator(".nothing-sent")).to_be_visible()
        page.locator("#replay-files").set_input_files(str(NOTO_VXSE53))
        with page.expect_navigation():
            page.locator("#replay-button").click()
        item = page.locator(".replay-item")
        expect(item).to_have_count(1)
        expect(item.locator(".replay-file")).to_contain_text(NOTO_VXSE53.name)
        expect(item.locator(".decision-tag")).to_have_text(ja("Send"))
        assert item.get_attribute("data-decision") == "dispatch"
        fired = item.locator(".rules-fired")
        expect(fired).to_contain_text(autodispatch.PRESET_NAME)  # 石川県 7, 富山県 5強
        expect(fired).to_contain_text("長野営業所（震度5弱以上）")  # 長野県 5弱
        expect(fired).to_contain_text(TRAVEL)  # 石川県能登 (390) 7: the person on the trip
        new = item.locator(".new-people")
        for name in ("輪島 一郎", "金沢 花子", "富山 次郎", "長野 三郎", "東京 四郎"):
            expect(new).to_contain_text(name)
        expect(new).not_to_contain_text("大阪 五郎")  # 大阪府 4
        item.scroll_into_view_if_needed()
        laptop.shot("auto-replay-laptop")
        assert problems(page) == []

        # The log: the VXSE51 the feed decided, with its rule and incident.
        page.locator(".auto-nav a", has_text=ja("Log")).click()
        row = page.locator(f'#log-table tr[data-id="{decided[0].id}"]')
        expect(row).to_contain_text(autodispatch.PRESET_NAME)
        expect(row.locator(".decision-tag")).to_have_text(ja("Send"))
        expect(row.locator(f'a[href="/{SLUG}/safety/incidents/{decided[0].incident_ids[0]}/"]')).to_be_visible()
        laptop.shot("auto-log-laptop")
        assert problems(page) == []

        # On a phone: the replay and the log.
        phone = open_tab(browser, base, viewport="mobile")
        sign_in(phone, company.admin)
        phone.page.goto(f"/{SLUG}/safety/auto/replay/")
        phone.page.locator("#replay-files").set_input_files(str(NOTO_VXSE53))
        with phone.page.expect_navigation():
            phone.page.locator("#replay-button").click()
        expect(phone.page.locator(".replay-item .rules-fired")).to_contain_text(autodispatch.PRESET_NAME)
        phone.shot("auto-replay-phone")
        assert problems(phone.page) == []
        phone.page.goto(f"/{SLUG}/safety/auto/log/")
        phone.shot("auto-log-phone")
        assert problems(phone.page) == []
        assert laptop.errors == [] and phone.errors == []

    # Replaying stored nothing and sent nothing.
    assert while_browsing(JmaDocument.objects.count) == documents
    assert while_browsing(Incident.objects.count) == incidents
    assert while_browsing(lambda: JmaDecision.objects.filter(organization=company.org).count()) == 1
