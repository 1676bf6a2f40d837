"""The live disaster board and instructions (対策指示) in a real headless Chromium against a real daphne, Redis
and PostgreSQL.

A crisis manager watches an incident's board on a laptop (1366x768) while an employee answers 重傷 and asks for
help on her phone: the board's answered count, its 重傷 count and its attention list change without a reload.
The crisis manager then posts two instructions from the board's form: they appear on the employee's open answer
page, newest first and marked new, without a reload, and on the board's own list; another employee who was sent
the incident sees "新しい対策指示" in the in-app banner on his home page, someone who was not sent it sees nothing
and asks nothing, and the employee's subscription receives the instruction's push (tag and answer-page address).
A crisis manager who uses talk opens the instruction room from the board with two people chosen in its dialog
and follows the board's link into the talk room. Completing the incident freezes an open board without a reload
(the frozen banner and the report, no form), a late answer still corrects the frozen numbers, and a board opened
on the frozen incident subscribes from its own seq: the socket answers "subscribed" and sends no second snapshot.
Screenshots: test-artifacts/screenshots/board-laptop.png (and -fold, the first screen), board-employee-phone.png,
board-room-dialog-laptop.png, board-frozen-laptop.png (and -fold).

The page's elements are the DOM contract of the board and answer pages (see frontend/templates/frontend/safety/).
Run it as its own pytest invocation (STACK_NOTES.md, "Browser tests"); see tests/browser/test_pwa.py."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.utils import translation
from playwright.sync_api import Browser, Locator, Page, expect

from chat.models import Membership, RoomKind
from consumers.models import PushSubscription
from directory.models import Department, Organization, Role, User
from safety import services
from safety.board import board_touch
from safety.models import Answer, Incident, Instruction, Recipient
from tests import factories
from tests.browser.test_pwa import (
    LIVE_READY,
    SHOTS,
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
from tests.browser.test_safety_browser import phone_problems
from tests.browser.test_talk_browser import TALK_READY, talker
from tests.pushservice import LocalPushService
from tests.services import daphne, require_postgres, require_redis

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ANSWER_READY = "() => document.getElementById('answer')?.dataset.ready === '1'"
BOARD_LIVE = "() => document.getElementById('board')?.dataset.liveState === 'live'"
TITLE = "【地震】震度6強 安否確認"
FIRST = "本社ビルから退避し、第二駐車場に集合してください。\n階段を使ってください。"
SECOND = "帰宅は指示があるまで待ってください。"
LIVE_SECONDS = 5  # "within a few seconds": ticker (≤0.5 s) and the page's 0–2 s spread, with room for a slow CI
# A change the ticker is not told of (no dirty mark) shows at its next unprompted read, every
# BOARD_REFRESH_SECONDS (5 s).
REFRESH_SECONDS = 12
POST_JSON = """async ([path, data]) => {
  const token = decodeURIComponent(document.cookie.match(/(?:^|; )csrftoken=([^;]+)/)[1]);
  const response = await fetch(path, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRFToken": token},
    body: JSON.stringify(data),
  });
  return {status: response.status, json: await response.json()};
}"""


def tr(language: str, message: str, context: str = "") -> str:
    """What the page shows for a msgid: the catalogue's text (English until a translation is merged)."""
    with translation.override(language):
        return translation.pgettext(context, message) if context else translation.gettext(message)


def open_laptop(browser: Browser, base: str) -> Tab:
    """A laptop screen of 1366x768, the commonest in Japanese offices (open_tab's "desktop" is 1280x800)."""
    context = browser.new_context(base_url=base, locale="ja-JP", viewport={"width": 1366, "height": 768})
    context.set_default_timeout(10_000)
    context.add_cookies([{"name": "django_language", "value": "ja", "url": base}])
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    return tab


def number(text: str) -> int:
    """The figure a tile shows ("3", "3人", "3 people")."""
    digits = re.sub(r"[^\d]", "", text)
    assert digits, f"no number in {text!r}"
    return int(digits)


def top(page: Page, selector: str) -> Locator:
    """The board-wide element, not a department row's own."""
    return page.locator(f"{selector}:not(#board-departments *)").first


def instruction_texts(page: Page, selector: str) -> list[str]:
    return list(page.locator(selector).evaluate_all("(items) => items.map((li) => li.textContent)"))


