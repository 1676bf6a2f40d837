"""Contact verification pages (連絡先の確認): the administrators' page (counts per problem as filters, the people
with their problem chips, send again, the schedule) and the person's one-tap confirm page, which works without
JavaScript, confirms only on POST (mail scanners fetch links) and keeps the token from leaking. Then both in a
real headless Chromium against a real daphne, the local push service and aiosmtpd, with screenshots
(test-artifacts/screenshots/checks-*.png); run those as their own pytest invocation (`-m browser`, see
tests/browser/test_pwa.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import translation

from consumers.models import MailAddressState, PushSubscription
from directory.models import Organization, Role, User
from safety import checks
from safety.models import ContactCheck, ContactCheckDelivery, ContactCheckPerson
from tests import factories
from tests.conftest import SmtpServer, signed_in
from tests.pushservice import LocalPushService

pytestmark = pytest.mark.django_db


def tr(language: str, message: str, **values: Any) -> str:
    """What the page shows for a msgid (English until the Japanese catalogue has it)."""
    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def safety_user(org: Organization, login_id: str, **kwargs: Any) -> User:
    return factories.person(org, login_id, anpi_login_id=f"anpi-{login_id}", **kwargs)


@pytest.fixture
def admin(org: Organization) -> User:
    return factories.person(org, "anpi-admin", roles=(Role.ADMIN_ANPI,))


@pytest.fixture
def check(org: Organization, admin: User) -> ContactCheck:
    safety_user(org, "hanako", email="hanako@acme.example")
    safety_user(org, "ken", email="ken@acme.example")
    safety_user(org, "jiro", email="")
    MailAddressState.objects.create(address="ken@acme.example", failing=True)
    made = checks.check_start(organization=org, actor=admin)
    checks.contact_check_run(check_id=made.id)
    made.refresh_from_db()
    return made


def page_data(html: str) -> Any:
    match = re.search(r'<script id="checks-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no #checks-data in the page"
    return json.loads(match.group(1))


def link(check: ContactCheck, login_id: str, via: str = "mail") -> str:
    person = User.objects.get(login_id=login_id)
    token = checks.check_token(organization_id=check.organization_id, check_id=check.id, person_id=person.id)
    return checks.check_path(slug="acme", token=token) + f"?via={via}"


# --- The administrators' page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ja", "en"])
def test_the_checks_page_shows_counts_as_filters_and_the_people_with_problems(
    check: ContactCheck, admin: User, language: str
) -> None:
    admin.language = language
    admin.save(update_fields=["language"])
    client = signed_in(admin)
    response = client.get("/acme/safety/checks/")
    assert response.status_code == 200
    html = response.content.decode()
    assert tr(language, "Contact checks") in html
    assert 'id="check-start"' in html and 'id="check-schedule"' in html and 'id="check-resend"' in html
    data = page_data(html)
    assert data["check"]["id"] == check.id and data["check"]["running"] is False
    # Every person has a problem (nobody confirmed yet): all three listed, with their chips in words.
    assert data["matched"] == 3
    assert html.count('class="check-person" data-id') == 3
    assert tr(language, "No contact at all") in html and tr(language, "E-mail bounced") in html
    assert "ken@acme.example" not in html and "hanako@acme.example" not in html
    assert f'href="?check={check.id}&amp;problem=email_bounced"' in html
    ken_only = client.get(f"/acme/safety/checks/?check={check.id}&problem=email_bounced").content.decode()
    assert (
        ken_only.count('class="check-person" data-id') == 1
        and 'aria-current="true" data-code="email_bounced"' in ken_only
    )
    assert page_data(ken_only)["resend_problems"] == ["email_bounced"]
    # No contact at all: nobody to send to, so no send-again button.
    assert 'id="check-resend"' not in client.get("/acme/safety/checks/?problem=no_contact").content.decode()


@pytest.mark.parametrize(
    "query",
    ["?problem=nope", "?department=abc", "?department=99999999", "?offset=x&limit=-1", "?check=abc", "?check=0"],
)
def test_a_hand_edited_address_never_breaks_the_page(check: ContactCheck, admin: User, query: str) -> None:
    response = signed_in(admin).get(f"/acme/safety/checks/{query}")
    assert response.status_code == 200
    assert page_data(response.content.decode())["check"]["id"] == check.id


def test_the_page_without_checks_and_who_may_open_it(org: Organization, admin: User) -> None:
    html = signed_in(admin).get("/acme/safety/checks/").content.decode()
    assert 'id="no-checks"' in html and 'id="check-start"' in html
    member = safety_user(org, "member")
    assert signed_in(member).get("/acme/safety/checks/").status_code == 403
    manager = factories.person(org, "bucho", roles=(Role.MANAGER,))
    html = signed_in(manager).get("/acme/safety/checks/").content.decode()
    assert 'id="check-start"' not in html and 'id="check-schedule"' not in html
    assert Client().get("/acme/safety/checks/").status_code == 302  # to sign-in


def test_a_department_manager_sees_their_people_and_cannot_send(org: Organization, admin: User) -> None:
    sales = factories.department(org, "SALES")
    mine = safety_user(org, "mine", department=sales, email="")
    safety_user(org, "theirs", email="")
    made = checks.check_start(organization=org, actor=admin)
    bucho = factories.person(org, "bucho", roles=(Role.DEPARTMENT_MANAGER,), department=sales)
    html = signed_in(bucho).get(f"/acme/safety/checks/?check={made.id}&problem=all").content.decode()
    assert f'data-id="{mine.id}"' in html and html.count('class="check-person" data-id') == 1
    assert 'id="check-resend"' not in html and 'id="check-start"' not in html


# --- The person's confirm page ---------------------------------------------------------------------------------


def test_the_confirm_page_confirms_on_post_only_and_works_without_javascript(check: ContactCheck) -> None:
    client = Client(enforce_csrf_checks=True)  # the token is the credential: no cookie, no CSRF token
    url = link(check, "hanako")
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert tr("ja", "I got this") in html and '<form method="post"' in html
    assert "<script" not in html.split("<main", 1)[1]  # the page itself needs no script
    assert response["Referrer-Policy"] == "no-referrer" and "noindex" in response["X-Robots-Tag"]
    assert response["Content-Language"] == "ja"
    hanako = ContactCheckPerson.objects.get(check_run=check, person__login_id="hanako")
    assert hanako.confirmed_at is None  # a mail scanner's GET confirms nothing
    assert ContactCheckDelivery.objects.get(check_run=check, person__login_id="hanako").state == "opened"

    posted = client.post(url)
    assert posted.status_code == 302 and posted["Location"] == url
    after = client.get(url).content.decode()
    assert tr("ja", "Confirmed") in after and 'id="confirm-button"' not in after
    assert client.post(url).status_code == 302  # again: still once
    hanako.refresh_from_db()
    assert hanako.confirmed_via == "email"
    assert ContactCheckPerson.objects.filter(confirmed_at__isnull=False).count() == 1


def test_the_confirm_page_in_english_and_from_the_notification(check: ContactCheck) -> None:
    url = link(check, "ken", via="push") + "&lang=en"
    html = Client().get(url).content.decode()
    assert "I got this" in html and 'lang="ja"' in html  # the switch back to Japanese
    Client().post(url)
    assert ContactCheckPerson.objects.get(check_run=check, person__login_id="ken").confirmed_via == "push"


@pytest.mark.parametrize("token", ["nope", "x" * 20, "a.b:c", "x" * 400])
def test_a_bad_link_gets_a_page_that_says_so(check: ContactCheck, token: str) -> None:
    for method in ("get", "post"):
        response = getattr(Client(), method)(f"/acme/check/{token}/")
        assert response.status_code == 404
        assert tr("ja", "This link is not valid or has expired") in response.content.decode()
        assert response["Referrer-Policy"] == "no-referrer"
    assert not ContactCheckPerson.objects.filter(confirmed_at__isnull=False).exists()


def test_the_confirm_page_shows_nothing_of_whoever_is_signed_in(check: ContactCheck, admin: User) -> None:
    client = signed_in(admin)
    html = client.get(link(check, "hanako")).content.decode()
    assert 'class="topnav"' not in html and admin.display_name not in html
    # and another organisation's address for the same token is 404
    factories.organization(slug="globex")
    assert client.get(link(check, "hanako").replace("/acme/", "/globex/")).status_code == 404


# --- In Chromium -------------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_admin_runs_a_check_and_people_confirm_in_the_browser(
    push_service: LocalPushService, smtp_server: SmtpServer
) -> None:
    from playwright.sync_api import expect

    from directory.importer import user_search_text
    from tests.browser.test_pwa import chromium, daphne_env, layout_problems, open_tab, person, sign_in, while_browsing
    from tests.services import daphne

    org = factories.organization(slug="acme", name="ACME株式会社")
    sales = factories.department(org, "S")
    sales.name = "営業部"
    sales.save(update_fields=["name"])

    def named(login_id: str, last: str, first: str, **kwargs: Any) -> User:
        user = person(org, login_id, last=last, first=first, department=sales, **kwargs)
        user.search_text = user_search_text(user)
        user.save(update_fields=["search_text"])
        return user

    admin = named("anpi", "管理", "太郎", roles=(Role.ADMIN_ANPI,))
    hanako = named("hanako", "山田", "花子", anpi_login_id="hanako", email="hanako@acme.example")
    named("ken", "佐藤", "健", anpi_login_id="ken", email="ken@acme.example")
    named("jiro", "鈴木", "次郎", anpi_login_id="jiro", email="")
    MailAddressState.objects.create(address="ken@acme.example", failing=True)
    subscription = push_service.new_subscription()
    PushSubscription.objects.create(
        user=hanako,
        endpoint=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
    )
    env = daphne_env()
    env["EMAIL_URL"] = f"smtp://{smtp_server.host}:{smtp_server.port}"

    with daphne(env) as base, chromium() as browser:
        laptop = open_tab(browser, base, viewport="desktop")
        sign_in(laptop, admin)
        page = laptop.page
        page.goto("/acme/safety/checks/")
        expect(page.locator("#no-checks")).to_be_visible()
        page.fill("#every-days", "30")
        page.locator("#check-schedule button").click()
        expect(page.locator("#schedule-next")).to_contain_text(tr("ja", "Next check: %(time)s", time="")[:5])
        with page.expect_navigation():
            page.locator("#check-start").click()
        expect(page.locator("#check-state")).to_have_text(tr("ja", "Sent"), timeout=15_000)
        expect(page.locator("#count-total")).to_have_text("3")
        expect(page.locator("#count-confirmed")).to_have_text("0")
        check_id = int(page.locator("#check-report").get_attribute("data-check") or 0)

        # Hanako taps the notification (the payload the push service decrypted) and confirms on her phone.
        pushes = push_service.wait_for(1)
        payload = json.loads(pushes[0].payload)
        assert payload["kind"] == "check" and payload["tag"] == f"check-{check_id}"
        phone = open_tab(browser, base)
        phone.page.goto(payload["url"])
        expect(phone.page.locator("#confirm-button")).to_be_visible()
        assert not layout_problems(phone.page), layout_problems(phone.page)
        phone.shot("checks-confirm-phone")
        phone.page.locator("#confirm-button").click()
        expect(phone.page.locator("#confirm-title")).to_contain_text(tr("ja", "Confirmed"))
        phone.shot("checks-confirmed-phone")

        # Ken opens the link in his e-mail, in English.
        mail = next(m for m in smtp_server.messages if "ken@acme.example" in m.envelope_to)
        url = re.search(r"http\S+\?via=mail", mail.get_body(("plain",)).get_content()).group(0)
        english = open_tab(browser, base, language="en")
        english.page.goto(url.replace("http://127.0.0.1:8000", base) + "&lang=en")
        expect(english.page.locator("#confirm-button")).to_have_text(re.compile("I got this"))
        english.shot("checks-confirm-phone-en")

        # The administrator sees one confirmed, filters to the bounced address and sends again to that one person.
        page.reload()
        expect(page.locator("#count-confirmed")).to_have_text("1")
        assert not [p for p in layout_problems(page) if "problem-filter" not in p], layout_problems(page)
        laptop.shot("checks-admin-laptop")
        page.locator('.problem-filter[data-code="email_bounced"]').click()
        expect(page.locator(".check-person")).to_have_count(1)
        expect(page.locator(".check-person")).to_contain_text("佐藤 健")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#check-resend").click()
        expect(page.locator("#checks-status")).to_contain_text(tr("ja", "Sent again to %(n)s people.", n=1))
        laptop.shot("checks-admin-resent-laptop")
        assert while_browsing(lambda: ContactCheck.objects.get(id=check_id).round) == 2

        # The directory shows the administrator the badge.
        page.goto("/acme/directory/")
        expect(page.locator(".contact-badge").first).to_be_visible()
        laptop.shot("checks-directory-badge-laptop")
        # Rows the script renders from the API carry it too.
        page.fill("#dir-q", "佐藤")
        expect(page.locator("#results .person-row")).to_have_count(1)
        expect(page.locator("#results .contact-badge")).to_contain_text(tr("ja", "E-mail bounced"))

        mobile = open_tab(browser, base)
        sign_in(mobile, admin)
        mobile.page.goto(f"/acme/safety/checks/?check={check_id}&problem=all")
        expect(mobile.page.locator(".check-person")).to_have_count(3)
        assert not layout_problems(mobile.page), layout_problems(mobile.page)
        mobile.shot("checks-admin-phone")
        assert laptop.errors == [] and phone.errors == [] and english.errors == [] and mobile.errors == []
