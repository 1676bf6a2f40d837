"""Directory import and export: the real sample files, the broken file, file-level faults, round trips,
licence limits, full sync, passwords and the normalisations Excel makes necessary.

Calls the services `import_plan` / `import_apply` and the exporter directly; the Celery task and the REST API
that wrap them have tests of their own."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.test import RequestFactory

from directory import tsv
from directory.exporter import departments_export, export_filenames, users_export
from directory.importer import import_apply, import_plan
from directory.models import Department, Organization, Role, RoleAssignment, User
from directory.tsv import DEPARTMENT_COLUMNS, USER_COLUMNS, parse_users
from tests import factories
from tests.services import shared_fixtures

pytestmark = pytest.mark.django_db

SAMPLE_DEPARTMENTS = "Sample_export_department_data_20261121090000.tsv"
SAMPLE_USERS = "Sample_export_user_data_20261121090000.tsv"
BOM_DEPARTMENTS = "utf8_bom_export_department_data.tsv"
CP932_USERS = "excel_text_cp932_export_user_data.tsv"
UTF16_USERS = "excel_unicode_text_utf16_export_user_data.tsv"
BROKEN_USERS = "broken_export_user_data.tsv"


@pytest.fixture(scope="session")
def samples() -> Path:
    """The shared sample files (../shared/fixtures/directory from the repository root)."""
    return shared_fixtures("directory")


def read(samples: Path, name: str) -> bytes:
    return (samples / name).read_bytes()


# --- Helpers --------------------------------------------------------------------------------------------


def dump(organization: Organization, *, passwords: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Everything an import writes, in a canonical order; password hashes only on request (salts differ)."""
    departments = sorted(
        (d.code, d.name, d.name_kana, d.parent.code if d.parent else "", d.sort_order, d.phone_number, d.email)
        for d in Department.objects.filter(organization=organization).select_related("parent")
    )
    fields = [
        "login_id",
        "last_name",
        "first_name",
        "last_name_kana",
        "first_name_kana",
        "department__code",
        "position",
        "email",
        "email2",
        "phone_number",
        "mobile_phone_number",
        "extension_number",
        "region_code",
        "talk_available",
        "anpi_login_id",
        "language",
        "is_active",
        "must_change_password",
        "search_text",
    ]
    if passwords:
        fields.append("password")
    people = sorted(User.objects.filter(organization=organization).values_list(*fields))
    roles = sorted(RoleAssignment.objects.filter(user__organization=organization).values_list("user__login_id", "role"))
    return {"departments": departments, "people": people, "roles": roles}


def faults(plan: Any) -> set[tuple[int | None, str | None, str]]:
    return {(f.line, f.column, f.code.value) for f in plan.faults}


def table(columns: Sequence[str], rows: Sequence[Mapping[str, str]], *, newline: str = "\n") -> bytes:
    """A TSV file as a spreadsheet saves it (UTF-8, no BOM, no quoting); missing cells are empty."""
    lines = ["\t".join(columns), *("\t".join(row.get(c, "") for c in columns) for row in rows)]
    return (newline.join(lines) + newline).encode("utf-8")


DEPARTMENTS = [
    {"DEPARTMENT_CODE": "HQ", "DEPARTMENT_NAME": "本社", "DEPARTMENT_NAME_KANA": "ホンシャ", "SORT_ORDER": "1"},
    {
        "DEPARTMENT_CODE": "SALES",
        "DEPARTMENT_NAME": "営業部",
        "DEPARTMENT_NAME_KANA": "エイギョウブ",
        "PARENT_DEPARTMENT_CODE": "HQ",
        "SORT_ORDER": "2",
        "PHONE_NUMBER": "03-1111-2222",
    },
]


def person(n: int, **cells: str) -> dict[str, str]:
    row = {
        "LOGIN_ID": f"p{n}@example.com",
        "PASSWORD": f"Init-{n:04d}-pass",
        "LAST_NAME": "山田",
        "FIRST_NAME": f"太郎{n}",
        "LAST_NAME_KANA": "ヤマダ",
        "FIRST_NAME_KANA": "タロウ",
        "DEPARTMENT_CODE": "SALES",
        "Email 1": f"p{n}@example.com",
        "PHONE_NUMBER": "03-1111-2222",
        "EXTENSION_NUMBER": str(1000 + n),
        "REGION_CODE": "13",
        "TALK_AVAILABLE": "1",
        "ANPI_LOGIN_ID": f"anpi{n}",
        "LANGUAGE": "ja",
    }
    row.update(cells)
    return row


def users(*rows: Mapping[str, str]) -> bytes:
    return table(USER_COLUMNS, rows)


