"""The directory over REST and the command line: search, cards, one-by-one management, import jobs,
export, the organisation's phone link scheme, and Django admin for site operators."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from config.errors import ApplicationError
from directory.models import Department, ImportJob, Organization, Role, User
from directory.services import phone_scheme_validate
from tests import factories
from tests.conftest import signed_in
from tests.services import ROOT, shared_fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture
def samples() -> Path:
    return shared_fixtures("directory")


def upload(name: str, path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="text/tab-separated-values")


def test_search_finds_people_by_kana_in_hiragana_name_phone_and_email(org, employee_client):
    sales = factories.department(org, "SALES")
    sales.name = "営業部"
    sales.save()
    person = factories.person(org, "tanaka", department=sales)
    User.objects.filter(id=person.id).update(last_name="田中", last_name_kana="タナカ", phone_number="03-1111-2222")
    from directory.importer import refresh_search_text

    refresh_search_text(organization=org)
    for query in ("たなか", "ﾀﾅｶ", "田中", "営業", "0311112222", "03-1111-2222", "tanaka@example"):
        names = [p["name"] for p in employee_client.get("/acme/api/directory/people/", {"q": query}).json()["results"]]
        assert any(n.startswith("田中") for n in names), query
    assert employee_client.get("/acme/api/directory/people/", {"q": "存在しない"}).json()["results"] == []


def test_card_phone_links_follow_the_organisation_scheme(org, admin_client, employee):
    User.objects.filter(id=employee.id).update(phone_number="03-1234-5678")
    card = admin_client.get(f"/acme/api/directory/people/{employee.id}/").json()
    assert card["phones"][0]["href"] == "tel:0312345678"
    assert card["safety_answer"] is None  # no incident open
    response = admin_client.patch(
        "/acme/api/organization/", {"phone_url_scheme": "com050voipbiz://keypad?tel="}, content_type="application/json"
    )
    assert response.status_code == 200
    card = admin_client.get(f"/acme/api/directory/people/{employee.id}/").json()
    assert card["phones"][0]["href"] == "com050voipbiz://keypad?tel=0312345678"
    refused = admin_client.patch(
        "/acme/api/organization/", {"phone_url_scheme": "javascript:alert(1)//"}, content_type="application/json"
    )
    assert refused.status_code == 400 and refused.json()["code"] == "bad_phone_scheme"
    org.refresh_from_db()
    assert org.phone_url_scheme == "com050voipbiz://keypad?tel="


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("tel:", True),
        ("sip:", True),
        ("com050voipbiz://keypad?tel=", True),
        ("javascript:", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,", False),
        ("vbscript:", False),
        ("https://evil.example/?n=", False),
        ("tel: ", True),  # trimmed
        ("te l:", False),
        ('tel:"><script>', False),
        ("", False),
    ],
)
def test_phone_scheme_validation(value, ok):
    if ok:
        assert phone_scheme_validate(value) == value.strip()
    else:
        with pytest.raises(ApplicationError):
            phone_scheme_validate(value)


def test_people_of_other_organisations_are_not_found(org, other_org, employee_client):
    outsider = factories.person(other_org, "x")
    assert employee_client.get(f"/acme/api/directory/people/{outsider.id}/").status_code == 404
    dept = factories.department(other_org)
    assert employee_client.get(f"/acme/api/directory/departments/{dept.id}/").status_code == 404
    assert employee_client.get("/acme/api/directory/people/", {"department": dept.id}).status_code == 404


def test_only_system_admins_manage_people_and_safety_admins_set_only_anpi_ids(org, admin_client, employee):
    anpi_admin = factories.person(org, "anpi", roles=(Role.ADMIN_ANPI,))
    anpi_client = signed_in(anpi_admin)
    url = f"/acme/api/directory/people/{employee.id}/"
    assert anpi_client.patch(url, {"anpi_login_id": "a001"}, content_type="application/json").status_code == 200
    assert anpi_client.patch(url, {"last_name": "X"}, content_type="application/json").status_code == 403
    employee_client = signed_in(employee)
    assert employee_client.patch(url, {"last_name": "X"}, content_type="application/json").status_code == 403
    response = admin_client.patch(url, {"last_name": "改名", "roles": ["MANAGER"]}, content_type="application/json")
    assert response.status_code == 200 and response.json()["roles"] == ["MANAGER"]


def test_person_create_validates_fields_and_licence(org, admin_client):
    bad = admin_client.post(
        "/acme/api/directory/people/",
        {"login_id": "new", "password": "Init-1234", "last_name": "新", "email": "nope", "region_code": "99"},
        content_type="application/json",
    )
    assert bad.status_code == 400 and set(bad.json()["details"]) == {"email", "region_code"}
    Organization.objects.filter(id=org.id).update(max_people=1)  # the admin already uses it
    full = admin_client.post(
        "/acme/api/directory/people/",
        {"login_id": "new", "password": "Init-1234", "last_name": "新"},
        content_type="application/json",
    )
    assert full.status_code == 400 and full.json()["code"] == "licence_limit" and "1" in full.json()["message"]
    assert not User.objects.filter(login_id="new").exists()


def test_deactivate_keeps_the_person_and_refuses_yourself(org, admin, admin_client, employee):
    response = admin_client.post(
        f"/acme/api/directory/people/{employee.id}/active/", {"active": False}, content_type="application/json"
    )
    assert response.status_code == 200 and not response.json()["is_active"]
    assert User.objects.filter(id=employee.id, is_active=False).exists()
    me = admin_client.post(
        f"/acme/api/directory/people/{admin.id}/active/", {"active": False}, content_type="application/json"
    )
    assert me.status_code == 400 and me.json()["code"] == "self_deactivation"


def test_departments_cannot_be_moved_inside_themselves_or_deleted_while_in_use(org, admin_client, employee):
    top = admin_client.post(
        "/acme/api/directory/departments/", {"code": "T", "name": "上"}, content_type="application/json"
    )
    top_id = top.json()["id"]
    child = admin_client.post(
        "/acme/api/directory/departments/",
        {"code": "C", "name": "下", "parent_id": top_id},
        content_type="application/json",
    ).json()
    loop = admin_client.patch(
        f"/acme/api/directory/departments/{top_id}/", {"parent_id": child["id"]}, content_type="application/json"
    )
    assert loop.status_code == 400 and "parent_id" in loop.json()["details"]
    assert admin_client.delete(f"/acme/api/directory/departments/{top_id}/").status_code == 400
    User.objects.filter(id=employee.id).update(department_id=child["id"])
    assert admin_client.delete(f"/acme/api/directory/departments/{child['id']}/").status_code == 400
    tree = admin_client.get("/acme/api/directory/departments/").json()["tree"]
    assert tree[0]["code"] == "T" and tree[0]["children"][0]["people"] == 1


def test_import_job_previews_then_applies_with_live_progress(
    org, admin, admin_client, samples, monkeypatch, django_capture_on_commit_callbacks
):
    from consumers import publisher

    progress: list[dict] = []
    monkeypatch.setattr(
        "directory.import_jobs.publish_now", lambda group, event, data: progress.append({"group": group, **data})
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/acme/api/directory/imports/",
            {
                "departments": upload("d", samples / "Sample_export_department_data_20261121090000.tsv"),
                "users": upload("u", samples / "excel_unicode_text_utf16_export_user_data.tsv"),
            },
        )
    assert response.status_code == 202
    job_id = response.json()["id"]
    job = admin_client.get(f"/acme/api/directory/imports/{job_id}/").json()
    assert job["status"] == "previewed" and job["preview"]["users"]["created"] == 60
    assert job["preview"]["departments"]["created"] == 12
    assert User.objects.filter(organization=org).count() == 1  # nothing applied by the preview
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(f"/acme/api/directory/imports/{job_id}/").status_code == 202
    job = admin_client.get(f"/acme/api/directory/imports/{job_id}/").json()
    assert job["status"] == "applied" and job["result"]["users"]["created"] == 60
    assert User.objects.filter(organization=org).count() == 61
    assert ImportJob.objects.get(id=job_id).users_file is None  # the initial passwords are not kept
    assert {p["group"] for p in progress} == {f"user.{admin.id}"}
    assert progress[-1]["percent"] == 100 and all(0 <= p["percent"] <= 100 for p in progress)
    del publisher
    again = admin_client.post(f"/acme/api/directory/imports/{job_id}/")
    assert again.status_code == 409


def test_import_job_with_faults_reports_them_and_cannot_be_applied(
    org, admin_client, samples, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = admin_client.post(
            "/acme/api/directory/imports/",
            {
                "departments": upload("d", samples / "Sample_export_department_data_20261121090000.tsv"),
                "users": upload("u", samples / "broken_export_user_data.tsv"),
            },
        ).json()
    job = admin_client.get(f"/acme/api/directory/imports/{job['id']}/").json()
    assert job["status"] == "invalid"
    where = {(e["line"], e["column"]) for e in job["errors"]}
    assert {(4, "DEPARTMENT_CODE"), (5, "Email 1"), (9, None), (11, "REGION_CODE")} <= where
    assert admin_client.post(f"/acme/api/directory/imports/{job['id']}/").status_code == 409
    assert not Department.objects.filter(organization=org).exists()


def test_import_upload_errors_are_clear(org, admin_client, employee_client, monkeypatch):
    assert admin_client.post("/acme/api/directory/imports/", {}).json()["code"] == "no_file"
    monkeypatch.setattr("directory.import_jobs.MAX_FILE_BYTES", 10)
    big = admin_client.post("/acme/api/directory/imports/", {"users": SimpleUploadedFile("u.tsv", b"x" * 11)})
    assert big.status_code == 400 and big.json()["code"] == "file_too_large"
    assert employee_client.post("/acme/api/directory/imports/", {}).status_code == 403
    assert admin_client.get("/acme/api/directory/imports/999999/").status_code == 404


def test_export_downloads_both_files_named_as_excel_users_expect(org, admin_client, employee_client, employee):
    for kind, prefix in (("departments", "export_department_data_"), ("users", "export_user_data_")):
        response = admin_client.get(f"/acme/api/directory/export/{kind}.tsv")
        assert response.status_code == 200
        assert f'filename="{prefix}' in response["Content-Disposition"]
        assert response.content.startswith(b"\xef\xbb\xbf")
    users = admin_client.get("/acme/api/directory/export/users.tsv").content.decode("utf-8-sig")
    assert employee.login_id in users and factories.PASSWORD not in users
    assert employee_client.get("/acme/api/directory/export/users.tsv").status_code == 403


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    from tests.services import subprocess_env

    env = subprocess_env()
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_directory_commands_print_json_and_exit_by_outcome(samples, tmp_path):
    Organization.objects.create(slug="hr", name="HR feed")
    dry = run_command(
        "directory_import",
        "--org",
        "hr",
        "--departments",
        str(samples / "Sample_export_department_data_20261121090000.tsv"),
        "--users",
        str(samples / "Sample_export_user_data_20261121090000.tsv"),
        "--dry-run",
        "--json",
    )
    report = json.loads(dry.stdout)
    assert dry.returncode == 0 and report["applied"] is False and report["users"]["created"] == 60
    assert set(report) >= {"applied", "departments", "users", "errors"}
    assert User.objects.filter(organization__slug="hr").count() == 0
    done = run_command(
        "directory_import",
        "--org",
        "hr",
        "--departments",
        str(samples / "Sample_export_department_data_20261121090000.tsv"),
        "--users",
        str(samples / "Sample_export_user_data_20261121090000.tsv"),
        "--json",
    )
    assert done.returncode == 0 and json.loads(done.stdout)["applied"] is True
    broken = run_command(
        "directory_import", "--org", "hr", "--users", str(samples / "broken_export_user_data.tsv"), "--json"
    )
    report = json.loads(broken.stdout)
    assert broken.returncode == 1 and report["applied"] is False
    error = report["errors"][0]
    assert set(error) == {"file", "line", "column", "code", "message"} and error["file"] == "users"
    out = run_command("directory_export", "--org", "hr", "--out", str(tmp_path))
    assert out.returncode == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0].startswith("export_department_data_") and names[1].startswith("export_user_data_")
    again = run_command(
        "directory_import",
        "--org",
        "hr",
        "--departments",
        str(tmp_path / names[0]),
        "--users",
        str(tmp_path / names[1]),
        "--json",
    )
    report = json.loads(again.stdout)
    assert report["users"] == {"created": 0, "updated": 0, "unchanged": 60, "deactivated": 0}
    missing = run_command("directory_import", "--org", "nope", "--users", str(tmp_path / names[1]))
    assert missing.returncode != 0 and "No organisation" in missing.stderr


def test_site_operators_use_django_admin_and_others_cannot(org, admin):
    client = signed_in(admin)
    assert client.get("/admin/").status_code == 302  # an organisation's system administrator is not an operator
    from io import StringIO

    from django.core.management import call_command

    call_command("operator_grant", admin.login_id, "--org", "acme", stdout=StringIO())
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/directory/user/").status_code == 200
    assert Client().get("/admin/")["Location"].startswith("/")
