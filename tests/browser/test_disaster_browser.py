"""The disaster information page shows a JMA report live, as it arrives through the ingest endpoint."""

from __future__ import annotations

import json
import urllib.request

import pytest
from playwright.sync_api import expect

from directory.models import Role
from tests import factories
from tests.browser.test_pwa import LIVE_READY, chromium, layout_problems, open_tab, person, sign_in
from tests.services import SHARED_FIXTURES, daphne, shared_fixtures, subprocess_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
JMA = SHARED_FIXTURES / "jma"
# The fixtures hold the Noto 2024 震度速報 (VXSE51); its VXSE53 is not among them.
NOTO = JMA / "earthquake" / "REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
DRILL = JMA / "tsunami"
TOKEN = "test-ingest-token-0123456789"


def push(base: str, path, url: str) -> dict:
    request = urllib.request.Request(  # noqa: S310 (our own daphne on 127.0.0.1)
        f"{base}/api/jma/documents/?url={url}",
        data=path.read_bytes(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/xml"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 (our own daphne on 127.0.0.1)
        return dict(json.loads(response.read()))


def test_disaster_page_shows_a_replayed_noto_report_live_and_marks_drills():
    shared_fixtures("jma")
    drill = next(iter(sorted(DRILL.glob("TRAINING_*vtse41*MAJOR*.xml"))), None)
    org = factories.organization(slug="acme", name="ACME株式会社")
    chief = person(org, "chief", last="危機", first="管理", roles=(Role.CRISIS_MANAGER,))
    employee = person(org, "hanako")

    with daphne(subprocess_env(JMA_INGEST_TOKEN=TOKEN, CELERY_TASK_ALWAYS_EAGER="true")) as base, chromium() as browser:
        tab = open_tab(browser, base, viewport="desktop")
        sign_in(tab, chief)
        tab.page.goto("/acme/disaster/")
        expect(tab.page.locator("h1")).to_have_text("災害情報")
        tab.page.wait_for_function(LIVE_READY)
        tab.page.evaluate("window.notReloaded = true")

        stored = push(base, NOTO, "https://www.data.jma.go.jp/developer/xml/data/noto_vxse51.xml")
        card = tab.page.locator(f'#reports .report[data-id="{stored["id"]}"]')
        expect(card).to_contain_text("震度速報")
        expect(card).to_contain_text("石川県")
        expect(card).to_contain_text("6強")
        assert tab.page.evaluate("window.notReloaded") is True, "the report must arrive live, not by reloading"

        if drill is not None:
            drilled = push(base, drill, "https://example.invalid/drill.xml")
            drill_card = tab.page.locator(f'#reports .report[data-id="{drilled["id"]}"]')
            expect(drill_card.locator(".badge-drill")).to_contain_text("訓練")
            expect(drill_card).to_contain_text("大津波警報")
        tab.shot("disaster-live-desktop")
        assert layout_problems(tab.page) == []
        assert tab.errors == []

        # An employee without a crisis role neither sees the page nor can follow the stream.
        other = open_tab(browser, base)
        sign_in(other, employee)
        assert other.page.goto("/acme/disaster/").status == 403
