"""Safety confirmation in a real headless Chromium against a real daphne, Redis and PostgreSQL.

A crisis manager creates an incident and sends it to everyone in one browser context; an employee who is not
signed in opens the signed link in a second context and answers with one tap; the result list in the first
context shows the answer. Meanwhile a signed-in employee sees the in-app banner appear live, answers in the app,
and the banner goes. Then the link page in English, location shared and refused, a link that is not valid, and
screenshots of each on a phone to test-artifacts/screenshots/safety-answer-*.png.

Run it as its own pytest invocation (STACK_NOTES.md, "Browser tests"); see tests/browser/test_pwa.py. Celery
runs eagerly inside daphne (`daphne_env`), so the send runs as soon as the admin's request commits."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.utils import translation
from playwright.sync_api import Page, expect

from directory.models import Organization, Role, User
from safety import services
from safety.models import Answer, AnswerSource, Delivery, Incident
from tests import factories
from tests.browser.test_pwa import (
    LIVE_READY,
    SLUG,
    Tab,
    chromium,
    daphne_env,
    layout_problems,
    open_tab,
    person,
    sign_in,
    while_browsing,
)
from tests.services import daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

ANSWER_READY = "() => document.getElementById('answer')?.dataset.ready === '1'"
TITLE = "【地震】震度6強 安否確認"
MESSAGE = "本日 9:58 に関東地方で強い地震がありました。\n全員、安否を回答してください。出社は不要です。"


def tr(language: str, message: str, **values: Any) -> str:
    """What the page shows for a msgid: the catalog's text (English until a translation is merged)."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def safety_user(org: Organization, login_id: str, last: str, first: str, **kwargs: Any) -> User:
    return person(org, login_id, last=last, first=first, anpi_login_id=f"anpi-{login_id}", **kwargs)


def phone_problems(page: Page) -> list[str]:
    """`layout_problems`, except the radio buttons and checkboxes themselves: on the answer page the tap
    target is the whole row (label) around each, which is checked here instead."""
    problems = [p for p in layout_problems(page) if not p.startswith(('<input type="radio"', '<input type="checkbox"'))]
    rows = page.evaluate(
        "() => [...document.querySelectorAll('.choice-row')].map((r) => r.getBoundingClientRect().height)"
    )
    problems += [f"choice row {h:.1f}px tall" for h in rows if h < 47.5]
    return problems


def admin_creates_and_sends(tab: Tab, title: str, message: str) -> int:
    """The crisis manager registers the incident on the incident form and sends it to everyone from its page
    (the administrators' pages, frontend/safety_views.py); returns the incident's id."""
    page = tab.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Send this to N people?"
    page.goto(f"/{SLUG}/safety/incidents/new/")
    page.fill("#f-title", title)
    page.fill("#f-message", message)
    with page.expect_navigation():
        page.locator("#incident-save").click()
    match = re.search(r"/safety/incidents/(\d+)/$", page.url)
    assert match, page.url
    expect(page.locator('input[name="target"][value="everyone"]')).to_be_checked()
    expect(page.locator("#send-preview")).to_contain_text("3")  # three people have a safety-confirmation ID
    page.locator("#send-button").click()
    expect(page.locator("#action-status")).to_be_visible()
    return int(match.group(1))


