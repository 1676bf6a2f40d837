"""Talk in a real headless Chromium against a real daphne, Redis and PostgreSQL: two people chat in two
browser contexts. The one on the room list sees the unread badge count up live; the sender sees "Read" when
the other opens the room; typing, replies, edits, deletions and files arrive live; a dropped connection
catches up with nothing lost or doubled. Then a group room with read counts and settings, history loaded by
scrolling up, the talk administrator's page and the talk logs page, each checked for what a person would trip
over on a phone and a laptop, in Japanese and English.

Run it as its own pytest invocation (STACK_NOTES.md, "Browser tests"); see tests/browser/test_pwa.py.
Screenshots go to test-artifacts/screenshots/talk-*.png."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest
from django.db import connections
from django.utils import translation
from playwright.sync_api import Page, expect

from chat import services
from chat.models import FilePolicy, Message, Room, RoomKind, TalkSettings
from chat.selectors import talk_settings_get
from directory.models import Organization, Role, User
from tests import factories
from tests.browser.test_pwa import (
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

T = TypeVar("T")
# The talk page follows every room it shows once each room stream has answered its subscription.
TALK_READY = "() => window.talkReady && window.talkReady()"


def tr(language: str, message: str, **values: Any) -> str:
    """What the page shows for a msgid: the catalog's text (English until a translation is merged)."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def talker(org: Organization, login_id: str, last: str, first: str, **kwargs: Any) -> User:
    from directory.importer import user_search_text

    user = person(org, login_id, last=last, first=first, **kwargs)
    user.talk_available = True
    user.search_text = user_search_text(user)  # so the new names are found
    user.save(update_fields=["talk_available", "search_text"])
    return user


def in_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a service as a worker process would: outside Playwright's event loop (which runs in this thread
    and keeps the publisher from reaching the channel layer), so its events go out at once."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test below
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in result:
        raise result["error"]
    return cast(T, result["value"])