@pytest.fixture
def company(org: Organization) -> Organization:
    """The test organisation with two departments (HQ > SALES) and nobody in it yet."""
    plan = import_apply(organization=org, departments_raw=table(DEPARTMENT_COLUMNS, DEPARTMENTS))
    assert not plan.faults, plan.report(applied=False)["errors"]
    return org


@pytest.fixture
def sample_org(org: Organization, samples: Path) -> Organization:
    """The test organisation after importing the sample department and user files."""
    plan = import_apply(
        organization=org,
        departments_raw=read(samples, SAMPLE_DEPARTMENTS),
        users_raw=read(samples, SAMPLE_USERS),
    )
    assert not plan.faults, plan.report(applied=False)["errors"]
    return org


def sample_rows(samples: Path) -> tuple[list[str], list[list[str]]]:
    header, *rows = read(samples, SAMPLE_USERS).decode("utf-8").splitlines()
    return header.split("\t"), [line.split("\t") for line in rows]


def with_rows(header: list[str], rows: Sequence[Sequence[str]]) -> bytes:
    return ("\n".join(["\t".join(header), *("\t".join(r) for r in rows)]) + "\n").encode("utf-8")


# --- The sample files -----------------------------------------------------------------------------------


def test_each_good_sample_file_imports_and_all_five_give_the_same_directory(samples):
    dumps = {}
    for departments, people in (
        (SAMPLE_DEPARTMENTS, SAMPLE_USERS),
        (BOM_DEPARTMENTS, SAMPLE_USERS),
        (SAMPLE_DEPARTMENTS, CP932_USERS),
        (SAMPLE_DEPARTMENTS, UTF16_USERS),
    ):
        organization = factories.organization()
        plan = import_apply(organization=organization, departments_raw=read(samples, departments))
        assert not plan.faults and len(plan.departments.created) == 12
        plan = import_apply(organization=organization, users_raw=read(samples, people))
        assert not plan.faults, plan.report(applied=False)["errors"]
        assert (len(plan.users.created), plan.users.updated, plan.users.unchanged) == (60, [], 0)
        dumps[(departments, people)] = dump(organization)
    first, *others = dumps.values()
    assert len(first["departments"]) == 12 and len(first["people"]) == 60 and first["roles"]
    for other in others:
        assert other == first
    tree = {d[0]: d[3] for d in first["departments"]}
    assert tree["D000"] == "" and tree["D111"] == "D110" and tree["D260"] == "D200"


def test_excel_files_reimported_over_the_utf8_import_change_nothing(sample_org, samples):
    before = dump(sample_org, passwords=True)
    for name in (CP932_USERS, UTF16_USERS):
        plan = import_apply(organization=sample_org, users_raw=read(samples, name))
        assert not plan.faults
        assert (plan.users.created, plan.users.updated, plan.users.unchanged) == ([], [], 60), name
    plan = import_apply(organization=sample_org, departments_raw=read(samples, BOM_DEPARTMENTS))
    assert (plan.departments.created, plan.departments.updated, plan.departments.unchanged) == ([], [], 12)
    assert dump(sample_org, passwords=True) == before


def test_extended_kanji_survives_cp932(org, samples):
    raw = read(samples, CP932_USERS)
    assert "髙".encode("cp932") in raw and b"\r\n" in raw  # the file really is Excel's cp932 with CRLF
    import_apply(organization=org, departments_raw=read(samples, SAMPLE_DEPARTMENTS))
    plan = import_apply(organization=org, users_raw=raw)
    assert not plan.faults
    person = User.objects.get(organization=org, login_id="yui.takahashi2@example.co.jp")
    assert (person.last_name, person.first_name, person.last_name_kana) == ("髙橋", "結衣", "タカハシ")
    assert User.objects.filter(organization=org, last_name="髙橋").count() == 2
    assert "髙橋" in person.search_text


# --- The broken file ------------------------------------------------------------------------------------

BROKEN_FAULTS = {
    (4, "DEPARTMENT_CODE", "unknown_department"),
    (5, "Email 1", "invalid_email"),
    (6, "ANPI_LOGIN_ID", "invalid_anpi_login_id"),
    (7, "PRIVILEGES", "unknown_privilege"),
    (8, "TALK_AVAILABLE", "invalid_flag"),
    (9, None, "column_count"),
    (11, "REGION_CODE", "unknown_region"),
}


@pytest.mark.parametrize("apply", [False, True], ids=["dry-run", "apply"])
def test_broken_file_changes_nothing_and_reports_each_of_its_eight_faults(org, samples, apply):
    import_apply(organization=org, departments_raw=read(samples, SAMPLE_DEPARTMENTS))
    before = dump(org, passwords=True)
    run = import_apply if apply else import_plan
    plan = run(organization=org, users_raw=read(samples, BROKEN_USERS))
    found = faults(plan)
    duplicate = {f for f in found if f[2] == "duplicate_key"}
    assert duplicate and duplicate <= {(2, "LOGIN_ID", "duplicate_key"), (3, "LOGIN_ID", "duplicate_key")}
    assert found - duplicate == BROKEN_FAULTS  # each of the other seven, and nothing on line 10 (the trap)
    report = plan.report(applied=False)
    assert report["applied"] is False
    for error in report["errors"]:
        assert error["file"] == "users" and error["message"]
    assert [e["line"] for e in report["errors"]] == sorted(e["line"] for e in report["errors"])
    assert dump(org, passwords=True) == before
    assert User.objects.filter(organization=org).count() == 0