def test_admin_sends_and_an_employee_answers_from_the_link_with_one_tap() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    crisis = person(org, "crisis", last="危機", first="管理", roles=(Role.CRISIS_MANAGER,))
    hanako = safety_user(org, "hanako", "山田", "花子")
    jiro = safety_user(org, "jiro", "鈴木", "次郎")
    ken = safety_user(org, "ken", "Smith", "Ken", language="en")

    with daphne(daphne_env()) as base, chromium() as browser:
        # Jiro has the app open on his phone before anything happens.
        d = open_tab(browser, base)
        sign_in(d, jiro)
        d.page.wait_for_function(LIVE_READY)
        expect(d.page.locator("#safety-banner")).to_have_count(0)
        d.page.evaluate("window.notReloaded = true")

        # 1. The crisis manager, on a laptop, registers the incident and sends it to everyone, on the pages.
        a = open_tab(browser, base, viewport="desktop")
        sign_in(a, crisis)
        incident_id = admin_creates_and_sends(a, TITLE, MESSAGE)
        incident = while_browsing(Incident.objects.select_related("organization").get, id=incident_id)
        assert incident.status in ("sending", "accepting")  # accepting once the send has finished
        deliveries = while_browsing(lambda: list(Delivery.objects.filter(incident=incident).values_list("person_id")))
        assert {p for (p,) in deliveries} == {hanako.id, jiro.id, ken.id}

        # The banner reaches Jiro live (after its random 0-3 s spread), without a reload.
        banner = d.page.locator("#safety-banner")
        expect(banner).to_be_visible(timeout=10_000)
        expect(banner).to_contain_text(TITLE)
        expect(banner.locator("a")).to_have_attribute("href", f"/{SLUG}/safety/{incident_id}/")
        assert d.page.evaluate("window.notReloaded") is True
        expect(d.page.locator("#safety-requests")).to_be_visible()
        expect(d.page.locator("#safety-request-list")).to_contain_text(TITLE)
        d.shot("safety-answer-banner-ja-mobile")
        assert layout_problems(d.page) == []

        # 2. Hanako, not signed in, opens the link from the e-mail on her phone and taps 無事 once.
        b = open_tab(browser, base)
        link = services.answer_url(incident, hanako.id)
        response = b.page.goto(link)
        assert response is not None and response.status == 200
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "no-store" in response.headers["cache-control"]
        b.page.wait_for_function(ANSWER_READY)
        expect(b.page.locator("h1")).to_have_text(TITLE)
        expect(b.page.locator(".answer-message")).to_contain_text("出社は不要です。")
        expect(b.page.locator(".topbar")).to_contain_text("ACME株式会社")
        safe = b.page.locator('button.safety-choice[value="safe"]')
        expect(safe).to_contain_text("無事")
        box = safe.bounding_box()
        assert box is not None and box["height"] >= 48 and box["width"] >= 390 - 2 * 16 - 2, box
        b.shot("safety-answer-ja-mobile")
        assert phone_problems(b.page) == []

        safe.click()
        sent = b.page.locator("#answer-sent")
        expect(sent).to_be_visible()
        expect(sent).to_contain_text(re.compile(r"\d\d:\d\d"))
        expect(safe).to_have_attribute("aria-pressed", "true")
        expect(b.page.locator("#answer-current")).to_contain_text("無事")
        answer = while_browsing(Answer.objects.get, incident_id=incident_id, person_id=hanako.id)
        assert answer.source == AnswerSource.LINK and answer.values == {"safety": "safe"}
        b.shot("safety-answer-ja-mobile-sent")
        assert phone_problems(b.page) == []

        # She adds that her home is partly damaged, with a comment; the safety answer stays.
        b.page.locator('.choice-row:has(input[name="home"][value="partial"])').click()
        b.page.fill("#q-comment", "家族も無事です。")
        b.page.locator("#answer-send").click()
        expect(b.page.locator("#send-state")).to_have_class(re.compile("is-ok"))
        latest = while_browsing(
            lambda: Answer.objects.filter(incident_id=incident_id, person_id=hanako.id).latest("id")
        )
        assert latest.values == {"safety": "safe", "home": "partial", "comment": "家族も無事です。"}

        # 3. The crisis manager's result list shows her answer (the open incident's page refreshes by itself).
        row = a.page.locator(f'#results-body tr[data-person="{hanako.id}"]')
        expect(row.locator(".st-safe")).to_be_visible(timeout=20_000)
        expect(row).to_contain_text("山田 花子")
        a.shot("safety-answer-admin-result-laptop")

        # Jiro answers in the app from the banner: 軽傷, and that he needs help.
        with d.page.expect_navigation():
            banner.locator("a").click()
        d.page.wait_for_function(ANSWER_READY)
        expect(d.page.locator("#safety-banner")).to_be_hidden()
        d.page.locator('.choice-row:has(input[name="help"][value="yes"])').click()
        d.page.locator('button.safety-choice[value="minor"]').click()
        expect(d.page.locator("#answer-sent")).to_be_visible()
        jiro_answer = while_browsing(Answer.objects.get, incident_id=incident_id, person_id=jiro.id)
        assert jiro_answer.source == AnswerSource.APP and jiro_answer.values == {"safety": "minor", "help": "yes"}
        assert jiro_answer.needs_help
        d.shot("safety-answer-app-ja-mobile")
        assert phone_problems(d.page) == []
        d.page.goto(f"/{SLUG}/home/")
        d.page.wait_for_function(LIVE_READY)
        expect(d.page.locator("#safety-request-list")).to_contain_text("軽傷")
        expect(d.page.locator("#safety-banner")).to_have_count(0)
        d.page.goto(f"/{SLUG}/safety/")
        expect(d.page.locator(f'.my-request[data-incident="{incident_id}"]')).to_contain_text("軽傷")
        d.shot("safety-answer-mine-ja-mobile")
        assert layout_problems(d.page) == []

        # 4. Ken reads English: the same link page in his language.
        c = open_tab(browser, base, language="en")
        c.page.goto(services.answer_url(incident, ken.id))
        c.page.wait_for_function(ANSWER_READY)
        expect(c.page.locator("html")).to_have_attribute("lang", "en")
        expect(c.page.locator('button.safety-choice[value="safe"]')).to_contain_text("Safe")
        expect(c.page.locator("main")).to_contain_text("Are you safe?")
        expect(c.page.locator("main")).to_contain_text(tr("en", "One tap sends your answer."))
        c.shot("safety-answer-en-mobile")
        assert phone_problems(c.page) == []
        # On a laptop the three answers stand side by side.
        e = open_tab(browser, base, viewport="desktop", language="en")
        e.page.goto(services.answer_url(incident, ken.id))
        e.page.wait_for_function(ANSWER_READY)
        tops = {round(box["y"]) for box in (el.bounding_box() for el in e.page.locator(".safety-choice").all()) if box}
        assert len(tops) == 1, tops
        e.shot("safety-answer-en-desktop")
        assert phone_problems(e.page) == []

        # Ken also has the app open, in English, on another page: the banner is there until he answers from
        # the link on another device, then it goes by itself.
        f = open_tab(browser, base, language="en")
        sign_in(f, ken)
        f.page.goto(f"/{SLUG}/profile/")
        f.page.wait_for_function(LIVE_READY)
        ken_banner = f.page.locator("#safety-banner")
        expect(ken_banner).to_be_visible()
        expect(ken_banner).to_contain_text(f"Safety check: {TITLE}")
        expect(ken_banner).to_contain_text("Answer now")
        f.shot("safety-answer-banner-en-mobile")
        assert layout_problems(f.page) == []
        f.page.evaluate("window.notReloaded = true")
        c.page.locator('button.safety-choice[value="safe"]').click()
        expect(c.page.locator("#answer-sent")).to_be_visible()
        expect(ken_banner).to_be_hidden()
        assert f.page.evaluate("window.notReloaded") is True

        for tab in (a, b, c, d, e, f):
            assert tab.errors == [], tab.errors