def png(width: int = 160, height: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def message(page: Page, text: str) -> Any:
    return page.locator("#talk-messages .tmsg", has_text=text)


def send(tab: Tab, text: str, *, enter: bool = True) -> None:
    box = tab.page.locator("#message-input")
    box.fill(text)
    if enter:
        box.press("Enter")
    else:
        tab.page.locator("#send").click()


def open_menu(page: Page, text: str) -> None:
    message(page, text).locator('[data-act="menu"]').click()


def test_two_people_chat_live_with_unread_badges_read_receipts_typing_edits_and_files() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hanako = talker(org, "hanako", last="山田", first="花子")
    ken = talker(org, "ken", last="佐藤", first="健")
    ja = lambda msgid, **v: tr("ja", msgid, **v)  # noqa: E731

    with daphne(daphne_env()) as base, chromium() as browser:
        # Ken is on his phone, on the room list; the room does not exist yet.
        b = open_tab(browser, base, viewport="mobile")
        sign_in(b, ken)
        b.page.goto(f"/{SLUG}/talk/")
        b.page.wait_for_function(TALK_READY)
        expect(b.page.locator("#rooms-empty")).to_be_visible()
        b.page.evaluate("window.notReloaded = true")

        # Hanako, on a laptop, opens the 1:1 room from Ken's directory card.
        a = open_tab(browser, base, viewport="desktop")
        sign_in(a, hanako)
        a.page.goto(f"/{SLUG}/directory/people/{ken.id}/")
        with a.page.expect_navigation():
            a.page.locator("#talk-with").click()
        match = re.search(r"/talk/(\d+)/$", a.page.url)
        assert match, a.page.url
        room_id = int(match.group(1))
        expect(a.page.locator("#room-name")).to_have_text("佐藤 健")
        a.page.wait_for_function(TALK_READY)

        # The new room appears on Ken's list by itself; each message counts up its unread badge.
        item = b.page.locator(f'.room-item[data-room="{room_id}"]')
        expect(item).to_contain_text("山田 花子")
        badge = item.locator(".unread")
        expect(badge).to_have_count(0)
        b.page.wait_for_function(TALK_READY)
        send(a, "こんにちは")
        expect(badge).to_have_attribute("data-unread", "1")
        expect(item.locator(".room-preview")).to_have_text("こんにちは")
        send(a, "今日の訓練は10時からです。資料: https://example.com/drill?day=1")
        expect(badge).to_have_attribute("data-unread", "2")
        expect(item.locator(".room-preview")).to_contain_text("今日の訓練は10時から")
        assert b.page.evaluate("window.notReloaded") is True, "the list must update live, not by reloading"
        b.shot("talk-chat-list-unread-ja-mobile")
        assert layout_problems(b.page) == []

        # Hanako's messages are not read yet.
        mine = a.page.locator("#talk-messages .tmsg-mine")
        expect(mine).to_have_count(2)
        expect(mine.locator(".tmsg-receipt:visible")).to_have_count(0)

        # Ken opens the room: both messages are there, the link is a link, and Hanako sees "Read" live.
        with b.page.expect_navigation():
            item.locator("a").click()
        expect(b.page.locator("#room-name")).to_have_text("山田 花子")
        expect(message(b.page, "こんにちは")).to_have_count(1)
        link = message(b.page, "今日の訓練").locator("a")
        expect(link).to_have_attribute("href", "https://example.com/drill?day=1")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
        expect(mine.locator(".tmsg-receipt")).to_have_text([ja("Read"), ja("Read")])
        b.page.wait_for_function(TALK_READY)

        # Ken types: Hanako sees who is typing. He sends with the button (Enter makes a new line on a phone).
        box = b.page.locator("#message-input")
        box.press_sequentially("了解です", delay=40)
        expect(a.page.locator("#typing")).to_have_text(ja("%(name)s is typing…", name="佐藤 健"))
        box.press("Enter")
        box.press_sequentially("会議室で待っています", delay=10)
        b.page.locator("#send").click()
        reply = message(a.page, "会議室で待っています")
        expect(reply).to_be_visible()
        expect(reply.locator(".tmsg-body")).to_have_text("了解です\n会議室で待っています")
        expect(a.page.locator("#typing")).to_have_text("")
        # Hanako has the room open, so the reply is read at once, and Ken sees it.
        expect(message(b.page, "会議室で待っています").locator(".tmsg-receipt")).to_have_text(ja("Read"))
        expect(b.page.locator("#talk-messages .tmsg-pending")).to_have_count(0)

        # The connection drops; what is sent meanwhile arrives once when it comes back.
        b.page.evaluate("window.tsunagu.live.closedForGood = true; window.tsunagu.live.ws.close()")
        b.page.wait_for_function("() => document.body.dataset.live === 'closed'")
        send(a, "停電したら携帯に連絡します")
        send(a, "ロビーに集合")
        expect(message(a.page, "ロビーに集合")).to_have_count(1)
        b.page.evaluate("window.tsunagu.live.closedForGood = false; window.tsunagu.live.connect()")
        expect(message(b.page, "停電したら携帯に連絡します")).to_have_count(1)
        expect(message(b.page, "ロビーに集合")).to_have_count(1)
        b.page.wait_for_timeout(500)
        expect(b.page.locator("#talk-messages .tmsg")).to_have_count(5)
        # Far behind (a snapshot comes instead), or everything replayed from the start: still each message once.
        b.page.evaluate("window.snapshots = 0; window.tsunagu.onEvent('snapshot:room', () => window.snapshots++)")
        for last_seq, snapshots in ((10**9, 1), (0, 1)):
            b.page.evaluate(
                "([stream, seq]) => { window.tsunagu.live.seq[stream] = seq; window.tsunagu.live.subscribe(stream); }",
                [f"room.{room_id}", last_seq],
            )
            b.page.wait_for_function(f"() => window.snapshots === {snapshots}")
            b.page.wait_for_timeout(500)
            expect(b.page.locator("#talk-messages .tmsg")).to_have_count(5)

        # Hanako edits her first message and deletes the second; Ken sees both changes live.
        open_menu(a.page, "こんにちは")
        message(a.page, "こんにちは").locator('[data-act="edit"]').click()
        editor = a.page.locator(".tmsg-edit textarea")
        editor.fill("こんにちは、山田です")
        editor.press("Enter")
        edited = message(b.page, "こんにちは、山田です")
        expect(edited).to_be_visible()
        expect(edited.locator(".tmsg-edited")).to_have_text(f"({ja('edited')})")
        a.page.once("dialog", lambda dialog: dialog.accept())
        open_menu(a.page, "今日の訓練")
        message(a.page, "今日の訓練").locator('[data-act="delete"]').click()
        expect(b.page.locator("#talk-messages .tmsg-deleted")).to_have_text(re.compile(ja("This message was deleted")))
        expect(message(b.page, "今日の訓練")).to_have_count(0)

        # A picture is shown (fetched, since files are served as downloads); a program is refused, with why.
        a.page.locator("#file-input").set_input_files({"name": "map.png", "mimeType": "image/png", "buffer": png()})
        expect(a.page.locator("#file-chosen")).to_contain_text("map.png")
        send(a, "避難経路の地図です")
        picture = message(b.page, "避難経路の地図です").locator("img.tmsg-image")
        expect(picture).to_have_attribute("src", re.compile(r"^blob:"))
        b.page.wait_for_function("() => document.querySelector('img.tmsg-image').naturalWidth === 160")
        expect(message(b.page, "避難経路の地図です").locator("a.tmsg-file")).to_contain_text("map.png")
        a.page.locator("#file-input").set_input_files(
            {"name": "setup.exe", "mimeType": "application/octet-stream", "buffer": b"MZ" + bytes(510)}
        )
        send(a, "インストーラー")
        expect(a.page.locator("#composer-error")).to_be_visible()
        expect(a.page.locator("#message-input")).to_have_value("インストーラー")
        expect(message(a.page, "インストーラー")).to_have_count(0)
        a.page.locator("#message-input").fill("")

        b.page.evaluate("document.getElementById('scroller').scrollTop = 0")
        b.shot("talk-chat-ja-mobile")
        a.shot("talk-chat-ja-desktop")
        assert layout_problems(a.page) == []
        assert layout_problems(b.page) == []
        assert a.errors == [] and b.errors == []

    stored = while_browsing(lambda: list(Message.objects.filter(room_id=room_id).order_by("id")))
    assert [m.body for m in stored] == [
        "こんにちは、山田です",
        "",
        "了解です\n会議室で待っています",
        "停電したら携帯に連絡します",
        "ロビーに集合",
        "避難経路の地図です",
    ]
    assert stored[1].deleted_at is not None


def pick(page: Page, query_input: str, results: str, name: str) -> None:
    """Search a dialog's people list and tick one person."""
    page.locator(query_input).fill(name.split()[0])
    found = page.locator(f"{results} label")
    expect(found).to_have_count(1)  # the search has answered: only this person
    found.filter(has_text=name).locator("input").check()


def test_group_room_counts_readers_and_follows_renames_and_removals() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hanako = talker(org, "hanako", last="山田", first="花子")
    ken = talker(org, "ken", last="佐藤", first="健")
    sachiko = talker(org, "sachiko", last="鈴木", first="幸子")
    ja = lambda msgid, **v: tr("ja", msgid, **v)  # noqa: E731

    with daphne(daphne_env()) as base, chromium() as browser:
        b = open_tab(browser, base, viewport="mobile")
        sign_in(b, ken)
        b.page.goto(f"/{SLUG}/talk/")
        b.page.wait_for_function(TALK_READY)

        # Hanako builds the group in the dialog.
        a = open_tab(browser, base, viewport="desktop")
        sign_in(a, hanako)
        a.page.goto(f"/{SLUG}/talk/")
        a.page.locator("#new-group").click()
        a.page.locator("#group-name").fill("防災チーム")
        pick(a.page, "#group-q", "#group-results", "佐藤 健")
        pick(a.page, "#group-q", "#group-results", "鈴木 幸子")
        expect(a.page.locator("#group-chosen")).to_contain_text("佐藤 健")
        expect(a.page.locator("#group-chosen")).to_contain_text("鈴木 幸子")
        assert layout_problems(a.page) == []
        a.shot("talk-chat-new-group-ja-desktop")
        with a.page.expect_navigation():
            a.page.locator("#group-create").click()
        room_id = int(a.page.url.rstrip("/").rsplit("/", 1)[1])
        room = while_browsing(Room.objects.get, id=room_id)
        assert room.kind == RoomKind.GROUP
        expect(a.page.locator("#room-name")).to_have_text("防災チーム")
        expect(a.page.locator("#room-meta")).to_contain_text(ja("%(n)s members", n=3))
        a.page.wait_for_function(TALK_READY)

        # Ken's list shows the new group without a reload; he opens it.
        item = b.page.locator(f'.room-item[data-room="{room_id}"]')
        expect(item).to_contain_text("防災チーム")
        with b.page.expect_navigation():
            item.locator("a").click()
        b.page.wait_for_function(TALK_READY)

        # Sachiko writes (from her own app: the service the API calls); both see it with her name.
        in_worker(services.message_send, room=room, sender=sachiko, body="本社3階は全員無事です")
        for tab in (a, b):
            said = message(tab.page, "本社3階は全員無事です")
            expect(said.locator(".tmsg-sender")).to_have_text("鈴木 幸子")

        # Hanako's message is read by Ken at once (his room is open), then by Sachiko.
        send(a, "集合場所は本社ロビーです")
        receipt = message(a.page, "集合場所は本社ロビーです").locator(".tmsg-receipt")
        expect(receipt).to_have_text(ja("Read by %(n)s", n=1))
        posted = while_browsing(lambda: Message.objects.filter(room=room).latest("id"))
        in_worker(services.room_read, user=sachiko, room=room, last_read_id=posted.id)
        expect(receipt).to_have_text(ja("Read by %(n)s", n=2))

        # Settings: members with presence; Hanako renames the room and removes Sachiko; Ken sees both live.
        a.page.locator("#room-settings").click()
        members = a.page.locator("#members .member")
        expect(members).to_have_count(3)
        expect(members.filter(has_text="佐藤 健").locator(".presence-on")).to_have_text(ja("Online"))
        expect(members.filter(has_text="鈴木 幸子").locator(".presence-off")).to_have_text(ja("Offline"))
        expect(members.filter(has_text="山田 花子").locator(".member-admin")).to_be_visible()
        a.shot("talk-chat-group-settings-ja-desktop")
        assert layout_problems(a.page) == []
        a.page.locator("#rename-input").fill("防災チーム（本社）")
        a.page.locator("#rename-form button").click()
        expect(a.page.locator("#settings-status")).to_have_text(ja("Saved."))
        expect(b.page.locator("#room-name")).to_have_text("防災チーム（本社）")
        a.page.once("dialog", lambda dialog: dialog.accept())
        members.filter(has_text="鈴木 幸子").locator("[data-remove]").click()
        expect(members).to_have_count(2)
        expect(b.page.locator("#room-meta")).to_contain_text(ja("%(n)s members", n=2))
        # Sachiko no longer counts as a reader.
        expect(receipt).to_have_text(ja("Read by %(n)s", n=1))
        # Any member may add people: Hanako adds Sachiko back.
        pick(a.page, "#add-q", "#add-results", "鈴木 幸子")
        a.page.locator("#add-submit").click()
        expect(members).to_have_count(3)
        expect(b.page.locator("#room-meta")).to_contain_text(ja("%(n)s members", n=3))
        a.page.locator("#dlg-settings [data-close]").click()

        b.shot("talk-chat-group-ja-mobile")
        assert layout_problems(b.page) == []

        # Ken leaves the room: he is back on his list, which no longer has it; Hanako sees two members.
        b.page.locator("#room-settings").click()
        b.page.once("dialog", lambda dialog: dialog.accept())
        with b.page.expect_navigation():
            b.page.locator("#leave").click()
        expect(b.page).to_have_url(f"{base}/{SLUG}/talk/")
        expect(b.page.locator(f'.room-item[data-room="{room_id}"]')).to_have_count(0)
        expect(a.page.locator("#room-meta")).to_contain_text(ja("%(n)s members", n=2))
        assert a.errors == [] and b.errors == []

    assert while_browsing(lambda: Room.objects.get(id=room_id).name) == "防災チーム（本社）"


LOGS = {
    "files": [
        {
            "id": 7,
            "name": "talk-log-20261120-01.csv",
            "day": "2026-11-20",
            "part": 1,
            "message_count": 10000,
            "size": 1_804_220,
            "url": f"/{SLUG}/api/talk/logs/7/",
        },
        {
            "id": 8,
            "name": "talk-log-20261120-02.csv",
            "day": "2026-11-20",
            "part": 2,
            "message_count": 312,
            "size": 40_960,
            "url": f"/{SLUG}/api/talk/logs/8/",
        },
    ],
    "latest": {"message_count": 57, "url": f"/{SLUG}/api/talk/logs/latest/"},
}


def test_talk_pages_history_and_administration_on_phone_and_laptop_in_japanese_and_english() -> None:
    org = factories.organization(slug=SLUG, name="東日本つなぐ防災ネットワーク株式会社 本社")
    department = factories.department(org)
    hanako = talker(org, "hanako", last="山田", first="花子", roles=(Role.ADMIN_GOTALK,), department=department)
    ken = talker(org, "ken", last="佐藤", first="健太郎")
    direct = services.room_direct_open(user=hanako, other=ken)
    for n in range(1, 46):
        sender = ken if n % 3 else hanako
        services.message_send(
            room=direct, sender=sender, body=f"連絡 {n}: " + "安否確認の回答をお願いします。" * (n % 4)
        )
    long_name = "台風10号接近に伴う全拠点の臨時休業と安否確認についての連絡グループ（本社・支社合同）"
    group = services.room_group_create(creator=ken, name=long_name, member_ids=[hanako.id])
    services.message_send(
        room=group, sender=ken, body="https://example.com/a/very/long/link/that/does/not/break/anywhere"
    )
    problems: dict[str, list[str]] = {}

    with daphne(daphne_env()) as base, chromium() as browser:
        for language in ("ja", "en"):
            while_browsing(User.objects.filter(pk=hanako.pk).update, language=language)
            for viewport in ("mobile", "desktop"):
                tab = open_tab(browser, base, viewport=viewport, language=language)
                page = tab.page
                page.route(f"**/{SLUG}/api/talk/logs/", lambda route: route.fulfill(json=LOGS))
                sign_in(tab, hanako)
                name = f"{language}-{viewport}"

                page.goto(f"/{SLUG}/talk/")
                page.wait_for_function(TALK_READY)
                expect(page.locator("main h1")).to_have_text(tr(language, "Talk"))
                expect(page.locator(".room-item")).to_have_count(3)  # 1:1, group, department
                expect(page.locator(".room-item").first).to_contain_text(long_name[:5])
                problems[f"list-{name}"] = layout_problems(page)
                tab.shot(f"talk-list-{name}")

                page.goto(f"/{SLUG}/talk/{direct.id}/")
                page.wait_for_function(TALK_READY)
                shown = page.locator("#talk-messages .tmsg")
                expect(shown).to_have_count(30)
                if name == "ja-desktop":
                    # Scrolling up loads the earlier messages above, and what was on screen stays where it was.
                    first = page.evaluate(
                        """() => {
  const scroller = document.getElementById("scroller");
  scroller.scrollTop = 0;
  const oldest = document.querySelector("#talk-messages .tmsg");
  return {id: oldest.dataset.id, top: oldest.getBoundingClientRect().top};
}"""
                    )
                    expect(shown).to_have_count(45)
                    expect(page.locator("#history")).to_have_text(
                        tr(language, "This is the beginning of the conversation.")
                    )
                    top = page.locator(f'#talk-messages .tmsg[data-id="{first["id"]}"]').evaluate(
                        "(m) => m.getBoundingClientRect().top"
                    )
                    assert abs(top - first["top"]) < 2, (top, first)
                    ids = page.locator("#talk-messages .tmsg").evaluate_all(
                        "(xs) => xs.map((x) => Number(x.dataset.id))"
                    )
                    assert ids == sorted(ids) and len(set(ids)) == 45
                problems[f"room-{name}"] = layout_problems(page)
                tab.shot(f"talk-room-{name}")

                page.goto(f"/{SLUG}/talk/{group.id}/")
                page.wait_for_function(TALK_READY)
                expect(page.locator("#room-name")).to_have_text(long_name)
                problems[f"group-{name}"] = layout_problems(page)
                tab.shot(f"talk-group-{name}")

                page.goto(f"/{SLUG}/talk/admin/")
                expect(page.locator("main h1")).to_have_text(tr(language, "Talk administration"))
                rows = page.locator("#access-list .access-row")
                expect(rows).to_have_count(2)
                expect(page.locator("#licence")).to_have_text(
                    tr(language, "%(used)s of %(limit)s talk licences in use", used=2, limit=1000)
                )
                problems[f"admin-{name}"] = layout_problems(page)
                tab.shot(f"talk-admin-{name}")

                page.goto(f"/{SLUG}/talk/logs/")
                expect(page.locator("#logs-body tr")).to_have_count(2)
                expect(page.locator("#logs-body a").first).to_have_attribute("href", f"/{SLUG}/api/talk/logs/7/")
                expect(page.locator("#latest a")).to_have_attribute("href", f"/{SLUG}/api/talk/logs/latest/")
                problems[f"logs-{name}"] = layout_problems(page)
                tab.shot(f"talk-logs-{name}")
                assert tab.errors == [], tab.errors
                page.context.close()

        # The administrator switches Ken's log downloads on, and changes the file policy and the retention.
        tab = open_tab(browser, base, viewport="mobile", language="en")
        sign_in(tab, hanako)
        page = tab.page
        page.goto(f"/{SLUG}/talk/admin/")
        row = page.locator("#access-list .access-row", has_text="佐藤 健太郎")
        row.locator('input[data-field="may_download_logs"]').check()
        expect(row.locator('input[data-field="may_download_logs"]')).to_be_checked()
        page.wait_for_function(
            "() => !document.querySelector('#access-list input[data-field=\"may_download_logs\"]:disabled')"
        )
        page.locator('input[name="file_policy"][value="images_only"]').check()
        page.locator("#retention-days").fill("30")
        page.locator("#settings-form button.primary").click()
        expect(page.locator("#settings-status")).to_have_text(tr("en", "Saved."))
        assert tab.errors == []

    saved = while_browsing(lambda: TalkSettings.objects.get(organization=org))
    assert (saved.file_policy, saved.retention_days) == (FilePolicy.IMAGES_ONLY, 30)
    assert while_browsing(lambda: list(talk_settings_get(organization=org).log_downloaders.all())) == [ken]
    found = [f"{name}: {problem}" for name, listed in problems.items() for problem in listed]
    assert not found, "\n".join(found)
