"""The service worker's side of a safety push, in a real headless Chromium against a real daphne, Redis and
PostgreSQL: the push as the server really sends it (taken from a local push service, decrypted), handed to the
worker's handlers through Playwright's service worker handle.

- On `push` it shows the notification with its answer buttons and reports "delivered" (the delivery row moves
  on); a plain tap reports "opened".
- A button answers with the signed token (source push), and a confirmation replaces the notification.
- With the answer endpoint blocked (route interception also covers the worker's own requests) the answer is
  queued in the outbox and the notification says so; flushes from the worker and a page at the same time post
  it exactly once.
- An answer the server refuses (answers closed) says "could not be sent" and queues nothing.

Run it as its own pytest invocation with the other browser tests (STACK_NOTES.md, "Browser tests")."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Request, Worker, expect

from consumers.models import PushSubscription
from directory.models import Organization, Role, User
from safety import services
from safety.models import Answer, AnswerSource, Channel, Delivery, Incident, Recipient
from tests import factories
from tests.browser.test_pwa import SLUG, chromium, daphne_env, open_tab, while_browsing
from tests.browser.test_safety_browser import safety_user, tr
from tests.pushservice import LocalPushService
from tests.services import daphne, require_postgres, require_redis

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

NOTIFICATIONS = """(tag) => self.registration.getNotifications({tag}).then((list) => list.map((n) => ({
  title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction, data: n.data,
  renotify: n.renotify,
  actions: (n.actions || []).map((a) => ({action: a.action, title: a.title})),
})))"""


def send(org: Organization, person: User, title: str) -> Incident:
    """An incident sent to `person` (the push goes out at once: Celery runs eagerly in the test process)."""
    crisis = User.objects.filter(organization=org, login_id="crisis").first() or factories.person(
        org, "crisis", roles=(Role.CRISIS_MANAGER,)
    )
    incident = services.incident_create(organization=org, actor=crisis, title=title, message="安否を回答してください。")
    services.dispatch_create(incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [person.id]})
    return Incident.objects.select_related("organization").get(id=incident.id)


def push_state(incident: Incident, who: User) -> tuple[str, bool, bool]:
    row = Delivery.objects.get(incident=incident, person=who, channel=Channel.PUSH)
    return row.state, row.delivered_at is not None, row.opened_at is not None


def answers(incident: Incident, who: User) -> list[tuple[str, dict[str, Any], str]]:
    rows = Answer.objects.filter(incident=incident, person=who).order_by("id")
    return [(a.source, a.values, a.client_key) for a in rows]


def recipient_status(incident: Incident, who: User) -> tuple[str, int]:
    recipient = Recipient.objects.get(incident=incident, person=who)
    return recipient.status, recipient.answer_count


def service_worker(context: BrowserContext, page: Page) -> Worker:
    """The worker's handle, once it is active and controls the page."""
    assert page.evaluate("navigator.serviceWorker.ready.then((r) => Boolean(r.active))") is True
    page.reload()
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    workers = context.service_workers
    worker = workers[0] if workers else context.wait_for_event("serviceworker")
    worker.evaluate("() => self.TsunaguOutbox !== undefined")
    return worker


def posts_to(context: BrowserContext, path: str) -> list[str]:
    posts: list[str] = []

    def finished(request: Request) -> None:
        if request.method == "POST" and request.url.endswith(path):
            posts.append(request.post_data or "")

    context.on("requestfinished", finished)
    return posts


