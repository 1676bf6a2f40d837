"""The devices on the profile page (issue 9): each browser subscribed to push with a name a person recognises, when
it was added, its last delivered push, whether pushes fail and whether its key renewal is pending; a person removes
their own devices and nobody else's. In Chromium: after a key rotation the next page renews this browser's
subscription silently (unsubscribe, subscribe with the new key, POST it, DELETE the old endpoint), and the profile
marks this browser's own row.

Headless Chromium cannot subscribe to a real push service (STACK_NOTES.md, "Web push"), so the browser test
replaces PushManager's getSubscription/subscribe with an init script whose subscriptions point at the local push
service; the requests to our API and the pushes that follow are real. Screenshots: test-artifacts/screenshots/
devices-*.png. Run the browser test as its own pytest invocation (STACK_NOTES.md, "Browser tests")."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.utils import timezone, translation
from playwright.sync_api import Request, expect

from consumers.models import PushSubscription
from consumers.push import device_name, device_parts, push_send
from consumers.vapid import vapid_keys, vapid_previous, vapid_prune, vapid_rotate
from directory.models import Organization, User
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
from tests.consumers.test_vapid_rotation import KeyedPushService
from tests.services import daphne

ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
    "Mobile Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
    "Mobile/15E148 Safari/604.1"
)
WINDOWS_EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 "
    "Edg/126.0.0.0"
)


def in_language(language: str, message: str) -> str:
    with translation.override(language):
        return translation.gettext(message)


# --- Device names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "parts"),
    [
        (ANDROID_CHROME, ("Chrome", "Android")),
        (IPHONE_SAFARI, ("Safari", "iPhone")),
        (WINDOWS_EDGE, ("Edge", "Windows")),
        # Chrome on an iPhone is WebKit that says CriOS; a home-screen web app says neither Safari nor Version.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "CriOS/126.0 Mobile/15E148 Safari/604.1",
            ("Chrome", "iPhone"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Mobile/15E148",
            ("Safari", "iPhone"),
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
            "Safari/605.1.15",
            ("Safari", "Mac"),
        ),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", ("Firefox", "Linux")),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 "
            "Chrome/121.0.0.0 Mobile Safari/537.36",
            ("Samsung Internet", "Android"),
        ),
        (
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
            "Safari/537.36",
            ("Chrome", "ChromeOS"),
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 "
            "Safari/537.36",
            ("Chrome", "Linux"),
        ),
        ("curl/8.0", (None, None)),
        ("", (None, None)),
    ],
)
def test_device_parts_from_the_user_agent(user_agent: str, parts: tuple[str | None, str | None]) -> None:
    assert device_parts(user_agent) == parts


@pytest.mark.parametrize(
    ("user_agent", "ja", "en"),
    [
        (ANDROID_CHROME, "Android の Chrome", "Chrome on Android"),
        (IPHONE_SAFARI, "iPhone の Safari", "Safari on iPhone"),
        ("SomeBrowser (Android 14)", "Android のブラウザー", "A browser on Android"),
        ("Firefox/127.0", "Firefox", "Firefox"),
        ("", "不明なブラウザー", "Unknown browser"),
    ],
)
def test_device_names_in_japanese_and_english(user_agent: str, ja: str, en: str) -> None:
    with translation.override("ja"):
        assert device_name(user_agent) == ja
    with translation.override("en"):
        assert device_name(user_agent) == en


# --- The devices list and removing a device --------------------------------------------------------------------


def subscription(user: User, n: int, **fields: Any) -> PushSubscription:
    return PushSubscription.objects.create(
        user=user, endpoint=f"https://push.example/{user.id}/{n}", p256dh="x", auth="y", **fields
    )


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["ja", "en"])
def test_profile_lists_only_the_persons_own_devices_with_their_state(
    org: Organization, employee: User, employee_client: Any, language: str
) -> None:
    User.objects.filter(pk=employee.pk).update(language=language)
    now = timezone.now()
    current = vapid_keys().public
    subscription(
        employee,
        1,
        user_agent=ANDROID_CHROME,
        vapid_public_key=current,
        last_success_at=now - timedelta(days=3),
        failure_count=2,
        last_failure_at=now - timedelta(hours=1),
    )
    subscription(employee, 2, user_agent=IPHONE_SAFARI, vapid_public_key="B" + "A" * 86, last_success_at=now)
    subscription(employee, 3, user_agent=WINDOWS_EDGE, vapid_public_key=current)
    someone = factories.person(org, "someone")
    subscription(someone, 1, user_agent="Mozilla/5.0 (Macintosh) Version/17.5 Safari/605.1.15")

    body = employee_client.get("/acme/profile/").content.decode()
    names = [
        in_language(language, "%(browser)s on %(system)s") % parts
        for parts in (
            {"browser": "Edge", "system": "Windows"},
            {"browser": "Safari", "system": "iPhone"},
            {"browser": "Chrome", "system": "Android"},
        )
    ]
    positions = [body.find(f'<span class="device-name">{name}</span>') for name in names]
    assert all(p > 0 for p in positions) and positions == sorted(positions), "newest first"
    assert body.count('<li class="device"') == 3, "someone else's device is not listed"
    assert body.count('class="device-state device-failing"') == 1
    assert body.count('class="device-state device-renewal"') == 1
    assert in_language(language, "Key renewal pending") in body
    assert in_language(language, "No notification delivered yet.") in body  # the Edge one
    assert body.count('class="device-state device-this" hidden') == 3  # marked by app.js
    for row in PushSubscription.objects.filter(user=employee):
        assert row.endpoint not in body, "the page carries a hash of the endpoint, not the endpoint"


@pytest.mark.django_db
def test_a_person_removes_their_own_device_and_nobody_elses(org: Organization, employee: User, employee_client: Any):
    mine = subscription(employee, 1)
    theirs = subscription(factories.person(org, "someone"), 1)
    other_org = subscription(factories.person(factories.organization(slug="globex"), "x"), 1)

    def delete(data: Any) -> Any:
        return employee_client.delete("/acme/api/push/subscriptions/", data, content_type="application/json")

    for data in ({"id": theirs.id}, {"id": other_org.id}, {"endpoint": theirs.endpoint}, {"id": 999999}):
        response = delete(data)
        assert response.status_code == 404 and response.json()["code"] == "not_found", data
    assert delete({}).status_code == 400
    assert delete({"id": "x"}).status_code == 400
    assert PushSubscription.objects.count() == 3
    assert delete({"id": mine.id}).json() == {"deleted": 1}
    assert delete({"id": mine.id}).status_code == 404  # gone already
    assert set(PushSubscription.objects.values_list("id", flat=True)) == {theirs.id, other_org.id}


# --- In Chromium: renewal after a key rotation, this device, removing -----------------------------------------

STUB = """(() => {
  // PushManager as a browser with notifications on: the subscription lives in localStorage, so reloads see it.
  const OLD = %s, FRESH = %s;
  const load = () => JSON.parse(localStorage.getItem("__push") || "null") || { current: OLD, calls: [], fail: false };
  const save = (state) => localStorage.setItem("__push", JSON.stringify(state));
  const bytes = (b64) => {
    const padded = b64.replace(/-/g, "+").replace(/_/g, "/") + "==".slice(0, (4 - b64.length %% 4) %% 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
  };
  const b64 = (data) =>
    btoa(String.fromCharCode(...new Uint8Array(data))).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const fake = (sub) => ({
    endpoint: sub.endpoint,
    options: { userVisibleOnly: true, applicationServerKey: bytes(sub.key) },
    toJSON: () => ({ endpoint: sub.endpoint, expirationTime: null, keys: sub.keys }),
    unsubscribe: async () => {
      const state = load();
      state.calls.push(`unsubscribe ${sub.endpoint}`);
      if (state.current?.endpoint === sub.endpoint) state.current = null;
      save(state);
      return true;
    },
  });
  Object.defineProperty(Notification, "permission", { get: () => "granted", configurable: true });
  PushManager.prototype.getSubscription = async function () {
    const state = load();
    return state.current && fake(state.current);
  };
  PushManager.prototype.subscribe = async function (options) {
    const state = load();
    const key = b64(options.applicationServerKey);
    if (state.fail) throw new DOMException("push service unreachable", "AbortError");
    if (state.current && state.current.key !== key) {
      throw new DOMException("a subscription with another key exists", "InvalidStateError");
    }
    state.current = { ...FRESH, key };
    state.calls.push(`subscribe ${key}`);
    save(state);
    return fake(state.current);
  };
})();"""


def api_calls(requests: list[Request]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.method, json.loads(r.post_data or "{}"))
        for r in requests
        if r.url.endswith("/api/push/subscriptions/") and r.method in ("POST", "DELETE")
    ]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_after_a_rotation_the_next_page_renews_the_subscription_and_the_profile_marks_this_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # Keys of this test's own, in a state directory daphne shares: a rotation here is one in another process there.
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    settings.VAPID_PRIVATE_KEY = settings.VAPID_PUBLIC_KEY = settings.VAPID_PREVIOUS_PRIVATE_KEYS = ""
    old_key = vapid_keys().public
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hanako = person(org, "hanako")

    with KeyedPushService() as push:
        old, fresh = push.subscribe(old_key), push.new_subscription()
        # This browser subscribed before the rotation, and so did her iPhone; her Android phone's pushes fail.
        for endpoint_of, agent in ((old, "HeadlessChrome"), (push.subscribe(old_key), IPHONE_SAFARI)):
            PushSubscription.objects.create(
                user=hanako,
                endpoint=endpoint_of["endpoint"],
                p256dh=endpoint_of["keys"]["p256dh"],
                auth=endpoint_of["keys"]["auth"],
                user_agent=agent,
                vapid_public_key=old_key,
            )
        PushSubscription.objects.create(
            user=hanako,
            endpoint="https://push.example/android",
            p256dh="x",
            auth="y",
            user_agent=ANDROID_CHROME,
            vapid_public_key=old_key,
            failure_count=3,
            last_failure_at=timezone.now(),
        )
        iphone = PushSubscription.objects.get(user_agent=IPHONE_SAFARI)
        with daphne(daphne_env() | {"STATE_DIR": str(tmp_path)}) as base, chromium() as browser:
            renew_and_remove(push, base, browser, hanako, old_key, old, fresh, iphone)


def renew_and_remove(
    push: KeyedPushService,
    base: str,
    browser: Any,
    hanako: User,
    old_key: str,
    old: Any,
    fresh: Any,
    iphone: PushSubscription,
) -> None:
    tab = open_tab(browser, base)
    page = tab.page
    page.context.add_init_script(STUB % (json.dumps({**old, "key": old_key}), json.dumps(fresh)))
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    sign_in(tab, hanako)
    page.wait_for_function("navigator.serviceWorker.ready.then((r) => Boolean(r.active))")
    page.reload()
    page.wait_for_load_state("networkidle")
    assert api_calls(requests) == [], "the key has not changed: nothing to renew"

    new_key = while_browsing(vapid_rotate)[0].public
    push.keys[urlsplit(fresh["endpoint"]).path] = new_key
    with page.expect_response(lambda r: r.url.endswith("/api/push/subscriptions/") and r.request.method == "DELETE"):
        page.goto(f"/{SLUG}/home/")
    assert api_calls(requests) == [
        ("POST", {**fresh, "vapid_public_key": new_key}),
        ("DELETE", {"endpoint": old["endpoint"]}),
    ]
    assert page.evaluate("JSON.parse(localStorage.__push).calls") == [
        f"unsubscribe {old['endpoint']}",
        f"subscribe {new_key}",
    ]
    expect(page.locator("#push-problem")).to_have_count(0)  # silent
    rows = while_browsing(
        lambda: dict(PushSubscription.objects.filter(user=hanako).values_list("endpoint", "vapid_public_key"))
    )
    assert rows == {fresh["endpoint"]: new_key, iphone.endpoint: old_key, "https://push.example/android": old_key}

    # Pushes reach both: the renewed browser signed with the new key, the iPhone (not back yet) with the old one.
    ids = while_browsing(
        lambda: list(PushSubscription.objects.exclude(failure_count__gt=0).values_list("id", flat=True))
    )
    # In a thread of its own: push_send runs an event loop, and Playwright's is running in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(
            while_browsing, push_send, subscription_ids=ids, notification={"title": "訓練"}, ttl=60, urgency="high"
        ).result()
    push.wait_for(2)
    assert push.rejected == []
    assert push.signed_with() == {urlsplit(fresh["endpoint"]).path: new_key, urlsplit(iphone.endpoint).path: old_key}

    # The profile: this browser marked, the iPhone's renewal pending, the Android phone failing.
    page.goto(f"/{SLUG}/profile/")
    this = page.locator("#devices li", has=page.locator(".device-this:visible"))
    expect(this).to_have_count(1)
    expect(this.locator(".device-name")).to_have_text("Linux の Chrome")
    expect(this).to_contain_text("この端末")
    iphone_row = page.locator(f'#devices li[data-id="{iphone.id}"]')
    expect(iphone_row.locator(".device-name")).to_have_text("iPhone の Safari")
    expect(iphone_row.locator(".device-renewal")).to_be_visible()
    expect(page.locator("#devices li", has_text="Android の Chrome").locator(".device-failing")).to_be_visible()
    tab.shot("devices-ja-mobile")

    # Removing the iPhone: gone from the page and from the server.
    iphone_row.locator("[data-remove]").click()
    expect(iphone_row).to_have_count(0)
    assert not while_browsing(PushSubscription.objects.filter(id=iphone.id).exists)
    assert while_browsing(vapid_prune) == []  # the Android phone still uses the old key
    assert [k.public for k in while_browsing(vapid_previous)] == [old_key]

    # In English, and nothing a thumb would miss.
    while_browsing(User.objects.filter(pk=hanako.pk).update, language="en")
    page.reload()
    expect(page.locator("#devices .device-this:visible")).to_have_text("● This device")
    expect(page.locator("#devices li", has_text="Chrome on Android").locator(".device-failing")).to_be_visible()
    assert layout_problems(page) == []
    tab.shot("devices-en-mobile")
    while_browsing(User.objects.filter(pk=hanako.pk).update, language="ja")

    # A renewal that fails says so, and points to the profile.
    while_browsing(vapid_rotate)
    page.evaluate(
        "() => { const s = JSON.parse(localStorage.__push); s.fail = true; localStorage.__push = JSON.stringify(s); }"
    )
    page.goto(f"/{SLUG}/home/")
    expect(page.locator("#push-problem")).to_contain_text("プロフィールで通知をオンにし直してください")
    tab.shot("devices-renewal-failed-ja-mobile")
    assert tab.errors == [], tab.errors