def test_a_last_name_starting_with_equals_is_data_and_exported_as_text(company, samples):
    lines = read(samples, BROKEN_USERS).decode("utf-8").splitlines()
    formula = '=HYPERLINK("http://evil.example","x")'
    assert lines[9].split("\t")[2] == formula  # line 10 of the file
    cells = lines[9].split("\t")
    cells[6] = "SALES"
    plan = import_apply(organization=company, users_raw=("\n".join([lines[0], "\t".join(cells)]) + "\n").encode())
    assert not plan.faults, plan.report(applied=False)["errors"]
    assert User.objects.get(organization=company, login_id="ken.suzuki@example.co.jp").last_name == formula
    exported = users_export(organization=company).decode("utf-8-sig")
    cell = exported.splitlines()[1].split("\t")[2]
    assert cell == '"\'=HYPERLINK(""http://evil.example"",""x"")"'  # quoted for the tab-separated format, then '
    assert "\t=" not in exported and '\t"=' not in exported
    plan = import_apply(organization=company, users_raw=users_export(organization=company))
    assert not plan.faults and plan.users.unchanged == 1 and not plan.users.updated


# --- File-level faults: each a clear fault with a stable code, and nothing written -------------------------


def _header_without(column: str) -> bytes:
    columns = [c for c in USER_COLUMNS if c != column]
    return table(columns, [person(1)])


FILE_FAULTS = {
    "empty": (b"", None, "empty_file"),
    "only a BOM and blank lines": (b"\xef\xbb\xbf\r\n\r\n", None, "empty_file"),
    "header only": (("\t".join(USER_COLUMNS) + "\r\n").encode(), None, "empty_file"),
    "missing column": (_header_without("LAST_NAME"), "LAST_NAME", "missing_column"),
    "missing optional column": (_header_without("MOBILE_PHONE_NUMBER"), "MOBILE_PHONE_NUMBER", "missing_column"),
    "unknown column": (
        table([*USER_COLUMNS, "NICKNAME"], [{**person(1), "NICKNAME": "x"}]),
        "NICKNAME",
        "unknown_column",
    ),
    "duplicate column": (table([*USER_COLUMNS, "POSITION"], [person(1)]), "POSITION", "duplicate_column"),
    "png image": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)), None, "not_text"),
    "zip archive": (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(200), None, "not_text"),
    "utf-16 cut in half": (b"\xff\xfeL\x00O\x00G", None, "not_text"),
    "a NUL far down": (users(*(person(n) for n in range(1, 60))) + b"\x00\n", None, "not_text"),
    "a department file": (table(DEPARTMENT_COLUMNS, DEPARTMENTS), "LOGIN_ID", "missing_column"),
}


@pytest.mark.parametrize("case", FILE_FAULTS, ids=list(FILE_FAULTS))
def test_a_file_that_is_not_a_user_table_is_a_clear_fault_and_nothing_is_written(company, case):
    raw, column, code = FILE_FAULTS[case]
    before = dump(company, passwords=True)
    plan = import_apply(organization=company, users_raw=raw)
    assert (column, code) in {(f.column, f.code.value) for f in plan.faults}, plan.faults
    assert all(f.message for f in plan.faults)
    assert code in {e["code"] for e in plan.report(applied=False)["errors"]}
    assert dump(company, passwords=True) == before


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(company, monkeypatch):
    monkeypatch.setattr(tsv, "MAX_FILE_BYTES", 1000)
    raw = users(*(person(n) for n in range(1, 20)))
    assert len(raw) > 1000
    plan = import_apply(organization=company, users_raw=raw)
    assert faults(plan) == {(None, None, "file_too_large")}
    assert "1000 bytes" in plan.faults[0].message
    assert not User.objects.filter(organization=company).exists()


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [("A", "B"), ("B", "A")],
            {(2, "PARENT_DEPARTMENT_CODE", "department_cycle"), (3, "PARENT_DEPARTMENT_CODE", "department_cycle")},
        ),
        ([("A", "A")], {(2, "PARENT_DEPARTMENT_CODE", "department_cycle")}),
        ([("A", ""), ("B", "ZZZ")], {(3, "PARENT_DEPARTMENT_CODE", "unknown_parent")}),
        ([("A", ""), ("A", "")], {(2, "DEPARTMENT_CODE", "duplicate_key"), (3, "DEPARTMENT_CODE", "duplicate_key")}),
    ],
    ids=["A-B-A", "self-parent", "unknown-parent", "duplicate-code"],
)
def test_department_tree_faults_write_nothing(org, rows, expected):
    raw = table(
        DEPARTMENT_COLUMNS,
        [{"DEPARTMENT_CODE": c, "DEPARTMENT_NAME": c, "PARENT_DEPARTMENT_CODE": p} for c, p in rows],
    )
    plan = import_apply(organization=org, departments_raw=raw)
    assert faults(plan) == expected
    assert not Department.objects.filter(organization=org).exists()