def eventually(page: Page, check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll a check made in Python (the database, events recorded here) while the browser keeps running."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(100)


def test_service_worker_answers_from_the_buttons_and_queues_when_blocked(push_service: LocalPushService) -> None:
    require_postgres()
    require_redis()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hanako = safety_user(org, "hanako", "山田", "花子")
    info = push_service.new_subscription()
    PushSubscription.objects.create(
        user=hanako, endpoint=info["endpoint"], p256dh=info["keys"]["p256dh"], auth=info["keys"]["auth"]
    )
    first = send(org, hanako, "【地震】震度6強 安否確認")
    second = send(org, hanako, "【津波】津波警報 安否確認")
    third = send(org, hanako, "【大雨】大雨特別警報 安否確認")
    pushed = {p["tag"]: p for p in (json.loads(r.payload) for r in push_service.wait_for(3))}
    one, two = pushed[f"incident-{first.id}"], pushed[f"incident-{second.id}"]
    # The real payload: the person's answer buttons (無事 / 要支援), each posting to her signed answer API.
    made = while_browsing(services._notification, first, hanako.id, "ja")
    assert set(one) == set(made) and one["queued"] == made["queued"] and one["failed"] == made["failed"]
    assert [(a["action"], a["title"], a["body"], a["done"]) for a in one["actions"]] == [
        (a["action"], a["title"], a["body"], a["done"]) for a in made["actions"]
    ]
    assert [a["action"] for a in one["actions"]] == ["safe", "help"]
    api_one, api_two = one["actions"][0]["post"], two["actions"][0]["post"]
    assert api_one.startswith(f"/{SLUG}/api/safety/answer/") and one["receipt"].startswith(api_one)
    assert while_browsing(push_state, first, hanako) == ("sent", False, False)

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base)
        page, context = tab.page, tab.page.context
        context.grant_permissions(["notifications"], origin=base)
        page.goto(f"/{SLUG}/")
        sw = service_worker(context, page)

        # 1. The push arrives: the notification with two buttons, and the delivered receipt.
        sw.evaluate("(data) => self.tsunaguPush(data)", one)
        shown = sw.evaluate(NOTIFICATIONS, one["tag"])
        assert len(shown) == 1, shown
        assert shown[0]["title"] == one["title"] and shown[0]["body"] == one["body"]
        assert shown[0]["requireInteraction"] is True
        assert shown[0]["actions"] == [{"action": a["action"], "title": a["title"]} for a in one["actions"]]
        assert shown[0]["data"]["actions"] == one["actions"] and shown[0]["data"]["url"] == one["url"]
        eventually(page, lambda: while_browsing(push_state, first, hanako)[0] == "delivered")
        assert while_browsing(push_state, first, hanako) == ("delivered", True, False)
        assert one["round"] == 1 and shown[0]["renotify"] is True
        # The same round again (a batch repeated after a worker crash) replaces it without alerting; the next
        # round (a resend) alerts again.
        sw.evaluate("(data) => self.tsunaguPush(data)", one)
        shown = sw.evaluate(NOTIFICATIONS, one["tag"])
        assert [(n["renotify"], n["data"]["round"]) for n in shown] == [(False, 1)]
        sw.evaluate("(data) => self.tsunaguPush(data)", {**one, "round": 2})
        shown = sw.evaluate(NOTIFICATIONS, one["tag"])
        assert [(n["renotify"], n["data"]["round"]) for n in shown] == [(True, 2)]

        # A plain tap says it was opened (and opens the page; a test has no tap, so no window may open).
        sw.evaluate("(data) => self.tsunaguOpen(data)", one)
        eventually(page, lambda: while_browsing(push_state, first, hanako)[0] == "opened")

        # 2. 無事 from the button: the answer arrives, and the confirmation takes the notification's place.
        result = sw.evaluate("(data) => self.tsunaguAnswer(data, 'safe')", one)
        assert result["state"] == "done" and result["status"] == 200, result
        (source, values, key), *rest = while_browsing(answers, first, hanako)
        assert rest == [] and source == AnswerSource.PUSH and values == {"safety": "safe", "help": "no"} and key
        assert while_browsing(recipient_status, first, hanako) == ("safe", 1)
        shown = sw.evaluate(NOTIFICATIONS, one["tag"])
        assert [(n["title"], n["body"], n["requireInteraction"], n["actions"]) for n in shown] == [
            (one["title"], one["actions"][0]["done"], False, [])
        ]

        # 3. The endpoint is blocked: 要支援 is queued in the outbox, and the notification says it will be sent.
        context.route(f"**{api_two}", lambda route: route.abort("internetdisconnected"))
        result = sw.evaluate("(data) => self.tsunaguAnswer(data, 'help')", two)
        assert result["state"] == "queued", result
        shown = sw.evaluate(NOTIFICATIONS, two["tag"])
        assert [n["body"] for n in shown] == [two["queued"]]
        items = sw.evaluate("() => self.TsunaguOutbox.list()")
        assert len(items) == 1, items
        item = items[0]
        assert item["url"] == api_two and item["incident"] == second.id
        assert item["body"] == {**two["actions"][1]["body"], "client_key": item["id"]}
        assert page.evaluate("window.TsunaguOutbox.count()") == 1  # one outbox for the pages and the worker
        assert while_browsing(answers, second, hanako) == []

        # Then 無事, still blocked: it waits behind the first (sent straight away, it would arrive first and the
        # older answer would win).
        assert sw.evaluate("(data) => self.tsunaguAnswer(data, 'safe')", two)["state"] == "queued"
        later = [i for i in sw.evaluate("() => self.TsunaguOutbox.list()") if i["id"] != item["id"]]
        assert [i["body"]["values"] for i in later] == [{"safety": "safe", "help": "no"}]
        assert while_browsing(answers, second, hanako) == []

        # Unblocked: the worker (asked by a page) and the page flush at the same time; each is posted once, in
        # the order given.
        context.unroute(f"**{api_two}")
        posts = posts_to(context, api_two)
        page.evaluate(
            """() => {
  navigator.serviceWorker.controller.postMessage({type: "flush"});
  return Promise.all([window.TsunaguOutbox.flush(), window.TsunaguOutbox.flush()]);
}"""
        )
        sw.evaluate("() => Promise.all([self.tsunaguFlush(), self.TsunaguOutbox.flush()])")
        eventually(page, lambda: len(while_browsing(answers, second, hanako)) == 2)
        page.wait_for_timeout(500)  # any further post would have been sent by now
        assert page.evaluate("window.TsunaguOutbox.count()") == 0
        assert [json.loads(p)["client_key"] for p in posts] == [item["id"], later[0]["id"]], posts
        assert while_browsing(answers, second, hanako) == [
            (AnswerSource.PUSH, {"help": "yes"}, item["id"]),
            (AnswerSource.PUSH, {"safety": "safe", "help": "no"}, later[0]["id"]),
        ]
        assert while_browsing(recipient_status, second, hanako) == ("safe", 2)

        # 4. Answers closed: the server refuses, the notification says to open it, and nothing is queued.
        while_browsing(services.incident_complete, incident=first, actor=None)
        result = sw.evaluate("(data) => self.tsunaguAnswer(data, 'safe')", one)
        assert result["state"] == "failed" and result["status"] == 409, result
        shown = sw.evaluate(NOTIFICATIONS, one["tag"])
        assert len(shown) == 1 and shown[0]["body"].startswith(one["failed"]), shown
        assert sw.evaluate("() => self.TsunaguOutbox.count()") == 0
        assert len(while_browsing(answers, first, hanako)) == 1
        assert tab.errors == []

        # 5. An answer made on the page without a connection, the page closed: the worker sends it later and,
        # with no page to show it, says so in a notification.
        link = services.answer_url(third, hanako.id)
        api_three = link.replace(f"/{SLUG}/answer/", f"/{SLUG}/api/safety/answer/")
        context.route(f"**{api_three}", lambda route: route.abort("internetdisconnected"))
        page.goto(link)
        page.wait_for_function("() => document.getElementById('answer')?.dataset.ready === '1'")
        page.locator('button.safety-choice[value="safe"]').click()
        expect(page.locator("#answer-queued")).to_be_visible()
        page.close()
        context.unroute(f"**{api_three}")
        assert sw.evaluate("() => self.tsunaguFlush()") == {"sent": 1, "dropped": 0, "kept": 0}
        assert while_browsing(answers, third, hanako)[0][:2] == (AnswerSource.LINK, {"safety": "safe"})
        shown = sw.evaluate(NOTIFICATIONS, f"incident-{third.id}")
        said = tr("ja", "Sent. Your answer from %(time)s has arrived.", time="\0").split("\0")[0]
        assert [n["title"] for n in shown] == [third.title] and shown[0]["body"].startswith(said), shown
