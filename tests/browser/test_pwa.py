"""The PWA in a real headless Chromium against a real daphne: sign-in, live notices, the connection banner,
one-time passwords, every page in Japanese and English on a phone and a laptop, and the service worker.

Each test calls sync_playwright() itself instead of using pytest-playwright's `page` fixture, whose event loop
outlives the test and breaks pytest-asyncio (STACK_NOTES.md, "Browser tests"); run with `-p no:playwright`.
Screenshots go to test-artifacts/screenshots/ for people to look at; `layout_problems` catches what can be
measured (sideways scrolling, controls smaller than a thumb)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

from directory.models import Organization, Role, User
from tests import factories
from tests.services import ROOT, daphne, free_port, require_chromium, subprocess_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

T = TypeVar("T")
P = ParamSpec("P")
SLUG = "acme"
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORTS: dict[str, dict[str, Any]] = {
    "mobile": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 2,
    },
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}
NEW_PASSWORD = "kawa-no-nagare-42"
# The page is ready for live events once the socket is open and every stream has answered its snapshot
# (the server joins the group before it snapshots, so nothing published after this point can be missed).
# Every predicate handed to wait_for_function is a function, not an expression: Playwright evaluates an
# expression with eval() at each poll, which the pages' Content-Security-Policy refuses (no 'unsafe-eval').
LIVE_READY = (
    "() => document.body.dataset.live === 'open' && window.tsunagu"
    " && Object.keys(window.tsunagu.live.seq).length >= window.tsunagu.live.streams.length"
)
POST_NOTICE = """async ([slug, title, body]) => {
  const token = decodeURIComponent(document.cookie.match(/(?:^|; )csrftoken=([^;]+)/)[1]);
  const response = await fetch(`/${slug}/api/notices/`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRFToken": token},
    body: JSON.stringify({title, body}),
  });
  return {status: response.status, json: await response.json()};
}"""


# --- Helpers --------------------------------------------------------------------------------------------


def daphne_env() -> dict[str, str]:
    # Push jobs run inside daphne, so no task is left behind in a Redis queue that no worker reads.
    return subprocess_env(CELERY_TASK_ALWAYS_EAGER="true")


def person(org: Organization, login_id: str, *, last: str = "山田", first: str = "花子", **kwargs: Any) -> User:
    user = factories.person(org, login_id, **kwargs)
    user.last_name, user.first_name = last, first
    # The test settings hash with MD5 for speed, but daphne runs the base settings, whose hashers cannot read
    # MD5. Store a PBKDF2 hash instead (few iterations; daphne upgrades it at the first sign-in).
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(factories.PASSWORD, hasher.salt(), iterations=1000)
    user.save(update_fields=["last_name", "first_name", "password"])
    return user


def while_browsing(query: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ORM code while Chromium is open. Playwright's event loop runs in this thread, so Django treats the
    code as async and opens a connection of its own; close it, or pytest-django cannot drop the test database."""
    try:
        return query(*args, **kwargs)
    finally:
        connections.close_all()


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@contextmanager
def chromium() -> Iterator[Browser]:
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_tab(browser: Browser, base: str, *, viewport: str = "mobile", language: str = "ja") -> Tab:
    context = browser.new_context(base_url=base, locale="ja-JP" if language == "ja" else "en-US", **VIEWPORTS[viewport])
    context.set_default_timeout(10_000)
    # What the language switch on the anonymous pages sets.
    context.add_cookies([{"name": "django_language", "value": language, "url": base}])
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    return tab


def sign_in(tab: Tab, user: User, password: str = factories.PASSWORD) -> None:
    page = tab.page
    page.goto(f"/{SLUG}/")
    page.fill("#login_id", user.login_id)
    page.fill("#password", password)
    # The server upgrades the stored hash to the production hasher on the first sign-in, which takes
    # seconds when the machine is busy: wait for it rather than failing on the default 10 s.
    with page.expect_navigation(timeout=45_000):
        page.locator("main form button.primary").click(timeout=45_000)


