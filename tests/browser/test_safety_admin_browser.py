"""The administrators' safety-confirmation pages in a real headless Chromium against a real daphne and
PostgreSQL: a crisis manager registers an incident through the form (text from a template, a custom question,
an administrator to notify), sends it to everyone after the live "reaches N people" preview, sees the push go
out to the local push service and the deliveries counted, sees an answer given from the push link arrive in the
result list and the tally without reloading, enters a proxy answer for someone reached by phone, and completes
the incident. Every page is checked for what a person would trip over on a laptop and a phone.

Run it as its own pytest invocation (STACK_NOTES.md, "Browser tests"); see tests/browser/test_pwa.py.
Screenshots go to test-artifacts/screenshots/safety-admin-*.png."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.utils import translation
from playwright.sync_api import Page, expect

from consumers.models import PushSubscription
from directory.importer import user_search_text
from directory.models import Organization, Role, User
from safety import services
from safety.models import Answer, Incident, IncidentStatus, MessageTemplate
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
from tests.pushservice import LocalPushService
from tests.services import daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def tr(language: str, message: str, **values: Any) -> str:
    """What the page shows for a msgid: the catalog's text (English until a translation is merged)."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def named(org: Organization, login_id: str, last: str, first: str, **kwargs: Any) -> User:
    user = person(org, login_id, last=last, first=first, **kwargs)
    user.search_text = user_search_text(user)  # so the new names are found
    user.save(update_fields=["search_text"])
    return user


def problems(page: Page) -> list[str]:
    # A radio button sits inside a label at least 48 px tall, which is what the thumb hits.
    return [p for p in layout_problems(page) if 'type="radio"' not in p]


