"""The Content-Security-Policy holds in a real headless Chromium against a real daphne: every page of the PWA,
opened as an organisation's administrator (and the Django admin as a site operator), raises no
`securitypolicyviolation` and logs no CSP or Permissions-Policy error, while the service worker registers.

The policy forbids inline script and style (config/security.py), so the pages that used them now say what they
need in data attributes, and this test checks that they still do it: the board's bars have their widths, the
department lists keep their indentation, the group's delete button still asks first, and the sign-in sheet's
print button still prints. Screenshots: test-artifacts/screenshots/csp-board-laptop.png,
csp-onboarding-laptop.png, csp-auto-rule-laptop.png, csp-profile-phone.png.

Run it as its own pytest invocation, like tests/browser (STACK_NOTES.md, "Browser tests")."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone, translation
from PIL import Image
from playwright.sync_api import Browser, Dialog, Page, expect

from chat import services as chat_services
from consumers.models import PushSubscription
from directory.groups import group_create
from directory.models import Department, Organization, PrivateContact, Role
from safety import services
from safety.autodispatch import preset_rule_create
from safety.tokens import answer_path, answer_token
from tests import factories
from tests.browser.test_pwa import VIEWPORTS, Tab, chromium, daphne_env, person, sign_in, while_browsing
from tests.services import daphne, require_postgres, require_redis

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(170)]

SLUG = "acme"
# Records every violation in the page, and what the page's own code tries to do with print(), before any of
# the page's scripts run. The binding survives navigations; the event is also raised for a blocked worker.
WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolation({directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile,
                         line: e.lineNumber, sample: e.sample, page: location.pathname});
});
window.print = () => { window.__printed = (window.__printed || 0) + 1; };
"""
# A message that names one of the policies: Chromium logs "Refused to apply inline style ... Content Security
# Policy" and "Error with Permissions-Policy header" to the console.
POLICY_WORDS = ("content security policy", "content-security-policy", "permissions-policy", "permissions policy")


@dataclass
class Watch:
    violations: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)


def watched_tab(browser: Browser, base: str, watch: Watch, viewport: str = "desktop") -> Tab:
    context = browser.new_context(base_url=base, locale="ja-JP", **VIEWPORTS[viewport])
    context.set_default_timeout(15_000)
    context.add_cookies([{"name": "django_language", "value": "ja", "url": base}])
    context.expose_binding("__cspViolation", lambda _source, v: watch.violations.append(v))
    context.add_init_script(WATCH)
    page = context.new_page()

    def on_console(message: Any) -> None:
        text = message.text
        if any(word in text.lower() for word in POLICY_WORDS):
            watch.console.append(f"{page.url}: {text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watch.page_errors.append(f"{page.url}: {exc}"))
    return Tab(page)


def visit(page: Page, path: str, watch: Watch, status: int = 200) -> None:
    response = page.goto(path, wait_until="load")
    assert response is not None and response.status == status, (path, response and response.status)
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy, (path, policy)
    # Module scripts have run at "load"; give their first fetches and renders a moment to apply styles.
    page.wait_for_timeout(400)
    watch.visited.append(path)


def named(org: Organization, code: str, name: str, parent: Department | None = None) -> Department:
    department = factories.department(org, code, parent)
    department.name = name
    department.save(update_fields=["name"])
    return department


def png() -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (180, 40, 30)).save(buffer, format="PNG")
    return SimpleUploadedFile("photo.png", buffer.getvalue(), content_type="image/png")


def computed(page: Page, selector: str, prop: str) -> float:
    value = page.locator(selector).first.evaluate(f"(el) => getComputedStyle(el).{prop}")
    return float(str(value).removesuffix("px") or 0)