def test_a_cycle_through_a_department_already_in_the_organisation_is_found(company):
    # SALES is under HQ in the organisation; the file puts HQ under SALES without mentioning SALES.
    raw = table(
        DEPARTMENT_COLUMNS, [{"DEPARTMENT_CODE": "HQ", "DEPARTMENT_NAME": "本社", "PARENT_DEPARTMENT_CODE": "SALES"}]
    )
    before = dump(company)
    plan = import_apply(organization=company, departments_raw=raw)
    assert (2, "PARENT_DEPARTMENT_CODE", "department_cycle") in faults(plan)
    assert dump(company) == before


def test_department_cells_are_checked(org):
    raw = table(
        DEPARTMENT_COLUMNS,
        [
            {"DEPARTMENT_CODE": "A", "DEPARTMENT_NAME": "", "SORT_ORDER": "x"},
            {"DEPARTMENT_CODE": "B" * 65, "DEPARTMENT_NAME": "B", "SORT_ORDER": "99999999999", "EMAIL": "nope"},
            {"DEPARTMENT_CODE": "C", "DEPARTMENT_NAME": "C", "DEPARTMENT_NAME_KANA": "ABC", "PHONE_NUMBER": "call me"},
        ],
    )
    plan = import_apply(organization=org, departments_raw=raw)
    assert faults(plan) == {
        (2, "DEPARTMENT_NAME", "required"),
        (2, "SORT_ORDER", "invalid_integer"),
        (3, "DEPARTMENT_CODE", "too_long"),
        (3, "SORT_ORDER", "invalid_integer"),  # beyond the database's integer
        (3, "EMAIL", "invalid_email"),
        (4, "DEPARTMENT_NAME_KANA", "invalid_kana"),
        (4, "PHONE_NUMBER", "invalid_phone"),
    }
    assert not Department.objects.filter(organization=org).exists()


def test_a_file_of_many_bad_rows_reports_the_first_thousand_and_counts_the_rest(company):
    raw = table(
        DEPARTMENT_COLUMNS,
        [{"DEPARTMENT_CODE": f"D{n}", "DEPARTMENT_NAME": "", "SORT_ORDER": "x"} for n in range(1200)],
    )
    before = dump(company)
    plan = import_apply(organization=company, departments_raw=raw)
    assert len(plan.faults) == 2400  # a missing name and a bad sort order on every row
    errors = plan.report(applied=False)["errors"]
    assert len(errors) == 1001
    assert errors[0]["line"] == 2
    assert errors[-1]["code"] == "too_many_errors"
    assert "1400 more errors (2400 in all)" in errors[-1]["message"]
    assert dump(company) == before


def test_user_cells_are_checked_after_normalising(company):
    plan = import_apply(
        organization=company,
        users_raw=users(
            person(1, EXTENSION_NUMBER="1" * 21),  # the column holds 20
            person(2, PHONE_NUMBER="⑴" * 11),  # NFKC makes it "(1)" * 11: 33 characters
            person(3, LAST_NAME_KANA="㌀" * 30),  # NFKC makes each "アパート": 120 characters
            person(4, LOGIN_ID="has space@example.com"),
            person(5, LANGUAGE="fr", LAST_NAME=""),
            person(6, PASSWORD=""),
            person(7, **{"Email 2": "x@"}),
        ),
    )
    assert faults(plan) == {
        (2, "EXTENSION_NUMBER", "too_long"),
        (3, "PHONE_NUMBER", "too_long"),
        (4, "LAST_NAME_KANA", "too_long"),
        (5, "LOGIN_ID", "invalid_login_id"),
        (6, "LANGUAGE", "unknown_language"),
        (6, "LAST_NAME", "required"),
        (7, "PASSWORD", "password_required"),
        (8, "Email 2", "invalid_email"),
    }
    assert not User.objects.filter(organization=company).exists()


