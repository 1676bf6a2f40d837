"""Onboarding: invitation e-mails with a single-use, 7-day "choose your password" link, the welcome page, the
invitation page for administrators and the printable sign-in sheet with a QR code per person."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from directory import onboarding
from directory.models import Role, User
from tests import factories
from tests.conftest import signed_in

NEW_PASSWORD = "sakura-no-hana-2024"
INVITATIONS = "/acme/api/onboarding/invitations/"


def invite(client, payload, callbacks):
    with callbacks(execute=True):
        return client.post(INVITATIONS, payload, content_type="application/json")


def welcome_path(text: str) -> str:
    link = re.search(r"https?://\S+/welcome/\S+/\S+/", text).group(0)
    return "/" + link.split("/", 3)[3]


def body_of(message) -> str:
    return message.get_body(("plain",)).get_content()


# --- E-mail ---------------------------------------------------------------------------------------------


def test_invitations_arrive_in_each_persons_language_in_one_smtp_session(
    settings, org, admin, admin_client, smtp_server, django_capture_on_commit_callbacks
):
    ja = factories.person(org, "hanako", email="hanako@acme.example")
    en = factories.person(org, "alex", email="alex@acme.example", language="en")
    en.email2 = "alex@home.example"
    en.save()
    paper = factories.person(org, "genba", email="")

    response = invite(admin_client, {"user_ids": [ja.id, en.id, paper.id]}, django_capture_on_commit_callbacks)

    assert response.status_code == 200, response.content
    assert response.json() == {"invited": 2, "without_email": ["genba"], "inactive": []}
    assert len(smtp_server.sessions) == 1  # one connection for the whole batch
    by_to = {m["To"]: m for m in smtp_server.messages}
    assert set(by_to) == {"hanako@acme.example", "alex@acme.example, alex@home.example"}

    japanese = by_to["hanako@acme.example"]
    assert japanese["Content-Language"] == "ja"
    # .strip(): Python's parser keeps the leading space of a folded, encoded Subject header.
    assert japanese["Subject"].strip() == "[ACME株式会社] パスワードを設定してください"
    text = body_of(japanese)
    assert "招待されました" in text and "7 日" in text
    lines = text.splitlines()
    assert f"サインイン URL: {settings.SITE_URL}/acme/" in lines and "ログイン ID: hanako" in lines

    english = by_to["alex@acme.example, alex@home.example"]
    assert english["Content-Language"] == "en"
    assert english["Subject"].strip() == "[ACME株式会社] Welcome: choose your password"
    text = body_of(english)
    assert "expires in 7 days" in text
    assert f"Sign-in URL: {settings.SITE_URL}/acme/" in text.splitlines() and "Your login ID: alex" in text.splitlines()
    assert welcome_path(text).startswith("/acme/welcome/")

    for person in (ja, en, paper):
        person.refresh_from_db()
    assert ja.invited_at and en.invited_at and paper.invited_at is None


def test_mail_waits_for_the_commit(org, admin):
    person = factories.person(org, "late")
    onboarding.people_invite(organization=org, actor=admin, user_ids=[person.id])
    assert mail.outbox == []  # the test's transaction never commits, so nothing was sent


def test_inactive_people_are_reported_and_not_invited(org, admin, admin_client, django_capture_on_commit_callbacks):
    gone = factories.person(org, "gone")
    User.objects.filter(pk=gone.pk).update(is_active=False)
    response = invite(admin_client, {"user_ids": [gone.id]}, django_capture_on_commit_callbacks)
    assert response.json() == {"invited": 0, "without_email": [], "inactive": ["gone"]}
    assert mail.outbox == []


# --- The welcome link -----------------------------------------------------------------------------------


def invited_link(org, admin, person, callbacks) -> str:
    mail.outbox.clear()
    with callbacks(execute=True):
        onboarding.people_invite(organization=org, actor=admin, user_ids=[person.id])
    (message,) = [m for m in mail.outbox if person.email in m.to]
    return welcome_path(message.body)


def test_welcome_link_sets_the_password_signs_in_and_works_once(org, admin, django_capture_on_commit_callbacks):
    person = factories.person(org, "newbie", must_change_password=True)
    path = invited_link(org, admin, person, django_capture_on_commit_callbacks)
    client = Client()

    page = client.get(path)
    assert page.status_code == 200
    assert 'value="newbie"' in page.content.decode()

    response = client.post(path, {"new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/acme/home/"
    assert client.get("/acme/home/").status_code == 200  # signed in
    person.refresh_from_db()
    assert person.check_password(NEW_PASSWORD) and not person.must_change_password

    # The same link again, from anywhere: refused with a clear message, and nothing changes.
    again = Client()
    assert again.get(path).status_code == 400
    response = again.post(path, {"new_password": "another-pass-9876", "new_password2": "another-pass-9876"})
    assert response.status_code == 400
    assert "already been used" in response.content.decode() or "使用済み" in response.content.decode()
    person.refresh_from_db()
    assert person.check_password(NEW_PASSWORD)


def test_welcome_link_expires_after_seven_days_whatever_the_reset_timeout(
    org, admin, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.PASSWORD_RESET_TIMEOUT = 300  # reset links last 5 minutes; invitations are unaffected
    person = factories.person(org, "slow")
    path = invited_link(org, admin, person, django_capture_on_commit_callbacks)
    generator = onboarding.invitation_token_generator
    now = generator._now()

    monkeypatch.setattr(generator, "_now", lambda: now + timedelta(days=6, hours=23))
    assert Client().get(path).status_code == 200
    monkeypatch.setattr(generator, "_now", lambda: now + timedelta(days=7, minutes=1))
    response = Client().post(path, {"new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 400
    person.refresh_from_db()
    assert not person.check_password(NEW_PASSWORD)


def test_a_newer_invitation_or_a_sign_in_retires_the_link(org, admin, django_capture_on_commit_callbacks):
    person = factories.person(org, "twice")
    first = invited_link(org, admin, person, django_capture_on_commit_callbacks)
    second = invited_link(org, admin, person, django_capture_on_commit_callbacks)
    assert Client().get(first).status_code == 400
    assert Client().get(second).status_code == 200
    signed_in(person)  # signed in with a password from elsewhere (e.g. the initial one)
    assert Client().get(second).status_code == 400


def test_reset_tokens_and_invitation_tokens_are_not_interchangeable(org, employee):
    uid = urlsafe_base64_encode(force_bytes(employee.pk))
    reset_token = default_token_generator.make_token(employee)
    invitation_token = onboarding.invitation_token_generator.make_token(employee)
    assert Client().get(f"/acme/welcome/{uid}/{reset_token}/").status_code == 400
    assert Client().get(f"/acme/password/reset/{uid}/{invitation_token}/").status_code == 400
    assert Client().get(f"/acme/welcome/{uid}/{invitation_token}/").status_code == 200


@pytest.mark.parametrize(
    ("new", "again", "code_text"),
    [
        ("short", "short", "10"),  # too short: the validators' own message
        ("12345678901234", "12345678901234", ""),  # only digits
        ("kawa-no-nagare-1", "kawa-no-nagare-2", ""),  # the two differ
    ],
)
def test_welcome_page_refuses_a_bad_password_and_keeps_the_link(
    org, admin, django_capture_on_commit_callbacks, new, again, code_text
):
    person = factories.person(org, "careful")
    path = invited_link(org, admin, person, django_capture_on_commit_callbacks)
    response = Client().post(path, {"new_password": new, "new_password2": again})
    assert response.status_code == 400
    assert 'class="error"' in response.content.decode() and code_text in response.content.decode()
    assert Client().get(path).status_code == 200  # still usable


@pytest.mark.parametrize("path", ["/acme/welcome/xx/yy/", "/acme/welcome/MQ/1-abc/", "/acme/welcome/%E2%9C%93/x/"])
def test_malformed_welcome_links_are_a_clear_400(org, path):
    response = Client().get(path)
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()


def test_welcome_link_of_another_organisation_is_refused(org, other_org):
    outsider = factories.person(other_org, "spy")
    uid = urlsafe_base64_encode(force_bytes(outsider.pk))
    token = onboarding.invitation_token_generator.make_token(outsider)
    assert Client().get(f"/acme/welcome/{uid}/{token}/").status_code == 400
    assert Client().get(f"/globex/welcome/{uid}/{token}/").status_code == 200


# --- REST: who may, and bad input ----------------------------------------------------------------------


def test_only_system_administrators_may_invite(org, employee, employee_client):
    response = employee_client.post(INVITATIONS, {"user_ids": [employee.id]}, content_type="application/json")
    assert response.status_code == 403
    assert Client().post(INVITATIONS, {"user_ids": [employee.id]}, content_type="application/json").status_code == 403


def test_people_of_another_organisation_are_a_404_and_nobody_is_invited(
    org, other_org, admin_client, employee, django_capture_on_commit_callbacks
):
    outsider = factories.person(other_org, "spy")
    foreign_department = factories.department(other_org)
    response = invite(admin_client, {"user_ids": [employee.id, outsider.id]}, django_capture_on_commit_callbacks)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = invite(admin_client, {"department_id": foreign_department.id}, django_capture_on_commit_callbacks)
    assert response.status_code == 404
    assert mail.outbox == []
    assert not User.objects.filter(invited_at__isnull=False).exists()
    # An administrator of the other organisation cannot reach ours either.
    foreign_admin = factories.person(other_org, "boss", roles=(Role.SYSTEM_ADMIN,))
    response = signed_in(foreign_admin).post(INVITATIONS, {"user_ids": [employee.id]}, content_type="application/json")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "bad_selection"),
        ({"user_ids": [1], "department_id": 1}, "bad_selection"),
        ({"user_ids": []}, "invalid"),
        ({"user_ids": "everyone"}, "invalid"),
        ({"user_ids": ["x"]}, "invalid"),
        ({"user_ids": [0]}, "invalid"),
        ({"user_ids": [2**70]}, "invalid"),
        ({"department_id": "sales"}, "invalid"),
        ({"department_id": 1, "include_subdepartments": "maybe"}, "invalid"),
    ],
)
def test_bad_invitation_input_is_a_clear_400(org, admin_client, payload, code):
    response = admin_client.post(INVITATIONS, payload, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["message"]


def test_a_body_that_is_not_json_is_a_400(org, admin_client):
    response = admin_client.post(INVITATIONS, "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "parse_error"


def test_department_invitation_reaches_people_who_never_signed_in(
    org, admin_client, django_capture_on_commit_callbacks
):
    sales = factories.department(org, "SALES")
    osaka = factories.department(org, "OSAKA", parent=sales)
    new_here = factories.person(org, "new-here", department=sales)
    regular = factories.person(org, "regular", department=sales)
    new_there = factories.person(org, "new-there", department=osaka)
    signed_in(regular)

    response = invite(admin_client, {"department_id": sales.id}, django_capture_on_commit_callbacks)
    assert response.json()["invited"] == 1
    assert [m.to for m in mail.outbox] == [[new_here.email]]

    mail.outbox.clear()
    User.objects.update(invited_at=None)
    payload = {"department_id": sales.id, "include_subdepartments": True}
    response = invite(admin_client, payload, django_capture_on_commit_callbacks)
    assert response.json()["invited"] == 2
    assert sorted(m.to[0] for m in mail.outbox) == sorted([new_here.email, new_there.email])

    mail.outbox.clear()
    payload = {"department_id": sales.id, "only_never_signed_in": False}
    response = invite(admin_client, payload, django_capture_on_commit_callbacks)
    assert response.json()["invited"] == 2  # new-here and regular
    assert sorted(m.to[0] for m in mail.outbox) == sorted([new_here.email, regular.email])


def test_a_system_administrator_who_must_change_their_password_cannot_invite_yet(org, employee):
    admin = factories.person(org, "fresh", roles=(Role.SYSTEM_ADMIN,), must_change_password=True)
    response = signed_in(admin).post(INVITATIONS, {"user_ids": [employee.id]}, content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "password_change_required"


def test_the_service_refuses_an_actor_who_is_not_an_administrator(org, employee):
    from config.errors import ApplicationError

    with pytest.raises(ApplicationError) as error:
        onboarding.people_invite(organization=org, actor=employee, user_ids=[employee.id])
    assert error.value.code == "forbidden"


# --- The invitation page --------------------------------------------------------------------------------


def test_invitation_page_lists_departments_and_invites_one(org, admin_client, django_capture_on_commit_callbacks):
    sales = factories.department(org, "SALES")
    factories.department(org, "OSAKA", parent=sales)
    newcomer = factories.person(org, "newcomer", department=sales)
    factories.person(org, "paper-only", department=sales, email="")

    page = admin_client.get("/acme/onboarding/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="department-{sales.id}"' in html and f"/acme/onboarding/sheet/{sales.id}/" in html

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/acme/onboarding/", {"department_id": sales.id}, follow=True)
    assert response.status_code == 200
    assert [m.to for m in mail.outbox] == [[newcomer.email]]
    html = response.content.decode()
    assert "paper-only" in html  # reported as having no e-mail address


def test_invitation_page_is_for_administrators_of_this_organisation(org, other_org, employee_client, admin_client):
    assert employee_client.get("/acme/onboarding/").status_code == 403
    foreign = factories.department(other_org)
    assert admin_client.post("/acme/onboarding/", {"department_id": foreign.id}).status_code == 404
    assert admin_client.post("/acme/onboarding/", {"department_id": "x"}).status_code == 404
    assert admin_client.get(f"/acme/onboarding/sheet/{foreign.id}/").status_code == 404
    outsider = signed_in(factories.person(other_org, "spy", roles=(Role.SYSTEM_ADMIN,)))
    assert outsider.get("/acme/onboarding/").status_code == 404


# --- The sign-in sheet ----------------------------------------------------------------------------------


def test_sheet_has_a_qr_code_of_the_sign_in_url_per_active_person(settings, org, admin_client, employee_client):
    from frontend.onboarding_views import qr_svg

    sales = factories.department(org, "SALES")
    osaka = factories.department(org, "OSAKA", parent=sales)
    a = factories.person(org, "a.sato+1@acme.example", department=sales)
    b = factories.person(org, "b-suzuki", department=sales)
    factories.person(org, "c-osaka", department=osaka)
    gone = factories.person(org, "gone", department=sales)
    User.objects.filter(pk=gone.pk).update(is_active=False)

    response = admin_client.get(f"/acme/onboarding/sheet/{sales.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<svg viewBox="0 0') == 2 and html.count('class="sheet-card"') == 2
    for person in (a, b):
        url = f"{settings.SITE_URL}/acme/?login_id={quote(person.login_id, safe='')}"
        assert qr_svg(url) in html, person.login_id
        assert person.display_name in html
    assert "c-osaka" not in html and "gone" not in html
    assert "frontend/onboarding.css" in html

    with_sub = admin_client.get(f"/acme/onboarding/sheet/{sales.id}/?sub=1").content.decode()
    assert with_sub.count('class="sheet-card"') == 3 and "c-osaka" in with_sub
    assert qr_svg(f"{settings.SITE_URL}/acme/?login_id=c-osaka") in with_sub

    assert employee_client.get(f"/acme/onboarding/sheet/{sales.id}/").status_code == 403


def test_sign_in_url_quotes_the_login_id(org):
    assert onboarding.sign_in_url(organization=org, login_id="a b&c@x").endswith("/acme/?login_id=a+b%26c%40x")
    assert onboarding.sign_in_url(organization=org).endswith("/acme/")


def test_login_page_fills_in_the_login_id_from_the_sheet(org, client):
    # The QR code's URL; the login page reads ?login_id= (frontend/views.py `login`).
    html = client.get("/acme/?login_id=a%2Bb%40acme.example").content.decode()
    assert 'value="a+b@acme.example"' in html


def test_onboarding_overview_counts_in_one_query(org, django_assert_num_queries):
    root = factories.department(org, "HQ")
    child = factories.department(org, "DEV", parent=root)
    factories.person(org, "x", department=child)
    factories.person(org, "y", department=child, email="")
    with django_assert_num_queries(1):
        rows = onboarding.onboarding_overview(organization=org)
    assert [(r.code, r.depth, r.has_children) for r in rows] == [("HQ", 0, True), ("DEV", 1, False)]
    assert (rows[1].people, rows[1].never_signed_in, rows[1].without_email, rows[1].invited) == (2, 2, 1, 0)