def layout_problems(page: Page) -> list[str]:
    """What a person on this screen would trip over: sideways scrolling, and controls smaller than a thumb."""
    return list(
        page.evaluate(
            """() => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width + 1)
    problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth}px in ${width}px`);
  const controls = 'button, select, textarea, .button, .topnav a, input:not([type=hidden]):not([type=checkbox])';
  for (const el of document.querySelectorAll(controls)) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;  // hidden
    if (box.height < 47.5) problems.push(`${el.outerHTML.slice(0, 80)} is ${box.height.toFixed(1)}px tall`);
    if (box.right > width + 1) problems.push(`${el.outerHTML.slice(0, 80)} runs off the screen`);
  }
  return problems;
}"""
        )
    )


# --- Tests ----------------------------------------------------------------------------------------------


def test_sign_in_see_home_and_receive_live_notice() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    admin = person(org, "admin", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,))
    employee = person(org, "hanako")
    title = "本日は全員在宅勤務です"

    with daphne(daphne_env()) as base, chromium() as browser:
        phone = open_tab(browser, base)
        sign_in(phone, employee)
        expect(phone.page).to_have_url(f"{base}/acme/home/")
        expect(phone.page.locator("h1")).to_have_text("山田 花子 さん、こんにちは")
        phone.page.wait_for_function(LIVE_READY)
        phone.page.evaluate("window.notReloaded = true")

        laptop = open_tab(browser, base, viewport="desktop")
        sign_in(laptop, admin)
        posted = laptop.page.evaluate(POST_NOTICE, ["acme", title, "出社は不要です。\n安否確認に答えてください。"])
        assert posted["status"] == 201, posted

        notice = phone.page.locator(f'#notices .notice[data-id="{posted["json"]["id"]}"]')
        expect(notice).to_contain_text(title)
        expect(notice).to_contain_text("安否確認に答えてください。")
        expect(phone.page.locator("#notices-empty")).to_have_count(0)
        assert phone.page.evaluate("window.notReloaded") is True, "the page reloaded instead of updating live"
        phone.shot("home-live-notice")
        assert phone.errors == [] and laptop.errors == []


def test_connection_banner_shows_reconnecting_and_recovers(tmp_path: Path) -> None:
    from directory.services import notice_post

    org = factories.organization(slug=SLUG, name="ACME株式会社")
    admin = person(org, "admin", roles=(Role.SYSTEM_ADMIN,))
    employee = person(org, "hanako")
    port = free_port()

    with chromium() as browser:
        with daphne(daphne_env(), port=port) as base:
            tab = open_tab(browser, base)
            page = tab.page
            sign_in(tab, employee)
            page.wait_for_function(LIVE_READY)
            banner = page.locator("#connection")
            expect(banner).to_be_hidden()
            # Record every state of the banner, since a quick reconnect shows "reconnecting" only briefly.
            page.evaluate(
                """() => {
  window.bannerStates = [];
  const banner = document.getElementById("connection");
  new MutationObserver(() => {
    const shown = [...banner.querySelectorAll("[data-state]")].filter((s) => !s.hidden).map((s) => s.textContent);
    window.bannerStates.push(banner.hidden ? "hidden" : shown.join(" "));
  }).observe(banner, {attributes: true, subtree: true});
}"""
            )

            # 1. The socket drops (the browser closes it, as a flaky network would) and comes back by itself.
            page.evaluate("window.tsunagu.live.ws.close()")
            page.wait_for_function(LIVE_READY)
            expect(banner).to_be_hidden(timeout=5_000)
            states = page.evaluate("window.bannerStates")
            assert "再接続中…" in states and "再接続しました。" in states, states
            assert states.index("再接続しました。") > states.index("再接続中…"), states
            assert states[-1] == "hidden", states

        # 2. The server goes away: the banner stays up, says so in words, and the page knows it is offline.
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("再接続中…")
        expect(banner).to_have_attribute("role", "status")
        assert page.evaluate("document.body.dataset.live") == "closed"
        tab.shot("connection-reconnecting-mobile")
        # A notice posted meanwhile (committed, but no server relays it) must arrive after the reconnect.
        missed = while_browsing(notice_post, author=admin, title="停電のため本日は休業", body="", push=False)

        with daphne(daphne_env(), port=port):
            page.wait_for_function(LIVE_READY, timeout=30_000)
            expect(page.locator(f'#notices .notice[data-id="{missed.id}"]')).to_contain_text("停電のため本日は休業")
            expect(banner).to_be_hidden(timeout=5_000)
            assert page.evaluate("document.body.dataset.live") == "open"
            assert page.url.endswith("/acme/home/"), "the page reloaded or navigated away"
        assert tab.errors == []