def test_a_quoted_cell_over_several_lines_is_reported_on_the_line_it_starts(company):
    raw = (
        "\t".join(USER_COLUMNS)
        + "\n"
        + "\t".join(person(1).get(c, "") for c in USER_COLUMNS).replace("山田", '"山\n田"')
        + "\n"
        + "\t".join(person(2, TALK_AVAILABLE="yes").get(c, "") for c in USER_COLUMNS)
        + "\n"
    ).encode()
    plan = import_plan(organization=company, users_raw=raw)
    assert faults(plan) == {(4, "TALK_AVAILABLE", "invalid_flag")}


# --- Round trip and export ------------------------------------------------------------------------------


def test_round_trip_export_then_import_changes_nothing(sample_org, samples):
    before = dump(sample_org, passwords=True)
    departments_raw = departments_export(organization=sample_org)
    users_raw = users_export(organization=sample_org)
    assert departments_raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in users_raw  # what Excel opens correctly
    plan = import_apply(organization=sample_org, departments_raw=departments_raw, users_raw=users_raw)
    assert not plan.faults
    report = plan.report(applied=True)
    assert report["departments"] == {"created": 0, "updated": 0, "unchanged": 12, "removed": 0}
    assert report["users"] == {"created": 0, "updated": 0, "unchanged": 60, "deactivated": 0}
    assert dump(sample_org, passwords=True) == before
    # The same with a full sync: everyone is in the export, so nobody leaves.
    plan = import_plan(organization=sample_org, departments_raw=departments_raw, users_raw=users_raw, full_sync=True)
    assert not plan.faults and not plan.users.removed and not plan.departments.removed


def test_export_file_names_follow_the_pattern():
    departments, people = export_filenames()
    assert re.fullmatch(r"export_department_data_\d{14}\.tsv", departments)
    assert re.fullmatch(r"export_user_data_\d{14}\.tsv", people)


def test_passwords_are_never_exported(sample_org, samples):
    _header, rows = sample_rows(samples)
    exported = users_export(organization=sample_org)
    for row in rows:
        assert row[1].startswith("Init-") and row[1].encode() not in exported
    parsed = parse_users(exported)
    assert len(parsed.users) == 60 and {u.password for u in parsed.users} == {""}
    assert b"initial_sha256" not in exported and b"pbkdf2" not in exported


def test_formula_looking_cells_are_exported_as_text_and_reimport_to_the_original(company):
    tricky = person(
        1,
        LAST_NAME="=1+1",
        FIRST_NAME="@x",
        POSITION="-x",
        PHONE_NUMBER="+81-3-1234-5678",
        EXTENSION_NUMBER="-12",
    )
    plan = import_apply(organization=company, users_raw=users(tricky, person(2, LAST_NAME="''=already quoted")))
    assert not plan.faults, plan.report(applied=False)["errors"]
    before = dump(company, passwords=True)
    exported = users_export(organization=company).decode("utf-8-sig")
    cells = {cell for line in exported.splitlines()[1:] for cell in line.split("\t")}
    for value in ("=1+1", "@x", "-x", "+81-3-1234-5678", "-12", "'=already quoted"):
        assert "'" + value in cells
        assert value not in cells
    plan = import_apply(organization=company, users_raw=exported.encode("utf-8-sig"))
    assert not plan.faults and plan.users.unchanged == 2
    assert dump(company, passwords=True) == before
    person_1 = User.objects.get(organization=company, login_id="p1@example.com")
    assert (person_1.last_name, person_1.first_name, person_1.position) == ("=1+1", "@x", "-x")
    assert person_1.phone_number == "+81-3-1234-5678"


def test_negative_sort_order_survives_the_formula_guard(org):
    raw = table(DEPARTMENT_COLUMNS, [{"DEPARTMENT_CODE": "A", "DEPARTMENT_NAME": "A", "SORT_ORDER": "-5"}])
    assert not import_apply(organization=org, departments_raw=raw).faults
    exported = departments_export(organization=org)
    assert b"\t'-5\t" in exported
    plan = import_apply(organization=org, departments_raw=exported)
    assert not plan.faults and plan.departments.unchanged == 1
    assert Department.objects.get(organization=org, code="A").sort_order == -5


# --- Licence limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "value", "message"),
    [
        ("max_people", 59, "The import would make 60 people; the licence allows 59."),
        ("max_talk_users", 56, "The import would make 57 talk users; the licence allows 56."),
        ("max_safety_users", 55, "The import would make 56 safety-confirmation users; the licence allows 55."),
    ],
)
def test_an_import_over_a_licence_limit_is_refused_with_the_numbers(org, samples, limit, value, message):
    import_apply(organization=org, departments_raw=read(samples, SAMPLE_DEPARTMENTS))
    setattr(org, limit, value)
    org.save()
    before = dump(org, passwords=True)
    plan = import_apply(organization=org, users_raw=read(samples, SAMPLE_USERS))
    assert [(f.code.value, f.message) for f in plan.faults] == [("licence_limit", message)]
    assert dump(org, passwords=True) == before
    assert not User.objects.filter(organization=org).exists()