def named_department(org: Organization, code: str, name: str, parent: Department | None = None) -> Department:
    department = factories.department(org, code, parent)
    department.name = name
    department.save(update_fields=["name"])
    return department


def test_board_moves_live_and_an_instruction_reaches_the_employees_page(push_service: LocalPushService) -> None:
    require_postgres()
    require_redis()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hq = named_department(org, "HQ", "東京本社")
    sales = named_department(org, "SALES", "営業部", hq)
    plant = named_department(org, "PLANT", "大阪工場")
    crisis = person(org, "crisis", last="危機", first="管理", roles=(Role.CRISIS_MANAGER,), department=hq)
    hanako = person(org, "hanako", last="山田", first="花子", department=sales, anpi_login_id="anpi-hanako")
    jiro = person(org, "jiro", last="鈴木", first="次郎", department=plant, anpi_login_id="anpi-jiro")
    others = [
        person(org, f"p{n}", last=last, first=first, department=d, anpi_login_id=f"anpi-p{n}")
        for n, (last, first, d) in enumerate(
            [("佐藤", "健", hq), ("高橋", "美咲", sales), ("田中", "翔", plant), ("伊藤", "陽菜", plant)]
        )
    ]
    outsider = person(org, "outsider", last="外部", first="客", department=plant)  # not sent the incident
    incident = services.incident_create(
        organization=org, actor=crisis, title=TITLE, message="全員、安否を回答してください。"
    )
    services.dispatch_create(
        incident=incident,
        actor=crisis,
        target={"mode": "chosen", "person_ids": [hanako.id, jiro.id, *(p.id for p in others)]},
    )
    incident = Incident.objects.select_related("organization").get(id=incident.id)
    # Two had answered before the board was opened.
    for who, safety in ((others[0], "safe"), (others[2], "minor")):
        services.answer_submit(incident_id=incident.id, person=who, values={"safety": safety}, source="app")
    info = push_service.new_subscription()
    PushSubscription.objects.create(
        user=hanako, endpoint=info["endpoint"], p256dh=info["keys"]["p256dh"], auth=info["keys"]["auth"]
    )
    total = 2 + len(others)

    with daphne(daphne_env()) as base, chromium() as browser:
        # 1. The crisis manager opens the board on a laptop.
        a = open_laptop(browser, base)
        sign_in(a, crisis)
        board = a.page
        response = board.goto(f"/{SLUG}/safety/incidents/{incident.id}/board/")
        assert response is not None and response.status == 200, response and response.status
        board.wait_for_function(BOARD_LIVE)
        expect(board.locator("#board")).to_have_attribute("data-incident", str(incident.id))
        expect(board.locator("#board")).to_have_attribute("data-stream", f"board.{incident.id}")
        assert number(top(board, '[data-board="total"]').inner_text()) == total
        assert number(top(board, '[data-board="answered"]').inner_text()) == 2
        assert number(top(board, '[data-count="serious"]').inner_text()) == 0
        expect(board.locator(f'#board-attention li[data-person="{hanako.id}"]')).to_have_count(0)
        expect(board.locator(f'#board-departments [data-department="{sales.id}"]')).to_have_count(1)
        expect(board.locator("#board-chart svg, svg#board-chart").first).to_be_visible()
        expect(board.locator(".drill-banner")).to_have_count(0)  # not a drill (or hidden)
        board.evaluate("window.notReloaded = true")

        # The employee has her answer page open on her phone; Jiro is on his home page; the outsider too.
        b = open_tab(browser, base)
        sign_in(b, hanako)
        phone = b.page
        phone.goto(f"/{SLUG}/safety/{incident.id}/")
        phone.wait_for_function(ANSWER_READY)
        phone.wait_for_function(LIVE_READY)
        expect(phone.locator("#instructions")).to_be_hidden()
        phone.evaluate("window.notReloaded = true")
        c = open_tab(browser, base)
        sign_in(c, jiro)
        c.page.wait_for_function(LIVE_READY)
        d = open_tab(browser, base)
        sign_in(d, outsider)
        d.page.wait_for_function(LIVE_READY)
        asked: dict[str, list[str]] = {"jiro": [], "outsider": []}
        mine = f"/api/safety/mine/{incident.id}/"
        c.page.on("request", lambda r: asked["jiro"].append(r.url) if mine in r.url else None)
        d.page.on("request", lambda r: asked["outsider"].append(r.url) if mine in r.url else None)

        # 2. She answers 重傷 and that she needs help: the board follows within a few seconds.
        phone.locator('.choice-row:has(input[name="help"][value="yes"])').click()
        answered_at = time.monotonic()
        phone.locator('button.safety-choice[value="serious"]').click()
        expect(phone.locator("#answer-sent")).to_be_visible()
        timeout = LIVE_SECONDS * 1000
        expect(top(board, '[data-board="answered"]')).to_have_text(re.compile(r"^\D*3\D*$"), timeout=timeout)
        expect(top(board, '[data-count="serious"]')).to_have_text(re.compile(r"^\D*1\D*$"), timeout=timeout)
        attention = board.locator(f'#board-attention li[data-person="{hanako.id}"]')
        expect(attention).to_contain_text("山田", timeout=timeout)
        took = time.monotonic() - answered_at
        assert took < LIVE_SECONDS, f"the board took {took:.1f}s"
        expect(top(board, '[data-board="rate"]')).to_have_text(re.compile(rf"{round(300 / total)}\s*%"))
        # Serious comes first in the attention list.
        expect(board.locator("#board-attention li[data-person]").first).to_have_attribute("data-person", str(hanako.id))
        expect(board.locator(f'#board-departments [data-department="{sales.id}"]')).to_contain_text("営業部")
        answer = while_browsing(Answer.objects.get, incident_id=incident.id, person_id=hanako.id)
        assert answer.values == {"safety": "serious", "help": "yes"} and answer.needs_help

        # 3. The crisis manager posts two instructions from the board's form.
        board.on("dialog", lambda dialog: dialog.accept())  # should the form ask "send to everyone?"
        form = board.locator("form#instruction-form")
        for body in (FIRST, SECOND):
            form.locator("textarea[name=body]").fill(body)
            send = form.locator('button:not([type]), [type="submit"]').first
            send.click()
            # Posted: the form is empty and ready for the next one.
            expect(form.locator("textarea[name=body]")).to_have_value("", timeout=timeout)
            expect(send).to_be_enabled()
            expect(board.locator("#board-instructions li[data-instruction]").first).to_contain_text(
                body.split("\n")[0], timeout=timeout
            )
        posted = while_browsing(lambda: list(Instruction.objects.filter(incident=incident).order_by("-id")))
        assert [i.body for i in posted] == [SECOND, FIRST]
        assert [i.author_id for i in posted] == [crisis.id, crisis.id]
        on_board = instruction_texts(board, "#board-instructions li[data-instruction]")
        assert len(on_board) == 2 and SECOND in on_board[0] and FIRST.split("\n")[0] in on_board[1], on_board

        # They reach her open answer page without a reload, newest first, marked new, with time and author.
        items = phone.locator("#instructions li[data-instruction]")
        expect(items).to_have_count(2, timeout=timeout)
        expect(phone.locator("#instructions")).to_be_visible()
        assert [int(i) for i in items.evaluate_all("(l) => l.map((li) => li.dataset.instruction)")] == [
            i.id for i in posted
        ]
        expect(items.first).to_contain_text(SECOND)
        expect(items.nth(1)).to_contain_text("第二駐車場に集合してください。")
        expect(items.first).to_contain_text(tr("ja", "New", "safety instructions"))
        expect(items.first).to_contain_text("危機 管理")
        expect(items.first.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d$"))
        assert phone.evaluate("window.notReloaded") is True, "the answer page reloaded"
        assert board.evaluate("window.notReloaded") is True, "the board reloaded"

        # Jiro, on his home page, sees it in the banner (the newest); the outsider sees nothing.
        banner = c.page.locator("#safety-banner")
        expect(banner).to_contain_text(f"新しい対策指示：{SECOND}", timeout=timeout)
        expect(banner.locator("a[data-instruction-incident]")).to_have_attribute(
            "href", f"/{SLUG}/safety/{incident.id}/"
        )
        time.sleep(2.5)  # past the 0–2 s spread: the outsider's page would have asked by now
        expect(d.page.locator("#safety-banner")).to_have_count(0)
        # Only the people asked fetch it: the outsider's app knows from its own open requests that it is not his.
        assert asked["outsider"] == []
        assert asked["jiro"], "Jiro's page did not fetch the instruction"

        # Her phone got the push: it stays on screen until tapped and opens her answer page.
        pushes = [json.loads(p.payload) for p in push_service.wait_for(2, timeout=10)]
        assert {p["tag"] for p in pushes} == {f"instruction-{i.id}" for i in posted}
        assert {p["url"] for p in pushes} == {f"/{SLUG}/safety/{incident.id}/"}

        # 4. Screenshots: the board on the laptop, her page on the phone.
        a.shot("board-laptop")
        board.evaluate("window.scrollTo(0, 0)")
        board.screenshot(path=str(SHOTS / "board-laptop-fold.png"))
        b.shot("board-employee-phone")
        c.shot("board-instruction-banner-phone")
        assert board.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")
        assert phone_problems(phone) == []
        assert layout_problems(c.page) == []

        for tab in (a, b, c, d):
            assert tab.errors == [], tab.errors


def test_the_link_page_without_a_socket_shows_a_new_instruction_within_a_minute() -> None:
    """The signed link page has no live connection: it asks the link's GET every minute while it is visible.
    The page's clock is Playwright's, so the minute passes at once."""
    require_postgres()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    crisis = person(org, "crisis", last="危機", first="管理", roles=(Role.CRISIS_MANAGER,))
    hanako = person(org, "hanako", last="山田", first="花子", anpi_login_id="anpi-hanako")
    incident = services.incident_create(
        organization=org, actor=crisis, title="避難訓練", message="訓練です。", is_drill=True
    )
    services.dispatch_create(incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [hanako.id]})
    incident = Incident.objects.select_related("organization").get(id=incident.id)
    first = services.instruction_post(incident=incident, actor=crisis, body=FIRST)

    with daphne(daphne_env()) as base, chromium() as browser:
        b = open_tab(browser, base)
        b.page.clock.install()
        b.page.goto(services.answer_url(incident, hanako.id))
        b.page.wait_for_function(ANSWER_READY)
        items = b.page.locator("#instructions li[data-instruction]")
        expect(items).to_have_count(1)
        expect(items.first).to_contain_text(tr("ja", "DRILL"))  # a drill's instructions say so
        expect(items.first).not_to_contain_text(tr("ja", "New", "safety instructions"))
        second = while_browsing(services.instruction_post, incident=incident, actor=crisis, body=SECOND)
        b.page.clock.run_for(30_000)
        expect(items).to_have_count(1)  # not before the minute
        b.page.clock.run_for(31_000)
        expect(items).to_have_count(2)
        assert [int(i) for i in items.evaluate_all("(l) => l.map((li) => li.dataset.instruction)")] == [
            second.id,
            first.id,
        ]
        expect(items.first).to_contain_text(SECOND)
        expect(items.first).to_contain_text(tr("ja", "New", "safety instructions"))
        b.shot("board-link-instructions-phone")
        assert phone_problems(b.page) == []
        assert b.errors == [], b.errors


