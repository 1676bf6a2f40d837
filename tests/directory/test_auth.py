"""Sign-in, one-time passwords, password reset, lockout and sudo mode."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from directory.models import Role
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db


def attempt(client: Client, slug: str, login_id: str, password: str, **headers: str) -> int:
    return client.post(f"/{slug}/", {"login_id": login_id, "password": password}, **headers).status_code


def test_wrong_password_is_a_clear_400_and_right_one_signs_in(org, employee):
    client = Client()
    response = client.post("/acme/", {"login_id": employee.login_id, "password": "nope"})
    assert response.status_code == 400
    assert "ログイン ID またはパスワードが違います" in response.content.decode()
    assert attempt(client, "acme", employee.login_id, factories.PASSWORD) == 302
    assert client.get("/acme/home/").status_code == 200


def test_one_time_password_must_be_replaced_before_anything_else(org):
    person = factories.person(org, "new", must_change_password=True)
    client = Client()
    response = client.post("/acme/", {"login_id": "new", "password": factories.PASSWORD})
    assert response["Location"] == "/acme/password/"
    assert client.get("/acme/home/")["Location"] == "/acme/password/"
    assert client.get("/acme/api/notices/").json()["code"] == "password_change_required"
    response = client.post("/acme/password/", {"new_password": "short", "new_password2": "short"})
    assert response.status_code == 400
    response = client.post(
        "/acme/password/", {"new_password": "a-much-better-pass", "new_password2": "a-much-better-pass"}
    )
    assert response["Location"] == "/acme/home/"
    assert client.get("/acme/home/").status_code == 200  # still signed in after the change
    person.refresh_from_db()
    assert not person.must_change_password and person.check_password("a-much-better-pass")


def test_password_reset_link_works_once(org, employee, smtp_server, django_capture_on_commit_callbacks):
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/acme/password/reset/", {"login_id": employee.login_id})
    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    assert message["To"] == employee.email
    text = message.get_body(("plain",)).get_content()
    assert "パスワード" in text  # the person's language is Japanese
    link = re.search(r"http://[^\s]+/password/reset/[^\s]+/", text).group(0)
    path = link.split("127.0.0.1:8000", 1)[1]
    assert client.get(path).status_code == 200
    response = client.post(path, {"new_password": "fresh-password-123", "new_password2": "fresh-password-123"})
    assert response.status_code == 302
    employee.refresh_from_db()
    assert employee.check_password("fresh-password-123")
    # the same link again: refused, and nothing changes
    response = client.post(path, {"new_password": "another-password-456", "new_password2": "another-password-456"})
    assert response.status_code == 400
    employee.refresh_from_db()
    assert employee.check_password("fresh-password-123")


def test_password_reset_link_expires(org, employee, settings, smtp_server, monkeypatch):
    from django.contrib.auth.tokens import default_token_generator
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    token = default_token_generator.make_token(employee)
    uid = urlsafe_base64_encode(force_bytes(employee.pk))
    settings.PASSWORD_RESET_TIMEOUT = -1
    assert Client().get(f"/acme/password/reset/{uid}/{token}/").status_code == 400


def test_reset_for_unknown_login_says_the_same_and_sends_nothing(org, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/acme/password/reset/", {"login_id": "ghost"})
    assert response.status_code == 200 and len(mail.outbox) == 0


def test_reset_mail_is_in_english_for_english_speakers(org, django_capture_on_commit_callbacks):
    person = factories.person(org, "en", language="en")
    with django_capture_on_commit_callbacks(execute=True):
        Client().post("/acme/password/reset/", {"login_id": "en"})
    assert mail.outbox[0].subject == "[ACME株式会社] Reset your password"
    assert person.email in mail.outbox[0].to


def test_ten_failures_lock_that_login_id_from_that_client_only(org):
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    stranger = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(9):
        assert attempt(stranger, "acme", "crisis", "guess", REMOTE_ADDR="203.0.113.9") == 400
    assert attempt(stranger, "acme", "crisis", "guess", REMOTE_ADDR="203.0.113.9") == 429  # the tenth locks
    # now locked for that pair, even with the right password
    assert attempt(stranger, "acme", "crisis", factories.PASSWORD, REMOTE_ADDR="203.0.113.9") == 429
    # changing X-Forwarded-For does not dodge it: no proxy is trusted by default
    assert (
        attempt(
            stranger,
            "acme",
            "crisis",
            factories.PASSWORD,
            REMOTE_ADDR="203.0.113.9",
            HTTP_X_FORWARDED_FOR="198.51.100.1",
        )
        == 429
    )
    # the crisis manager on their own device is not locked out by the stranger
    assert attempt(Client(), "acme", crisis.login_id, factories.PASSWORD, REMOTE_ADDR="192.0.2.50") == 302


def test_many_ids_from_one_client_lock_the_client(org, settings):
    factories.person(org, "victim")
    for n in range(settings.AXES_CLIENT_FAILURE_LIMIT):
        attempt(Client(), "acme", f"guess{n}", "x", REMOTE_ADDR="203.0.113.7")
    assert attempt(Client(), "acme", "victim", factories.PASSWORD, REMOTE_ADDR="203.0.113.7") == 429
    assert attempt(Client(), "acme", "victim", factories.PASSWORD, REMOTE_ADDR="203.0.113.8") == 302


def test_trusted_proxy_count_reads_the_client_from_forwarded_for(org, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    factories.person(org, "p")
    for _ in range(10):
        attempt(Client(), "acme", "p", "x", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    # the same client behind the proxy is locked, whatever it writes in front of the proxy's entry
    assert (
        attempt(
            Client(),
            "acme",
            "p",
            factories.PASSWORD,
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR="198.51.100.77, 203.0.113.5",
        )
        == 429
    )
    # another client through the same proxy is not
    assert (
        attempt(Client(), "acme", "p", factories.PASSWORD, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.6")
        == 302
    )


def test_settings_need_recent_password_sudo_mode(org, admin, monkeypatch):
    import time as real_time

    client = signed_in(admin)
    assert client.get("/acme/settings/").status_code == 200  # signing in just now counts
    assert client.get("/acme/api/organization/").status_code == 200
    later = real_time.time() + 16 * 60
    monkeypatch.setattr("directory.permissions.time.time", lambda: later)
    response = client.get("/acme/settings/")
    assert response.status_code == 302 and response["Location"].startswith("/acme/sudo/")
    api = client.patch("/acme/api/organization/", {"name": "X"}, content_type="application/json")
    assert api.status_code == 403 and api.json()["code"] == "sudo_required"
    assert client.post("/acme/sudo/", {"password": "wrong", "next": "/acme/settings/"}).status_code == 400
    response = client.post("/acme/sudo/", {"password": factories.PASSWORD, "next": "/acme/settings/"})
    assert response["Location"] == "/acme/settings/"
    api = client.patch("/acme/api/organization/", {"name": "ACME Holdings"}, content_type="application/json")
    assert api.status_code == 200 and api.json()["name"] == "ACME Holdings"


def test_only_system_admins_change_settings(org, employee_client):
    assert employee_client.get("/acme/settings/").status_code == 403
    assert employee_client.get("/acme/api/organization/").status_code == 403


def test_logo_upload_checks_content_and_bad_input_changes_nothing(org, admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    fake = SimpleUploadedFile("logo.png", b"<svg onload=alert(1)>", content_type="image/png")
    response = admin_client.post("/acme/settings/", {"name": "Renamed", "logo": fake})
    assert response.status_code == 400
    org.refresh_from_db()
    assert org.name == "ACME株式会社" and not org.logo
    png = SimpleUploadedFile("logo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, content_type="image/png")
    assert admin_client.post("/acme/settings/", {"name": "Renamed", "logo": png}).status_code == 302
    logo = admin_client.get("/acme/logo")
    assert logo.status_code == 200 and logo["Content-Type"] == "image/png"
    org.refresh_from_db()
    org.logo.delete()


def test_person_language_setting_wins_over_browser(org, employee):
    client = signed_in(employee)
    page = client.get("/acme/home/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "お知らせ" in page
    client.post("/acme/profile/", {"language": "en"})
    page = client.get("/acme/home/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "Notices" in page and "お知らせ" not in page


def test_anonymous_pages_follow_the_browser_language(org):
    assert "Sign in" in Client().get("/acme/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "サインイン" in Client().get("/acme/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()


def test_signing_in_to_your_own_account_does_not_reset_a_clients_guess_count(org, settings):
    factories.person(org, "mine")
    factories.person(org, "victim")
    ip = "203.0.113.20"
    for round_ in range(3):
        for n in range(settings.AXES_CLIENT_FAILURE_LIMIT // 2):
            attempt(Client(), "acme", f"guess{round_}-{n}", "x", REMOTE_ADDR=ip)
        attempt(Client(), "acme", "mine", factories.PASSWORD, REMOTE_ADDR=ip)
    assert attempt(Client(), "acme", "victim", factories.PASSWORD, REMOTE_ADDR=ip) == 429


def test_crisis_managers_are_not_locked_by_strangers_behind_the_same_address(org, settings):
    factories.person(org, "chief", roles=(Role.CRISIS_MANAGER,))
    shared = "198.51.100.200"  # an office or carrier NAT
    for n in range(settings.AXES_CLIENT_FAILURE_LIMIT + 5):
        attempt(Client(), "acme", f"stranger{n}", "x", REMOTE_ADDR=shared)
    assert attempt(Client(), "acme", "chief", factories.PASSWORD, REMOTE_ADDR=shared) == 302


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/acme/", {"login_id": "a\x00b", "password": "x"}),
        ("/acme/password/reset/", {"login_id": "a\x00"}),
        ("/", {"email": "a\x00@example.com"}),
    ],
)
def test_nul_characters_get_a_clear_400_not_a_500(org, path, data):
    response = Client().post(path, data)
    assert response.status_code == 400 and response.json()["code"] == "invalid"


def test_sudo_password_guesses_count_towards_the_lockout(org, admin):
    client = signed_in(admin)
    for _ in range(9):
        assert client.post("/acme/sudo/", {"password": "wrong"}).status_code == 400
    assert client.post("/acme/sudo/", {"password": "wrong"}).status_code == 429
    assert client.post("/acme/sudo/", {"password": factories.PASSWORD}).status_code == 429


def test_password_reset_mail_is_throttled(org, employee, django_capture_on_commit_callbacks):
    from django.core.cache import cache

    cache.clear()
    for _ in range(6):
        with django_capture_on_commit_callbacks(execute=True):
            Client().post("/acme/password/reset/", {"login_id": employee.login_id})
    assert len(mail.outbox) == 3