def test_people_without_a_safety_id_do_not_count_against_the_safety_licence(org, samples):
    import_apply(organization=org, departments_raw=read(samples, SAMPLE_DEPARTMENTS))
    org.max_safety_users = 56  # 60 people, 4 of them without ANPI_LOGIN_ID
    org.save()
    plan = import_apply(organization=org, users_raw=read(samples, SAMPLE_USERS))
    assert not plan.faults
    assert plan.report(applied=True)["licence"]["safety_users"] == {"after": 56, "limit": 56}
    assert User.objects.filter(organization=org, anpi_login_id__isnull=True).count() == 4
    assert User.objects.filter(organization=org).count() == 60


def test_licence_counts_people_already_in_the_organisation(company):
    company.max_people = 3
    company.save()
    assert not import_apply(organization=company, users_raw=users(person(1), person(2))).faults
    plan = import_apply(organization=company, users_raw=users(person(3), person(4)))
    assert [f.message for f in plan.faults] == ["The import would make 4 people; the licence allows 3."]
    # A full sync that lets two leave makes room.
    assert not import_apply(organization=company, users_raw=users(person(3), person(4)), full_sync=True).faults


# --- Full sync ------------------------------------------------------------------------------------------


def _without(samples: Path, logins: set[str]) -> bytes:
    header, rows = sample_rows(samples)
    return with_rows(header, [r for r in rows if r[0] not in logins])


LEAVERS = {"ken.kato@example.co.jp", "aoi.ito@example.co.jp", "rin.ito@example.co.jp"}


def test_full_sync_lists_then_deactivates_people_missing_from_the_file_and_never_deletes_them(sample_org, samples):
    actor = User.objects.get(organization=sample_org, login_id="yuma.kimura@example.co.jp")
    raw = _without(samples, LEAVERS)
    preview = import_plan(organization=sample_org, users_raw=raw, full_sync=True, actor=actor)
    report = preview.report(applied=False)
    assert report["users"]["deactivated"] == 3
    assert report["lists"]["users"]["deactivated"] == sorted(LEAVERS)
    assert User.objects.filter(organization=sample_org, is_active=False).count() == 0  # a preview writes nothing
    plan = import_apply(organization=sample_org, users_raw=raw, full_sync=True, actor=actor)
    assert not plan.faults and plan.users.unchanged == 57
    assert User.objects.filter(organization=sample_org).count() == 60  # still there, with their history
    assert set(User.objects.filter(organization=sample_org, is_active=False).values_list("login_id", flat=True)) == (
        LEAVERS
    )
    # They come back by being in the file again.
    plan = import_apply(organization=sample_org, users_raw=read(samples, SAMPLE_USERS))
    assert sorted(plan.users.updated) == sorted(LEAVERS)
    assert not User.objects.filter(organization=sample_org, is_active=False).exists()


def test_without_full_sync_nobody_is_deactivated(sample_org, samples):
    plan = import_apply(organization=sample_org, users_raw=_without(samples, LEAVERS))
    assert not plan.faults and plan.report(applied=True)["users"]["deactivated"] == 0
    assert not User.objects.filter(organization=sample_org, is_active=False).exists()


def test_full_sync_refuses_to_deactivate_the_acting_administrator(sample_org, samples):
    admin = factories.person(sample_org, "admin@example.co.jp", roles=(Role.SYSTEM_ADMIN,))
    before = dump(sample_org, passwords=True)
    plan = import_apply(organization=sample_org, users_raw=read(samples, SAMPLE_USERS), full_sync=True, actor=admin)
    assert faults(plan) == {(None, "LOGIN_ID", "self_deactivation")}
    assert dump(sample_org, passwords=True) == before
    assert User.objects.get(pk=admin.pk).is_active


def test_full_sync_of_departments_removes_those_missing_and_keeps_their_people(company):
    import_apply(organization=company, users_raw=users(person(1)))
    raw = table(DEPARTMENT_COLUMNS, DEPARTMENTS[:1])
    plan = import_plan(organization=company, departments_raw=raw, full_sync=True)
    assert plan.report(applied=False)["lists"]["departments"]["removed"] == ["SALES"]
    assert not import_apply(organization=company, departments_raw=raw, full_sync=True).faults
    assert list(Department.objects.filter(organization=company).values_list("code", flat=True)) == ["HQ"]
    moved = User.objects.get(organization=company, login_id="p1@example.com")
    assert moved.department is None and "営業部" not in moved.search_text


# --- Re-import: updates, ANPI_LOGIN_ID moves, passwords ---------------------------------------------------