def test_every_page_passes_the_content_security_policy() -> None:
    require_postgres()
    require_redis()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hq = named(org, "HQ", "東京本社")
    sales = named(org, "SALES", "営業部", hq)
    east = named(org, "EAST", "東日本営業課", sales)
    plant = named(org, "PLANT", "大阪工場")
    admin = person(
        org,
        "admin",
        last="管理",
        first="太郎",
        department=hq,
        anpi_login_id="anpi-admin",
        roles=(Role.SYSTEM_ADMIN, Role.CRISIS_MANAGER, Role.ADMIN_GOTALK),
    )
    admin.talk_available = True
    admin.is_staff = admin.is_superuser = True  # a site operator too (manage.py operator_grant)
    admin.save(update_fields=["talk_available", "is_staff", "is_superuser"])
    people = [
        person(org, f"p{n}", last=last, first="花子", department=d, anpi_login_id=f"anpi-p{n}")
        for n, (last, d) in enumerate([("山田", sales), ("佐藤", east), ("鈴木", plant), ("高橋", east)])
    ]
    for p in people:
        p.talk_available = True
        p.save(update_fields=["talk_available"])
    incident = services.incident_create(organization=org, actor=admin, title="【地震】震度6強", message="回答を")
    services.dispatch_create(incident=incident, actor=admin, target={"mode": "everyone"})
    services.answer_submit(incident_id=incident.id, person=people[0], values={"safety": "safe"}, source="app")
    services.answer_submit(incident_id=incident.id, person=people[1], values={"safety": "minor"}, source="app")
    rule = preset_rule_create(org)
    group = group_create(owner=admin, name="防災チーム", member_ids=[people[0].id, people[1].id])
    room = chat_services.room_direct_open(user=admin, other=people[0])
    chat_services.message_send(room=room, sender=people[0], body="写真です")
    chat_services.message_send(room=room, sender=people[0], body="", upload=png())
    PushSubscription.objects.create(user=admin, endpoint="http://127.0.0.1:9/push/1", p256dh="x", auth="y")
    PrivateContact.objects.create(user=admin, address="taro@home.example", confirmed_at=timezone.now())
    link = answer_path(
        slug=SLUG, token=answer_token(organization_id=org.id, incident_id=incident.id, person_id=people[2].id)
    )
    watch = Watch()

    with daphne(daphne_env()) as base, chromium() as browser:
        anonymous = watched_tab(browser, base, watch, viewport="mobile")
        for path in ("/", f"/{SLUG}/", f"/{SLUG}/password/reset/", link, "/static/frontend/manuals/employee.html"):
            visit(anonymous.page, path, watch)
        visit(anonymous.page, f"/{SLUG}/no-such-page/", watch, status=404)

        laptop = watched_tab(browser, base, watch)
        page = laptop.page
        sign_in(laptop, admin)  # also starts sudo mode, so the settings page opens at once
        scope = page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
        assert scope == f"{base}/", scope

        pages = [
            f"/{SLUG}/home/",
            f"/{SLUG}/directory/",
            f"/{SLUG}/directory/?q=%E5%B1%B1%E7%94%B0",
            f"/{SLUG}/directory/people/{people[0].id}/",
            f"/{SLUG}/directory/people/new/",
            f"/{SLUG}/directory/departments/",
            f"/{SLUG}/directory/import/",
            f"/{SLUG}/settings/",
            f"/{SLUG}/password/",
            f"/{SLUG}/help/",
            f"/{SLUG}/talk/",
            f"/{SLUG}/talk/{room.id}/",
            f"/{SLUG}/talk/admin/",
            f"/{SLUG}/talk/logs/",
            f"/{SLUG}/safety/incidents/",
            f"/{SLUG}/safety/incidents/new/",
            f"/{SLUG}/safety/incidents/{incident.id}/",
            f"/{SLUG}/safety/incidents/{incident.id}/edit/",
            f"/{SLUG}/safety/templates/",
            f"/{SLUG}/safety/auto/",
            f"/{SLUG}/safety/auto/rules/new/",
            f"/{SLUG}/safety/auto/verify/",
            f"/{SLUG}/safety/auto/replay/",
            f"/{SLUG}/safety/auto/log/",
            f"/{SLUG}/safety/checks/",
            f"/{SLUG}/safety/",
            f"/{SLUG}/safety/{incident.id}/",
            f"/{SLUG}/disaster/",
            f"/{SLUG}/onboarding/sheet/{hq.id}/?sub=1",
            "/admin/",
            "/admin/directory/user/",
            f"/admin/directory/user/{admin.id}/change/",
            "/admin/chat/",
        ]
        for path in pages:
            visit(page, path, watch)
        # The talk room shows the attached photo through a blob: URL (img-src blob:).
        visit(page, f"/{SLUG}/talk/{room.id}/", watch)
        expect(page.locator("img.tmsg-image").first).to_have_attribute("src", re.compile(r"^blob:"), timeout=15_000)
        assert page.locator("img.tmsg-image").first.evaluate("(img) => img.complete && img.naturalWidth") == 40

        # The board: the total bar and every department's segments have their widths (set through the CSSOM).
        visit(page, f"/{SLUG}/safety/incidents/{incident.id}/board/", watch)
        page.wait_for_function("() => document.getElementById('board')?.dataset.liveState === 'live'", timeout=20_000)
        rate_bar = computed(page, "#board-rate-bar", "width")
        track = computed(page, ".kpi-bar", "width")
        assert 0 < rate_bar < track, (rate_bar, track)  # 2 of 5 answered: 40 %
        assert abs(rate_bar / track - 0.4) < 0.05, (rate_bar, track)
        segments = page.locator("#board-departments .seg")
        assert segments.count() >= 2
        widths = segments.evaluate_all("(s) => s.map((e) => e.getBoundingClientRect().width)")
        assert all(w > 0 for w in widths), (widths, watch.violations[-3:])
        laptop.shot("csp-board-laptop")

        # The onboarding page and the rule form indent departments by depth (data-depth, no inline style).
        visit(page, f"/{SLUG}/onboarding/", watch)
        indent = {d.id: computed(page, f"#department-{d.id}", "marginLeft") for d in (hq, sales, east)}
        assert indent[hq.id] < indent[sales.id] < indent[east.id], indent
        laptop.shot("csp-onboarding-laptop")
        visit(page, f"/{SLUG}/safety/auto/rules/{rule.id}/", watch)
        pad = {d.id: computed(page, f'label.dept:has(input[value="{d.id}"])', "paddingLeft") for d in (hq, sales, east)}
        assert pad[hq.id] < pad[sales.id] < pad[east.id], pad
        laptop.shot("csp-auto-rule-laptop")

        # The sign-in sheet's print button prints; the group's delete button asks first (no inline handlers).
        visit(page, f"/{SLUG}/onboarding/sheet/{hq.id}/", watch)
        page.locator("[data-print]").click()
        assert page.evaluate("window.__printed") == 1
        visit(page, f"/{SLUG}/groups/", watch)
        asked: list[str] = []

        def dismiss(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        page.locator("details.group-edit summary").first.click()
        page.locator("form.delete button").first.click()
        page.wait_for_timeout(300)
        with translation.override("ja"):
            question = translation.gettext("Delete this group? The people in it stay in the directory.")
        assert asked == [question], asked
        assert while_browsing(lambda: type(group).objects.filter(pk=group.pk).exists()), "dismissed, yet deleted"

        phone = watched_tab(browser, base, watch, viewport="mobile")
        sign_in(phone, admin)
        visit(phone.page, f"/{SLUG}/profile/", watch)
        expect(phone.page.locator(".contact-state.contact-confirmed")).to_be_visible()
        # The private contacts' styles (profile.css) apply: the state is a pill, not plain text.
        radius = computed(phone.page, ".contact-state", "borderTopLeftRadius")
        assert radius > 10, radius
        phone.shot("csp-profile-phone")

    assert watch.violations == [], watch.violations
    assert watch.console == [], watch.console
    assert watch.page_errors == [], watch.page_errors
    assert len(watch.visited) >= 40, watch.visited
