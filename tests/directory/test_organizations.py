"""Creating organisations from the command line, the demo organisation, and finding your organisation."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from directory.models import Organization, Role, User
from tests import factories

pytestmark = pytest.mark.django_db


def test_org_create_prints_a_one_time_password_that_signs_in_once(db):
    out = StringIO()
    call_command("org_create", "newco", "--name", "新会社", "--admin-email", "boss@newco.example", stdout=out)
    text = out.getvalue()
    password = re.search(r"One-time password: (\S+)", text).group(1)
    admin = User.objects.get(organization__slug="newco", login_id="boss@newco.example")
    assert admin.roles == {Role.SYSTEM_ADMIN} and admin.must_change_password
    client = Client()
    response = client.post("/newco/", {"login_id": "boss@newco.example", "password": password})
    assert response["Location"] == "/newco/password/"


@pytest.mark.parametrize(
    ("slug", "message"),
    [("Bad Slug", "cannot be an organisation ID"), ("static", "cannot be an organisation ID"), ("acme", "is taken")],
)
def test_org_create_refuses_bad_or_taken_slugs_and_changes_nothing(org, slug, message):
    before = Organization.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("org_create", slug, "--name", "X", "--admin-email", "x@example.com", stdout=StringIO())
    assert Organization.objects.count() == before


def test_org_create_refuses_a_bad_email(db):
    with pytest.raises(CommandError, match="not a valid e-mail"):
        call_command("org_create", "okslug", "--name", "X", "--admin-email", "nope", stdout=StringIO())
    assert not Organization.objects.filter(slug="okslug").exists()


def test_built_in_demo_directory_is_idempotent(db):
    from directory.services import demo_seed

    demo_seed(password="demo-password-123")
    demo_seed(password="demo-password-123")
    demo = Organization.objects.get(slug="demo")
    assert demo.departments.count() == 5 and demo.people.count() == 7
    assert User.objects.get(organization=demo, login_id="takahashi").search_text  # searchable


def test_demo_seed_imports_the_sample_files_and_signs_in(db):
    from tests.services import shared_fixtures

    shared_fixtures("directory")  # demo_seed reads them from ../shared
    out = StringIO()
    call_command("demo_seed", stdout=out)
    call_command("demo_seed", stdout=StringIO())
    password = re.search(r"password: (\S+)", out.getvalue()).group(1)
    demo = Organization.objects.get(slug="demo")
    assert demo.departments.count() == 12 and demo.people.count() == 61
    kimura = User.objects.get(organization=demo, login_id="yuma.kimura@example.co.jp")
    assert kimura.must_change_password and kimura.roles == {Role.SYSTEM_ADMIN}
    admin = User.objects.get(organization=demo, login_id="admin")
    assert set(Role) == admin.roles
    assert Client().post("/demo/", {"login_id": "admin", "password": password})["Location"] == "/demo/home/"


def test_root_page_goes_to_an_organisation_by_id(org):
    client = Client()
    assert client.post("/", {"slug": " ACME "})["Location"] == "/acme/"
    response = client.post("/", {"slug": "nobody"})
    assert response.status_code == 200 and "nobody" in response.content.decode()


def test_root_page_emails_sign_in_urls_to_a_known_address_only(
    org, other_org, smtp_server, django_capture_on_commit_callbacks
):
    factories.person(org, "a", email="shared@example.com")
    factories.person(other_org, "b", email="other@example.com").__class__.objects.filter(login_id="b").update(
        email2="shared@example.com"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = Client().post("/", {"email": "shared@example.com"})
    assert response.status_code == 200
    bodies = [m.get_body(("plain",)).get_content() for m in smtp_server.messages]
    assert len(bodies) == 2 and all(m["To"] == "shared@example.com" for m in smtp_server.messages)
    assert any("/acme/" in b for b in bodies) and any("/globex/" in b for b in bodies)
    assert len(smtp_server.sessions) == 1  # one SMTP connection for the batch
    with django_capture_on_commit_callbacks(execute=True):
        same_page = Client().post("/", {"email": "unknown@example.com"})
    assert len(smtp_server.messages) == 2
    assert same_page.content.decode().count("そのアドレスが登録されていれば") == 1


def test_notice_api_validates_and_publishes_after_commit(
    org, admin_client, employee, capture_events, django_capture_on_commit_callbacks
):
    bad = admin_client.post("/acme/api/notices/", {"title": ""}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    with django_capture_on_commit_callbacks(execute=True):
        ok = admin_client.post(
            "/acme/api/notices/", {"title": "訓練のお知らせ", "body": "明日 10 時"}, content_type="application/json"
        )
    assert ok.status_code == 201
    (event,) = capture_events.of_type("notice.posted")
    assert event.stream == f"org.{org.id}" and event.seq == 1 and event.data["title"] == "訓練のお知らせ"
    assert event.push["user_ids"] == [employee.id]  # everyone but the author
    employee_client = Client()
    employee_client.force_login(employee, backend="directory.auth.OrganisationLoginBackend")
    assert (
        employee_client.post("/acme/api/notices/", {"title": "x"}, content_type="application/json").status_code == 403
    )


def test_sign_in_url_mail_is_throttled_per_address(org, django_capture_on_commit_callbacks):
    from django.core import mail
    from django.core.cache import cache

    cache.clear()
    factories.person(org, "a", email="flood@example.com")
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            assert Client().post("/", {"email": "flood@example.com"}).status_code == 200
    assert len(mail.outbox) == 3