def test_reimport_with_a_changed_field_reports_it_as_updated_and_applies_it(sample_org, samples):
    header, rows = sample_rows(samples)
    position, mobile = header.index("POSITION"), header.index("MOBILE_PHONE_NUMBER")
    rows[4][position] = "部長代理"
    rows[4][mobile] = "080-0000-1111"
    for row in rows:
        row[1] = ""  # PASSWORD empty: unchanged
    plan = import_apply(organization=sample_org, users_raw=with_rows(header, rows))
    assert not plan.faults
    assert (plan.users.updated, plan.users.unchanged) == ([rows[4][0]], 59)
    changed = User.objects.get(organization=sample_org, login_id=rows[4][0])
    assert (changed.position, changed.mobile_phone_number) == ("部長代理", "080-0000-1111")
    assert "部長代理" in changed.search_text and "08000001111" in changed.search_text


def test_a_changed_role_is_reported_and_applied(sample_org, samples):
    header, rows = sample_rows(samples)
    privileges = header.index("PRIVILEGES")
    assert rows[0][privileges] == "SYSTEM_ADMIN"
    rows[0][privileges] = "SYSTEM_ADMIN、CRISIS_MANAGER"  # a Japanese comma, as people type it
    rows[1][privileges] = ""
    plan = import_apply(organization=sample_org, users_raw=with_rows(header, rows))
    assert sorted(plan.users.updated) == sorted([rows[0][0], rows[1][0]])
    first = User.objects.get(organization=sample_org, login_id=rows[0][0])
    second = User.objects.get(organization=sample_org, login_id=rows[1][0])
    assert first.roles == {Role.SYSTEM_ADMIN, Role.CRISIS_MANAGER} and second.roles == frozenset()


def test_safety_ids_swapped_between_two_people_in_one_file_apply(sample_org, samples):
    header, rows = sample_rows(samples)
    anpi = header.index("ANPI_LOGIN_ID")
    a, b, c = rows[0], rows[1], rows[2]
    assert (a[anpi], b[anpi], c[anpi]) == ("anpi0001", "anpi0002", "anpi0003")
    a[anpi], b[anpi], c[anpi] = "anpi0002", "anpi0003", "anpi0001"  # a rotation of three
    new = person(99, ANPI_LOGIN_ID="anpi0004", DEPARTMENT_CODE="D200")
    rows[3][anpi] = ""  # ...and the fourth person's ID moves to someone new
    plan = import_apply(organization=sample_org, users_raw=with_rows(header, [*rows, [new.get(h, "") for h in header]]))
    assert not plan.faults, plan.report(applied=False)["errors"]
    ids = dict(User.objects.filter(organization=sample_org).values_list("login_id", "anpi_login_id"))
    assert (ids[a[0]], ids[b[0]], ids[c[0]], ids[rows[3][0]]) == ("anpi0002", "anpi0003", "anpi0001", None)
    assert ids["p99@example.com"] == "anpi0004"


def test_a_safety_id_held_by_someone_outside_the_file_is_a_fault(sample_org):
    plan = import_apply(
        organization=sample_org, users_raw=users(person(1, ANPI_LOGIN_ID="anpi0001", DEPARTMENT_CODE="D200"))
    )
    assert faults(plan) == {(2, "ANPI_LOGIN_ID", "anpi_login_id_taken")}
    assert "yuma.kimura@example.co.jp" in plan.faults[0].message


def _sign_in(organization: Organization, login_id: str, password: str) -> User | None:
    # django-axes sits first in AUTHENTICATION_BACKENDS and needs a request.
    request = RequestFactory().post(f"/{organization.slug}/")
    return authenticate(request, org_slug=organization.slug, login_id=login_id, password=password)


def test_the_initial_password_signs_in_and_the_first_sign_in_replaces_the_cheap_hash(sample_org, samples):
    _header, rows = sample_rows(samples)
    login, password = rows[0][0], rows[0][1]
    someone = User.objects.get(organization=sample_org, login_id=login)
    assert someone.password.startswith("initial_sha256$") and someone.must_change_password
    assert _sign_in(sample_org, login, "wrong password") is None
    assert _sign_in(sample_org, login, password) == someone
    someone.refresh_from_db()
    assert not someone.password.startswith("initial_sha256$")  # upgraded to the default hasher
    assert someone.must_change_password  # still has to choose their own
    assert _sign_in(sample_org, login, password) == someone
    assert _sign_in(factories.organization(), login, password) is None  # login IDs are per organisation