def late_answer(incident: Incident, who: User, status: str) -> None:
    """What an answer leaves behind when its statement saw the incident open and committed just after the
    completion: its row and the recipient's, written as services._answer_write writes them. The board is not told
    (no dirty mark), so it shows at the ticker's next unprompted read."""
    at = Incident.objects.values_list("completed_at", flat=True).get(id=incident.id)
    assert at is not None
    answer = Answer.objects.create(
        incident=incident, person=who, values={"safety": status}, status=status, source="app", created_at=at
    )
    Recipient.objects.filter(incident=incident, person=who).update(
        status=status, answer=answer, answer_count=1, answered_at=at, first_answered_at=at
    )


def test_the_instruction_room_is_opened_from_the_board_with_two_people() -> None:
    require_postgres()
    require_redis()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hq = named_department(org, "HQ", "東京本社")
    plant = named_department(org, "PLANT", "大阪工場")
    crisis = talker(org, "crisis", "危機", "管理", roles=(Role.CRISIS_MANAGER,), department=hq)
    ken = talker(org, "ken", "佐藤", "健", department=hq, anpi_login_id="anpi-ken")
    sachiko = talker(org, "sachiko", "鈴木", "幸子", department=plant)
    no_talk = person(org, "notalk", last="佐藤", first="次郎", department=plant)  # does not use talk
    incident = services.incident_create(organization=org, actor=crisis, title=TITLE, message="安否を回答してください。")
    services.dispatch_create(incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [ken.id]})

    with daphne(daphne_env()) as base, chromium() as browser:
        a = open_laptop(browser, base)
        sign_in(a, crisis)
        board = a.page
        board.goto(f"/{SLUG}/safety/incidents/{incident.id}/board/")
        board.wait_for_function(BOARD_LIVE)
        expect(board.locator("#board-room-link")).to_have_count(0)

        # The dialog: search, choose two people who use talk; someone who does not is not offered.
        board.locator("#board-room-create").click()
        dialog = board.locator("#room-dialog")
        expect(dialog).to_be_visible()
        expect(board.locator("#room-q")).to_be_focused()
        expect(board.locator("#room-chosen-count")).to_have_text(
            tr("ja", "Nobody chosen yet: the room starts with you alone, and you can add people later.")
        )
        found = board.locator("#room-found li")
        board.locator("#room-q").fill("佐藤")
        expect(found).to_have_count(1)  # 佐藤 次郎 does not use talk
        expect(found.first).to_contain_text("佐藤 健")
        expect(found.first).to_contain_text("東京本社")
        found.first.locator("button").click()
        board.locator("#room-q").fill("鈴木")
        expect(found.filter(has_text="鈴木 幸子")).to_have_count(1)
        expect(found).to_have_count(1)
        found.first.locator("button").click()
        expect(found.first.locator("button")).to_be_disabled()  # chosen already
        chips = board.locator("#room-chosen li")
        expect(chips).to_have_count(2)
        expect(chips.nth(0)).to_contain_text("佐藤 健")
        expect(chips.nth(1)).to_contain_text("鈴木 幸子")
        expect(board.locator("#room-chosen-count")).to_have_text(tr("ja", "%(n)s chosen") % {"n": 2})
        board.screenshot(path=str(SHOTS / "board-room-dialog-laptop.png"))
        box = dialog.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 768, box

        # Opened: the board links to the room.
        board.locator("#room-submit").click()
        expect(dialog).to_be_hidden()
        link = board.locator("#board-room-link")
        expect(link).to_be_visible()
        expect(board.locator("#board-room-status")).to_have_text(tr("ja", "The instruction room is open."))
        room = while_browsing(lambda: Incident.objects.select_related("room").get(id=incident.id).room)
        assert room is not None
        assert room.kind == RoomKind.INSTRUCTION
        members = while_browsing(lambda: dict(Membership.objects.filter(room=room).values_list("user_id", "is_admin")))
        assert members == {crisis.id: True, ken.id: False, sachiko.id: False}, members
        assert no_talk.id not in members
        expect(link).to_have_attribute("href", f"/{SLUG}/talk/{room.id}/")
        expect(board.locator("#board-room-add")).to_be_visible()  # more people can be added later

        # Following the link opens the room in talk.
        with board.expect_navigation():
            link.click()
        expect(board).to_have_url(f"{base}/{SLUG}/talk/{room.id}/")
        expect(board.locator("#room-name")).to_have_text(room.name)
        assert TITLE in room.name
        board.wait_for_function(TALK_READY)
        assert a.errors == [], a.errors