def test_location_is_sent_only_after_the_tap_and_a_refusal_still_answers() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hanako = safety_user(org, "hanako", "山田", "花子")
    ken = safety_user(org, "ken", "Smith", "Ken", language="en")
    incident = services.incident_create(
        organization=org,
        actor=None,
        title="台風10号 安否確認（訓練）",
        message="訓練です。",
        collect_location=True,
        is_drill=True,
    )
    services.dispatch_create(incident=incident, actor=None, target={"mode": "everyone"})
    incident = Incident.objects.select_related("organization").get(id=incident.id)

    with daphne(daphne_env()) as base, chromium() as browser:
        # Hanako allows the position: nothing is sent until she taps "Share my location".
        b = open_tab(browser, base)
        b.page.context.grant_permissions(["geolocation"], origin=base)
        b.page.context.set_geolocation({"latitude": 35.681236, "longitude": 139.767125, "accuracy": 30})
        b.page.goto(services.answer_url(incident, hanako.id))
        b.page.wait_for_function(ANSWER_READY)
        expect(b.page.locator(".answer-drill")).to_be_visible()
        expect(b.page.locator("#location")).to_be_visible()
        b.shot("safety-answer-location-ja-mobile")
        assert phone_problems(b.page) == []
        b.page.locator('button.safety-choice[value="safe"]').click()
        expect(b.page.locator("#answer-sent")).to_be_visible()
        first = while_browsing(Answer.objects.get, incident=incident, person_id=hanako.id)
        assert first.latitude is None and first.longitude is None
        b.page.locator("#location-share").click()
        expect(b.page.locator("#location-state")).to_have_class("is-ok")
        b.page.wait_for_function("() => document.querySelector('#location-state').textContent.includes('30')")
        latest = while_browsing(lambda: Answer.objects.filter(incident=incident, person_id=hanako.id).latest("id"))
        assert (latest.latitude, latest.longitude, latest.accuracy) == (35.681236, 139.767125, 30)
        assert latest.values == {"safety": "safe"}

        # Ken refuses: he is told so and still answers.
        c = open_tab(browser, base, language="en")
        c.page.goto(services.answer_url(incident, ken.id))
        c.page.wait_for_function(ANSWER_READY)
        c.page.locator("#location-share").click()
        expect(c.page.locator("#location-state")).to_have_class("is-warn")
        expect(c.page.locator("#location-state")).to_contain_text(tr("en", "You can still answer.").split(".")[0][:8])
        c.page.locator('button.safety-choice[value="serious"]').click()
        expect(c.page.locator("#answer-sent")).to_be_visible()
        answer = while_browsing(Answer.objects.get, incident=incident, person_id=ken.id)
        assert answer.status == "serious" and answer.latitude is None
        c.shot("safety-answer-location-refused-en-mobile")
        assert phone_problems(c.page) == []

        # An altered link: a page that says so, not an error.
        response = c.page.goto(f"/{SLUG}/answer/WzEsMSwxXQ:1xUiqG:not-a-real-signature-at-all/")
        assert response is not None and response.status == 404
        expect(c.page.locator("h1")).to_contain_text(tr("en", "This link is not valid or has expired"))
        c.shot("safety-answer-invalid-en-mobile")
        assert layout_problems(c.page) == []
        assert b.errors == [] and c.errors == []