def test_one_time_password_forces_new_password() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    newcomer = person(org, "newcomer", must_change_password=True, language="en")

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base, language="en")
        page = tab.page
        sign_in(tab, newcomer)
        expect(page).to_have_url(f"{base}/acme/password/")
        expect(page.locator(".hint").first).to_contain_text("one-time password")
        expect(page.locator("#current_password")).to_have_count(0)
        # Nothing else opens until the password is chosen.
        page.goto("/acme/home/")
        expect(page).to_have_url(f"{base}/acme/password/")

        page.fill("#new_password", NEW_PASSWORD)
        page.fill("#new_password2", NEW_PASSWORD)
        with page.expect_navigation():
            page.locator("main form button.primary").click()
        expect(page).to_have_url(f"{base}/acme/home/")
        expect(page.locator(".messages")).to_contain_text("Your password has been changed.")
        tab.shot("password-changed-en-mobile")

        assert while_browsing(lambda: User.objects.get(pk=newcomer.pk).must_change_password) is False
        # The new password is the one that works now.
        with page.expect_navigation():
            page.locator(".topbar button", has_text="Sign out").click()
        sign_in(tab, newcomer, NEW_PASSWORD)
        expect(page).to_have_url(f"{base}/acme/home/")
        assert tab.errors == []


@dataclass(frozen=True)
class Screen:
    name: str
    path: str
    signed_in: bool
    ja: str
    en: str
    status: int = 200


SCREENS = [
    Screen("find", "/", False, "組織を探す", "Find your organisation"),
    Screen("login", "/acme/", False, "サインイン", "Sign in"),
    Screen("password-reset", "/acme/password/reset/", False, "パスワードの再設定", "Reset your password"),
    Screen("404", "/acme/no-such-page/", False, "ページが見つかりません", "Not found", status=404),
    Screen("home", "/acme/home/", True, "こんにちは", "Hello"),
    Screen("profile", "/acme/profile/", True, "プロフィール", "Profile"),
    Screen("settings", "/acme/settings/", True, "組織設定", "Organisation settings"),
    Screen("sudo", "/acme/sudo/", True, "本人確認", "Confirm it's you"),
    Screen("password-change", "/acme/password/", True, "パスワードの設定", "Choose your password"),
    Screen("help", "/acme/help/", True, "ヘルプ", "Help"),
]