def test_completing_the_incident_freezes_the_open_board_without_a_reload() -> None:
    require_postgres()
    require_redis()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hq = named_department(org, "HQ", "東京本社")
    crisis = person(org, "crisis", last="危機", first="管理", roles=(Role.CRISIS_MANAGER,), department=hq)
    admin = person(org, "anpi", last="安否", first="管理", roles=(Role.ADMIN_ANPI,), department=hq)
    people = [
        person(org, f"p{n}", last=last, first=first, department=hq, anpi_login_id=f"anpi-p{n}")
        for n, (last, first) in enumerate([("佐藤", "健"), ("高橋", "美咲"), ("田中", "翔"), ("伊藤", "陽菜")])
    ]
    incident = services.incident_create(organization=org, actor=crisis, title=TITLE, message="安否を回答してください。")
    services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [p.id for p in people]}
    )
    for who, safety in ((people[0], "safe"), (people[1], "minor")):
        services.answer_submit(incident_id=incident.id, person=who, values={"safety": safety}, source="app")

    with daphne(daphne_env()) as base, chromium() as browser:
        a = open_laptop(browser, base)
        sign_in(a, crisis)
        board = a.page
        board.goto(f"/{SLUG}/safety/incidents/{incident.id}/board/")
        board.wait_for_function(BOARD_LIVE)
        expect(board.locator("#board-frozen")).to_be_hidden()
        expect(board.locator("#board-report")).to_be_hidden()
        expect(board.locator("form#instruction-form")).to_be_visible()
        board.evaluate("window.notReloaded = true")

        # Completed through the API (as the incident page's button does): the open board freezes live.
        done = board.evaluate(POST_JSON, [f"/{SLUG}/api/safety/incidents/{incident.id}/complete/", {}])
        assert done["status"] == 200, done
        timeout = LIVE_SECONDS * 1000
        expect(board.locator("#board-frozen")).to_be_visible(timeout=timeout)
        expect(board.locator("#board-frozen")).to_contain_text(tr("ja", "Completed — final numbers"))
        report = board.locator("#board-report")
        expect(report).to_be_visible()
        expect(board.locator("form#instruction-form")).to_be_hidden()
        expect(board.locator("#board")).to_have_class(re.compile(r"\bboard-is-frozen\b"))
        expect(board.locator("#board-report-rate")).to_contain_text("50%")
        # 25 % and 50 % were reached, 75 % never was.
        expect(report.locator('[data-milestone="75"] dd')).to_have_text(tr("ja", "not reached"))
        expect(report.locator('[data-milestone="50"] dd')).not_to_have_text(tr("ja", "not reached"))
        expect(board.locator("#board-status")).to_have_class(re.compile(r"\binc-completed\b"))
        assert board.evaluate("window.notReloaded") is True, "the board reloaded"
        board.evaluate("window.scrollTo(0, 0)")
        board.screenshot(path=str(SHOTS / "board-frozen-laptop-fold.png"))
        a.shot("board-frozen-laptop")
        assert board.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")

        # An answer that committed as the incident completed: the frozen board takes the corrected numbers and
        # stays frozen.
        while_browsing(late_answer, incident, people[2], "serious")
        while_browsing(board_touch, incident.id)
        refresh = REFRESH_SECONDS * 1000
        expect(top(board, '[data-board="answered"]')).to_have_text(re.compile(r"^\D*3\D*$"), timeout=refresh)
        expect(top(board, '[data-count="serious"]')).to_have_text(re.compile(r"^\D*1\D*$"))
        expect(board.locator("#board-report-rate")).to_contain_text("75%")
        expect(board.locator("#board-frozen")).to_be_visible()
        expect(report).to_be_visible()
        expect(board.locator("form#instruction-form")).to_be_hidden()
        assert board.evaluate("window.notReloaded") is True, "the board reloaded"

        # A second board opened now subscribes from the seq it was drawn at: nothing moved, so the socket says
        # "subscribed" and does not read and send the board a second time.
        b = open_laptop(browser, base)
        sign_in(b, admin)
        frames: list[dict[str, object]] = []
        b.page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
        b.page.goto(f"/{SLUG}/safety/incidents/{incident.id}/board/")
        b.page.wait_for_function(BOARD_LIVE)
        stream = f"board.{incident.id}"
        drawn = int(b.page.locator("#board").get_attribute("data-seq") or "-1")
        time.sleep(1.5)  # anything the socket would still send
        on_board = [f for f in frames if f.get("stream") == stream]
        assert on_board == [{"type": "subscribed", "stream": stream, "seq": drawn}], on_board
        expect(top(b.page, '[data-board="answered"]')).to_have_text(re.compile(r"^\D*3\D*$"))
        expect(b.page.locator("#board-frozen")).to_be_visible()
        expect(b.page.locator("#board-live-text")).to_have_text(tr("ja", "Live"))

        for tab in (a, b):
            assert tab.errors == [], tab.errors