def test_admin_registers_sends_and_follows_an_incident(push_service: LocalPushService) -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    tokyo = factories.department(org, "T")
    sales = factories.department(org, "TS", parent=tokyo)
    osaka = factories.department(org, "O")
    for d, name in ((tokyo, "東京本社"), (sales, "営業部"), (osaka, "大阪支社")):
        d.name = name
        d.save(update_fields=["name"])
    admin = named(org, "anpi", "管理", "太郎", roles=(Role.CRISIS_MANAGER,), department=tokyo)
    named(org, "bucho", "部長", "一郎", roles=(Role.MANAGER,), department=tokyo)
    hanako = named(org, "hanako", "山田", "花子", department=sales, anpi_login_id="hanako")
    named(org, "ken", "佐藤", "健", department=osaka, anpi_login_id="ken")
    named(org, "jiro", "鈴木", "次郎", department=osaka, anpi_login_id="jiro", email="")
    named(org, "guest", "外部", "客", department=osaka)  # no safety-confirmation ID: never sent to
    subscription = push_service.new_subscription()
    PushSubscription.objects.create(
        user=hanako,
        endpoint=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
    )
    services.template_create(
        organization=org,
        name="地震（初報）",
        title="【安否確認】地震が発生しました",
        body="大きな地震がありました。落ち着いて、下のリンクから安否を回答してください。",
    )
    past = services.incident_create(organization=org, actor=admin, title="9月の避難訓練", message="訓練", is_drill=True)
    services.incident_complete(incident=past, actor=admin)
    ja = lambda msgid, **v: tr("ja", msgid, **v)  # noqa: E731

    with daphne(daphne_env()) as base, chromium() as browser:
        laptop = open_tab(browser, base, viewport="desktop")
        page = laptop.page
        page.on("dialog", lambda dialog: dialog.accept())
        sign_in(laptop, admin)

        # The list, with the drill of September.
        page.goto(f"/{SLUG}/safety/incidents/")
        expect(page.locator(".incident-item")).to_have_count(1)
        expect(page.locator(".incident-item .drill-tag")).to_be_visible()
        expect(page.locator(".incident-item .inc-status")).to_have_text(ja("Completed"))
        laptop.shot("safety-admin-list-laptop")
        assert problems(page) == []

        # The form: the default questions are there; text comes from a template.
        page.locator("a", has_text=ja("New incident")).click()
        expect(page.locator("#questions .question")).to_have_count(5)
        page.locator("#template-open").click()
        page.locator("#template-found button", has_text="地震（初報）").click()
        expect(page.locator("#f-title")).to_have_value("【安否確認】地震が発生しました")
        expect(page.locator("#f-message")).to_have_value(
            "大きな地震がありました。落ち着いて、下のリンクから安否を回答してください。"
        )
        page.locator("#f-message").press("End")
        page.locator("#f-message").type("\n本社ビルは立入禁止です。")
        # Drop the home question, add one of our own.
        page.locator('.question[data-key="home"] button.danger').click()
        page.locator('#question-add [data-add="single"]').click()
        new = page.locator("#questions .question").last
        new.locator('[data-field="label"]').fill("社用車の状況")
        new.locator('[data-field="choice-label"]').nth(0).fill("使用可")
        new.locator('[data-field="choice-label"]').nth(1).fill("使用不可")
        # Notify the manager.
        page.locator("#notify-q").fill("部長")
        page.locator("#notify-found button").first.click()
        expect(page.locator("#notify-chosen .chip")).to_contain_text("部長 一郎")
        page.locator("#f-location").check()
        laptop.shot("safety-admin-form-laptop")
        assert problems(page) == []
        with page.expect_navigation():
            page.locator("#incident-save").click()

        incident = while_browsing(Incident.objects.get, title="【安否確認】地震が発生しました")
        assert page.url == f"{base}/{SLUG}/safety/incidents/{incident.id}/"
        assert incident.status == IncidentStatus.DRAFT and incident.collect_location
        assert [q["key"] for q in incident.questions] == ["safety", "help", "work", "comment", "q1"]
        assert incident.questions[-1]["choices"][1]["label"] == "使用不可"
        assert incident.message.endswith("本社ビルは立入禁止です。")
        expect(page.locator("#incident-status")).to_have_text(ja("Draft"))

        # Send to everyone: three people have a safety-confirmation ID.
        expect(page.locator("#send-preview")).to_have_text(ja("This reaches %(n)s people.", n=3))
        page.locator("#send-button").click()
        expect(page.locator("#action-status")).to_have_text(ja("Sending to %(n)s people.", n=3))
        pushes = push_service.wait_for(1)
        link = json.loads(pushes[0].payload)["url"]
        # Sending finishes; the page learns it from the incident's event.
        expect(page.locator("#incident-status")).to_have_text(ja("Accepting answers"), timeout=15_000)
        expect(page.locator("#dispatch-list li")).to_have_count(1)
        expect(page.locator("#dispatch-list .run-done")).to_be_visible()
        deliveries = page.locator("#deliveries table")
        expect(deliveries.locator("tr", has_text=ja("Push")).locator("td .n").nth(1)).to_have_text("1")  # sent
        expect(deliveries.locator("tr", has_text=ja("E-mail")).locator("td .n").nth(1)).to_have_text("2")
        expect(deliveries.locator("tr", has_text=ja("In the app")).locator("td .n").nth(1)).to_have_text("3")

        # Hanako answers from the push link, without signing in; the page shows it without reloading.
        page.evaluate("window.notReloaded = true")
        token = urlsplit(link).path.rstrip("/").rsplit("/", 1)[1]
        stranger = browser.new_context(base_url=base)
        answered = stranger.request.post(
            f"/{SLUG}/api/safety/answer/{token}/",
            data={"values": {"safety": "safe", "help": "no", "q1": "c1"}, "via": "push"},
        )
        assert answered.status == 200, answered.text()
        stranger.close()
        row = page.locator("#results-body tr", has_text="山田 花子")
        expect(row.locator(".st-safe")).to_have_text(ja("Safe"), timeout=15_000)
        expect(row).to_contain_text(ja("From the notification"))
        assert page.evaluate("window.notReloaded") is True

        # Ken was reached by phone: a proxy answer.
        page.locator("#results-body tr", has_text="佐藤 健").locator("[data-history]").click()
        dialog = page.locator("#person-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#history")).to_contain_text(ja("No answers yet."))
        dialog.locator("label.safety-choice", has_text="軽傷").click()
        dialog.locator('input[name="proxy-help"][value="yes"]').check()
        dialog.locator("#proxy-note").fill("電話で確認")
        laptop.shot("safety-admin-proxy-laptop")
        dialog.locator("#proxy-form button.primary").click()
        expect(dialog.locator("#proxy-status")).to_have_text(ja("The proxy answer has been saved."))
        expect(dialog.locator("#history")).to_contain_text("電話で確認")
        expect(dialog.locator("#history > li")).to_have_count(1)
        expect(dialog.locator("#history > li")).to_contain_text(ja("Proxy answer"))
        dialog.locator("[data-close]").click()
        ken_row = page.locator("#results-body tr", has_text="佐藤 健")
        expect(ken_row.locator(".st-minor")).to_be_visible()
        expect(ken_row).to_contain_text(ja("Proxy answer"))
        expect(ken_row).to_contain_text(ja("Entered by %(name)s", name="管理 太郎"))
        expect(ken_row.locator(".help-flag")).to_be_visible()

        # The tally: Sales 1 safe; Osaka 1 minor, 1 without an answer; everyone 2 of 3.
        foot = page.locator("#tally-foot tr")
        expect(foot.locator("td .n").nth(0)).to_have_text("1")  # safe
        expect(foot.locator("td .n").nth(1)).to_have_text("1")  # minor
        expect(foot.locator("td .n").nth(4)).to_have_text("1")  # no answer
        expect(page.locator("#tally-body tr", has_text="大阪支社").locator("td .n").nth(5)).to_have_text("1")  # help
        expect(page.locator("#overall .overall-line")).to_contain_text(
            ja("%(answered)s of %(total)s answered", answered=2, total=3)
        )

        # Filters: people who have not answered; the CSV link follows.
        page.locator("#r-answer").select_option("unanswered")
        expect(page.locator("#results-body tr")).to_have_count(1)
        expect(page.locator("#results-body tr")).to_contain_text("鈴木 次郎")
        assert "answer=unanswered" in (page.locator("#csv-link").get_attribute("href") or "")
        page.locator("#r-answer").select_option("")
        expect(page.locator("#results-body tr")).to_have_count(3)

        # A resend to those who have not answered reaches one person.
        expect(page.locator('#send-panel input[value="filter"]')).to_be_checked()
        expect(page.locator("#send-answer")).to_have_value("unanswered")
        expect(page.locator("#send-preview")).to_have_text(ja("This reaches 1 person."))
        page.locator("#result-filters").scroll_into_view_if_needed()
        laptop.shot("safety-admin-detail-laptop")
        assert problems(page) == []

        # A change after answers: the questions are locked, the title can still change.
        page.locator("#edit-link").click()
        expect(page.locator(".locked")).to_be_visible()
        expect(page.locator('#questions [data-field="label"]').first).to_be_disabled()
        page.locator("#f-title").fill("【安否確認】地震が発生しました（第2報）")
        with page.expect_navigation():
            page.locator("#incident-save").click()
        expect(page.locator("#incident-title")).to_have_text("【安否確認】地震が発生しました（第2報）")
        changed = while_browsing(Incident.objects.get, id=incident.id)
        assert changed.title.endswith("（第2報）") and changed.questions == incident.questions

        # The same pages on a phone.
        phone = open_tab(browser, base, viewport="mobile")
        phone.page.on("dialog", lambda dialog: dialog.accept())
        sign_in(phone, admin)
        for name, path in (
            ("list", f"/{SLUG}/safety/incidents/"),
            ("form", f"/{SLUG}/safety/incidents/new/"),
            ("detail", f"/{SLUG}/safety/incidents/{incident.id}/"),
            ("templates", f"/{SLUG}/safety/templates/"),
        ):
            phone.page.goto(path)
            phone.page.wait_for_load_state("networkidle")
            phone.shot(f"safety-admin-{name}-phone")
            assert problems(phone.page) == [], name

        # Complete: answers close, sending goes away.
        page.locator("#complete-button").click()
        expect(page.locator("#incident-status")).to_have_text(ja("Completed"))
        expect(page.locator("#send-panel")).to_be_hidden()
        expect(page.locator("#complete-button")).to_be_hidden()
        assert laptop.errors == [] and phone.errors == []

    answers = while_browsing(lambda: list(Answer.objects.filter(incident=incident).order_by("id")))
    assert [(a.source, a.status, a.proxy_note) for a in answers] == [
        ("push", "safe", ""),
        ("proxy", "minor", "電話で確認"),
    ]
    assert while_browsing(Incident.objects.get, id=incident.id).status == IncidentStatus.COMPLETED