def test_pages_render_in_japanese_and_english() -> None:
    from consumers.models import PushSubscription
    from directory.services import notice_post

    # A long organisation name and long texts: the layout has to survive the worst case, not the demo.
    org = factories.organization(slug=SLUG, name="東日本つなぐ防災ネットワーク株式会社 本社")
    admin = person(org, "kanri.taro@acme.example", last="管理", first="太郎", roles=(Role.SYSTEM_ADMIN,))
    notice_post(
        author=admin,
        title="【重要】台風10号の接近に伴い、明日は全拠点で臨時休業とします（Typhoon No. 10: all offices closed）",
        body="各自、安否確認に回答してください。\nhttps://example.com/a/very/long/link/that/does/not/break/anywhere/at/all",
        push=False,
    )
    PushSubscription.objects.create(
        user=admin,
        endpoint="http://127.0.0.1:9/push/device-1",
        p256dh="x",
        auth="y",
        user_agent="Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Mobile Safari/537.36",
    )
    problems: dict[str, list[str]] = {}

    with daphne(daphne_env()) as base, chromium() as browser:
        for language in ("ja", "en"):
            while_browsing(User.objects.filter(pk=admin.pk).update, language=language)
            for viewport in VIEWPORTS:
                tab = open_tab(browser, base, viewport=viewport, language=language)
                page = tab.page
                signed_in = False
                for screen in SCREENS:
                    if screen.signed_in and not signed_in:
                        sign_in(tab, admin)  # also starts sudo mode, so settings opens at once
                        signed_in = True
                    response = page.goto(screen.path)
                    assert response is not None and response.status == screen.status, (screen, language)
                    expect(page.locator("html")).to_have_attribute("lang", language)
                    expect(page.locator("main h1").first).to_contain_text(getattr(screen, language))
                    name = f"{screen.name}-{language}-{viewport}"
                    problems[name] = layout_problems(page)
                    tab.shot(name)
                # Texts outside the headings are translated too.
                nav = page.locator(".topbar")
                expect(nav).to_contain_text("サインアウト" if language == "ja" else "Sign out")
                assert tab.errors == [], tab.errors
                page.context.close()

    found = [f"{name}: {problem}" for name, listed in problems.items() for problem in listed]
    assert not found, "\n".join(found)


def test_service_worker_and_manifest() -> None:
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    employee = person(org, "hanako")

    with daphne(daphne_env()) as base, chromium() as browser:
        tab = open_tab(browser, base)
        page = tab.page
        sign_in(tab, employee)
        expect(page.locator('link[rel="manifest"]')).to_have_attribute("href", "/acme/manifest.webmanifest")

        manifest = page.evaluate(
            """async () => {
  const response = await fetch("/acme/manifest.webmanifest");
  const body = await response.json();
  const icons = [];
  for (const icon of body.icons) {
    const r = await fetch(icon.src);
    icons.push({sizes: icon.sizes, status: r.status, type: r.headers.get("content-type")});
  }
  return {status: response.status, type: response.headers.get("content-type"), body, icons};
}"""
        )
        assert manifest["status"] == 200
        assert manifest["type"].startswith("application/manifest+json")
        assert manifest["body"]["start_url"] == "/acme/home/"
        assert manifest["body"]["name"] == "ACME株式会社"
        assert manifest["body"]["display"] == "standalone"
        assert {i["sizes"] for i in manifest["icons"]} >= {"192x192", "512x512"}
        assert all(i["status"] == 200 and i["type"] == "image/png" for i in manifest["icons"]), manifest["icons"]

        worker = page.evaluate(
            """async () => {
  const response = await fetch("/sw.js");
  return {status: response.status, type: response.headers.get("content-type"),
          allowed: response.headers.get("service-worker-allowed")};
}"""
        )
        assert worker["status"] == 200
        assert re.match(r"(application|text)/javascript", worker["type"])
        assert worker["allowed"] == "/"

        scope = page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
        assert scope == f"{base}/"
        page.reload()
        assert page.evaluate("navigator.serviceWorker.controller && navigator.serviceWorker.controller.scriptURL") == (
            f"{base}/sw.js"
        )
        # The shell is cached, so the app opens when the network is gone on the worst day.
        assert page.evaluate("caches.match('/static/frontend/app.js').then((hit) => hit !== undefined)")
        page.context.set_offline(True)
        try:
            page.reload()
            expect(page.locator("h1")).to_contain_text("こんにちは")
        finally:
            page.context.set_offline(False)
        assert tab.errors == []
