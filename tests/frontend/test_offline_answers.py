"""Answering without a connection, in a real headless Chromium against a real daphne, Redis and PostgreSQL.

The answer endpoint is blocked with Playwright's route interception (`set_offline` does not cover the service
worker's requests, which the context's routes do): the answer goes into the browser's outbox (IndexedDB
`tsunagu`/`outbox`) and the page says it will be sent when the connection is back. Unblocked, the `online` event
sends it, the page says "sent" and shows the answer, and the server has it exactly once, also after a reload
(the start-up flush finds nothing left to send) and when the first post did reach the server but its reply was
lost (the retry carries the same client_key). Screenshots: test-artifacts/screenshots/offline_answer_*.png.

Run it as its own pytest invocation with the other browser tests (STACK_NOTES.md, "Browser tests")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Request, Route, expect

from directory.models import Organization, Role, User
from safety import services
from safety.models import Answer, AnswerSource, Incident, Recipient
from tests import factories
from tests.browser.test_pwa import SLUG, chromium, daphne_env, open_tab, sign_in, while_browsing
from tests.browser.test_safety_browser import ANSWER_READY, safety_user, tr
from tests.services import daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

QUEUED = "Will be sent when you are back online"
SENT = "Sent. Your answer from %(time)s has arrived."
OUTBOX = "() => window.TsunaguOutbox.list()"
SW_READY = "navigator.serviceWorker.ready.then((r) => Boolean(r.active))"


def sent_incident(org: Organization, people: list[User]) -> Incident:
    """An incident sent to `people` (the sending itself is not run: the answer pages only need the requests)."""
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    incident = services.incident_create(
        organization=org, actor=crisis, title="【地震】震度6強 安否確認", message="安否を回答してください。"
    )
    services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [p.id for p in people]}
    )
    incident.refresh_from_db()
    return incident


def answers(incident: Incident, who: User) -> list[tuple[str, dict[str, Any], str]]:
    rows = Answer.objects.filter(incident=incident, person=who).order_by("id")
    return [(a.source, a.values, a.client_key) for a in rows]


def answer_count(incident: Incident, who: User) -> int:
    return int(Recipient.objects.get(incident=incident, person=who).answer_count)


def count_posts(context: BrowserContext, path: str) -> list[str]:
    """The answer posts that reached the network (page and service worker alike), by the page that sent them."""
    posts: list[str] = []

    def finished(request: Request) -> None:
        if request.method == "POST" and request.url.endswith(path):
            posts.append(request.post_data or "")

    context.on("requestfinished", finished)
    return posts


def controlled(page: Page) -> None:
    """Wait for the service worker, and reload so that it controls the page (as on every later visit)."""
    assert page.evaluate(SW_READY) is True
    page.reload()
    page.wait_for_function(ANSWER_READY)
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")


def test_answer_without_a_connection_is_queued_then_sent_exactly_once() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hanako = safety_user(org, "hanako", "山田", "花子")
    incident = sent_incident(org, [hanako])
    link = services.answer_url(incident, hanako.id)
    api = link.replace(f"/{SLUG}/answer/", f"/{SLUG}/api/safety/answer/")

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base)
        page, context = tab.page, tab.page.context
        page.goto(link + "?via=push")
        page.wait_for_function(ANSWER_READY)
        controlled(page)
        expect(page.locator("#answer")).to_have_attribute("data-outbox", api)
        posts = count_posts(context, api)

        # 1. No way to the server: the answer is kept in the browser, and the page says so.
        context.route(f"**{api}", lambda route: route.abort("internetdisconnected"))
        page.locator('button.safety-choice[value="safe"]').click()
        queued = page.locator("#answer-queued")
        expect(queued).to_be_visible()
        expect(queued).to_have_text(tr("ja", QUEUED))
        expect(page.locator("#answer-alert")).to_be_hidden()
        expect(page.locator('button.safety-choice[value="safe"]')).to_have_attribute("aria-pressed", "true")
        items = page.evaluate(OUTBOX)
        assert len(items) == 1, items
        item = items[0]
        assert item["url"] == api and item["incident"] == incident.id and item["label"] == "無事"
        assert item["body"]["values"] == {"safety": "safe"} and item["body"]["via"] == "push"
        assert item["body"]["client_key"] == item["id"] and re.fullmatch(r"[0-9a-f-]{36}", item["id"])
        assert while_browsing(answers, incident, hanako) == []
        assert posts == []
        tab.shot("offline_answer_queued")

        # 2. The connection is back: the `online` event sends it, and the page shows the answer as a normal one.
        context.unroute(f"**{api}")
        page.evaluate("window.dispatchEvent(new Event('online'))")
        sent = page.locator("#answer-sent")
        expect(sent).to_be_visible()
        expect(sent).to_contain_text(tr("ja", SENT, time="\0").split("\0")[0])
        expect(sent).to_contain_text(re.compile(r"\d\d:\d\d"))
        expect(queued).to_be_hidden()
        expect(page.locator("#answer-current")).to_contain_text("無事")
        assert page.evaluate("window.TsunaguOutbox.count()") == 0
        assert while_browsing(answers, incident, hanako) == [(AnswerSource.PUSH, {"safety": "safe"}, item["id"])]
        assert while_browsing(answer_count, incident, hanako) == 1
        tab.shot("offline_answer_sent")

        # 3. The next start flushes again and finds nothing to send.
        page.reload()
        page.wait_for_function(ANSWER_READY)
        page.evaluate("window.TsunaguOutbox.kick()")
        page.evaluate("navigator.serviceWorker.ready.then(() => new Promise((r) => setTimeout(r, 500)))")
        expect(page.locator("#answer-queued")).to_be_hidden()
        expect(page.locator("#answer-current")).to_contain_text("無事")
        assert len(posts) == 1, posts
        assert while_browsing(answers, incident, hanako) == [(AnswerSource.PUSH, {"safety": "safe"}, item["id"])]
        assert while_browsing(answer_count, incident, hanako) == 1
        assert tab.errors == []


def test_in_app_answer_whose_reply_was_lost_is_stored_once() -> None:
    """The post reached the server but the reply never came back (the phone lost the network just then): the
    page queues the answer with the same client_key, the person's link API gets it again, and the server keeps
    the one it has. Meanwhile the person's list of requests says the answer is waiting, then sent."""
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    jiro = safety_user(org, "jiro", "鈴木", "次郎")
    incident = sent_incident(org, [jiro])
    mine = f"/{SLUG}/api/safety/mine/{incident.id}/"

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base)
        page, context = tab.page, tab.page.context
        sign_in(tab, jiro)
        page.goto(f"/{SLUG}/safety/{incident.id}/")
        page.wait_for_function(ANSWER_READY)
        controlled(page)
        api = page.locator("#answer").get_attribute("data-outbox") or ""
        assert re.fullmatch(rf"/{SLUG}/api/safety/answer/[^/]+/", api), "the app page has no link API to queue for"

        def lose_the_reply(route: Route) -> None:
            route.fetch()  # the server records the answer ...
            route.abort("connectionreset")  # ... and the page never hears back

        context.route(f"**{mine}", lose_the_reply)
        context.route(f"**{api}", lambda route: route.abort("internetdisconnected"))
        page.locator('.choice-row:has(input[name="help"][value="yes"])').click()
        page.locator('button.safety-choice[value="minor"]').click()
        expect(page.locator("#answer-queued")).to_be_visible()
        expect(page.locator("#answer-queued")).to_have_text(tr("ja", QUEUED))
        items = page.evaluate(OUTBOX)
        assert len(items) == 1 and items[0]["url"] == api, items
        key = items[0]["id"]
        assert while_browsing(answers, incident, jiro) == [(AnswerSource.APP, {"safety": "minor", "help": "yes"}, key)]

        # The list of the person's requests says it is waiting.
        page.goto(f"/{SLUG}/safety/")
        card = page.locator(f'.my-request[data-incident="{incident.id}"]')
        expect(card.locator("[data-outbox-queued]")).to_be_visible()
        expect(card.locator("[data-outbox-queued]")).to_have_text(tr("ja", QUEUED))
        tab.shot("offline_answer_queued_list")

        context.unroute(f"**{mine}")
        context.unroute(f"**{api}")
        page.evaluate("window.dispatchEvent(new Event('online'))")
        expect(card.locator("[data-outbox-sent]")).to_be_visible()
        expect(card.locator("[data-outbox-queued]")).to_be_hidden()
        assert page.evaluate("window.TsunaguOutbox.count()") == 0
        # Sent twice, stored once.
        assert while_browsing(answers, incident, jiro) == [(AnswerSource.APP, {"safety": "minor", "help": "yes"}, key)]
        assert while_browsing(answer_count, incident, jiro) == 1
        assert tab.errors == []