def test_pages_in_english_on_a_phone() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    admin = named(org, "anpi", "Kanri", "Taro", roles=(Role.ADMIN_ANPI,), language="en")
    named(org, "hanako", "Yamada", "Hanako", anpi_login_id="hanako", language="en")
    incident = services.incident_create(
        organization=org, actor=admin, title="Earthquake in the Kanto region", message="Please answer."
    )
    services.dispatch_create(incident=incident, actor=admin, target={"mode": "everyone"})
    en = lambda msgid, **v: tr("en", msgid, **v)  # noqa: E731

    with daphne(daphne_env()) as base, chromium() as browser:
        phone = open_tab(browser, base, viewport="mobile", language="en")
        sign_in(phone, admin)
        for name, path, heading in (
            ("list", f"/{SLUG}/safety/incidents/", "Safety checks"),
            ("form", f"/{SLUG}/safety/incidents/new/", "New incident"),
            ("detail", f"/{SLUG}/safety/incidents/{incident.id}/", "Earthquake in the Kanto region"),
        ):
            phone.page.goto(path)
            expect(phone.page.locator("main h1")).to_have_text(en(heading))
            expect(phone.page.locator("html")).to_have_attribute("lang", "en")
            phone.page.wait_for_load_state("networkidle")
            phone.shot(f"safety-admin-{name}-phone-en")
            assert problems(phone.page) == [], name

        # Templates: add one, find it, change it, delete it.
        page = phone.page
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"/{SLUG}/safety/templates/")
        expect(page.locator("#template-list")).to_contain_text(en("No templates yet."))
        form = page.locator("#template-new form")
        form.locator('[name="name"]').fill("Earthquake, first notice")
        form.locator('[name="title"]').fill("Earthquake: are you safe?")
        form.locator('[name="body"]').fill("Please answer with the link below.")
        form.locator("button.primary").click()
        item = page.locator(".template-item", has_text="Earthquake, first notice")
        expect(item).to_contain_text("Please answer with the link below.")
        page.locator("#templates-q").fill("typhoon")
        expect(page.locator("#template-list")).to_contain_text(en("No templates found."))
        page.locator("#templates-q").fill("earthquake")
        expect(item).to_be_visible()
        item.locator('[data-act="edit"]').click()
        edit = page.locator("#template-list form")
        edit.locator('[name="body"]').fill("Answer now, please.")
        edit.locator("button.primary").click()
        expect(page.locator(".template-item")).to_contain_text("Answer now, please.")
        phone.shot("safety-admin-templates-phone-en")
        assert problems(page) == []
        page.locator('.template-item [data-act="delete"]').click()
        expect(page.locator(".template-item")).to_have_count(0)
        assert while_browsing(lambda: list(MessageTemplate.objects.all())) == []
        assert phone.errors == []