def test_password_cell_on_an_existing_person(sample_org, samples):
    header, rows = sample_rows(samples)
    login = rows[0][0]
    hashes = dict(User.objects.filter(organization=sample_org).values_list("login_id", "password"))
    # The same initial passwords again: unchanged, hashes untouched.
    plan = import_apply(organization=sample_org, users_raw=read(samples, SAMPLE_USERS))
    assert (plan.users.updated, plan.users.unchanged) == ([], 60)
    assert dict(User.objects.filter(organization=sample_org).values_list("login_id", "password")) == hashes
    # Someone who chose their own password keeps it when the cell is empty...
    someone = User.objects.get(organization=sample_org, login_id=login)
    someone.set_password("my-own-long-password")
    someone.must_change_password = False
    someone.save()
    rows[0][1] = ""
    plan = import_apply(organization=sample_org, users_raw=with_rows(header, rows))
    assert login not in plan.users.updated
    assert _sign_in(sample_org, login, "my-own-long-password") is not None
    # ...and a different password resets it to a new initial one.
    rows[0][1] = "Init-brand-new-1"
    plan = import_apply(organization=sample_org, users_raw=with_rows(header, rows))
    assert plan.users.updated == [login]
    someone.refresh_from_db()
    assert someone.must_change_password and someone.password.startswith("initial_sha256$")
    assert _sign_in(sample_org, login, "my-own-long-password") is None
    assert _sign_in(sample_org, login, "Init-brand-new-1") is not None


# --- Normalisation --------------------------------------------------------------------------------------


def test_excel_dropped_leading_zero_of_region_code_is_restored(company):
    plan = import_apply(
        organization=company,
        users_raw=users(person(1, REGION_CODE="1"), person(2, REGION_CODE="4"), person(3, REGION_CODE="１３")),
    )
    assert not plan.faults
    regions = dict(User.objects.filter(organization=company).values_list("login_id", "region_code"))
    assert regions == {"p1@example.com": "01", "p2@example.com": "04", "p3@example.com": "13"}
    again = import_apply(
        organization=company,
        users_raw=users(person(1, REGION_CODE="01"), person(2, REGION_CODE="04"), person(3, REGION_CODE="13")),
    )
    assert again.users.unchanged == 3
    plan = import_plan(organization=company, users_raw=users(person(1, REGION_CODE="48"), person(2, REGION_CODE="0")))
    assert faults(plan) == {(2, "REGION_CODE", "unknown_region"), (3, "REGION_CODE", "unknown_region")}


def test_hiragana_and_half_width_kana_become_katakana(company):
    plan = import_apply(
        organization=company,
        users_raw=users(
            person(1, LAST_NAME_KANA="やまだ", FIRST_NAME_KANA="ﾀﾛｳ"),
            person(2, LAST_NAME_KANA="ｶﾞｯｺｳ", FIRST_NAME_KANA="ゔぃ　ー・"),
        ),
    )
    assert not plan.faults
    kana = {u.login_id: (u.last_name_kana, u.first_name_kana) for u in User.objects.filter(organization=company)}
    assert kana == {"p1@example.com": ("ヤマダ", "タロウ"), "p2@example.com": ("ガッコウ", "ヴィ ー・")}
    assert "ヤマダタロウ" in User.objects.get(organization=company, login_id="p1@example.com").search_text
    again = import_apply(
        organization=company,
        users_raw=users(
            person(1, LAST_NAME_KANA="ヤマダ", FIRST_NAME_KANA="タロウ"),
            person(2, LAST_NAME_KANA="ガッコウ", FIRST_NAME_KANA="ヴィ ー・"),
        ),
    )
    assert again.users.unchanged == 2
    plan = import_plan(organization=company, users_raw=users(person(3, LAST_NAME_KANA="山田")))
    assert faults(plan) == {(2, "LAST_NAME_KANA", "invalid_kana")}


def test_full_width_digits_in_phones_are_normalised(company):
    plan = import_apply(organization=company, users_raw=users(person(1, PHONE_NUMBER="０３−１２３４−５６７８")))
    assert not plan.faults
    assert User.objects.get(organization=company).phone_number == "03-1234-5678"


# --- Search text and progress ---------------------------------------------------------------------------


def test_renaming_a_department_refreshes_its_peoples_search_text(company):
    import_apply(organization=company, users_raw=users(person(1), person(2)))
    renamed = [{**DEPARTMENTS[0]}, {**DEPARTMENTS[1], "DEPARTMENT_NAME": "第一営業部"}]
    plan = import_apply(organization=company, departments_raw=table(DEPARTMENT_COLUMNS, renamed))
    assert plan.departments.updated == ["SALES"]
    for text in User.objects.filter(organization=company).values_list("search_text", flat=True):
        assert "第一営業部" in text


def test_progress_is_reported_through_both_phases(company):
    company.max_people = company.max_talk_users = company.max_safety_users = 5000
    company.save()
    seen: list[tuple[str, int, int]] = []
    import_apply(
        organization=company,
        users_raw=users(*(person(n) for n in range(1, 2501))),
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert seen[0] == ("check", 1, 3) and seen[-1] == ("apply", 3, 3)
    assert ("apply", 2000, 2500) in seen
    assert User.objects.filter(organization=company).count() == 2500
