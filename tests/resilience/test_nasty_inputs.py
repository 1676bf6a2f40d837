"""Issue 10, item 10: nasty files through the directory import, JMA ingest and talk uploads.

Every file goes through the real HTTP endpoint (and, for the import and JMA, the service under it). For each
the outcome is the documented one: a clear 4xx with a message (or, for an import, a job marked invalid with
each fault's message, whose confirmation is refused), never a 5xx, and nothing changes: the directory, the
stored JMA documents, incidents, talk messages, attachments and the files on disk are compared before and
after. Hypothesis then mutates valid samples for the TSV reader, the import service, the JMA parser and the
talk file policy, and checks that only the documented outcomes occur (a result or the app's own error type).

The corpus is built in code (nothing large is committed); the files over the size limits are written lazily
to pytest's tmp_path and removed with it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from chat.files import FileVerdict, upload_check
from chat.models import Attachment, FilePolicy, Message
from chat.selectors import talk_settings_get
from config.errors import ApplicationError
from directory.importer import import_apply, import_plan
from directory.models import Department, ImportJob, Organization, RoleAssignment, User
from directory.tsv import MAX_FILE_BYTES, USER_COLUMNS, Fault, Parsed, TsvFileError, parse_departments, parse_users
from safety import autodispatch
from safety.jma.parser import JmaParseError, Report, parse_report
from safety.models import Dispatch, Incident, JmaDocument
from tests import factories
from tests.chat.support import client_for, talk_person
from tests.conftest import signed_in
from tests.services import SHARED_FIXTURES, shared_fixtures

pytestmark = pytest.mark.django_db

SAMPLE_DEPARTMENTS = "Sample_export_department_data_20261121090000.tsv"
SAMPLE_USERS = "Sample_export_user_data_20261121090000.tsv"
CP932_USERS = "excel_text_cp932_export_user_data.tsv"
UTF16_USERS = "excel_unicode_text_utf16_export_user_data.tsv"
BOM_DEPARTMENTS = "utf8_bom_export_department_data.tsv"
VXSE53 = "earthquake/iwatemiyagi2008_vxse53_serial1_max6plus_19prefs__32-35_06_03_240613_VXSE53.xml"
TRAINING_TSUNAMI = "tsunami/TRAINING_nankai2016_vtse41_MAJOR_29areas__32-39_12_02_250206_VTSE41.xml"
JMA_TOKEN = "nasty-inputs-token"
SLOW = 20.0  # seconds: any single nasty input taking longer than this on a busy 2-core box is a finding
MB = 1024 * 1024

FUZZ = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def shared(kind: str, name: str) -> bytes:
    return (shared_fixtures(kind) / name).read_bytes()


def assert_clear_refusal(response: Any, *, statuses: tuple[int, ...] = (400, 413)) -> dict[str, Any]:
    """A 4xx the person can act on: one of the expected statuses and a JSON body with a code and a message."""
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    body = response.json()
    assert body.get("code") and str(body.get("message", "")).strip(), body
    return dict(body)


# --- Corpus: XML -------------------------------------------------------------------------------------------


def _with_doctype(doc: bytes, doctype: bytes, reference: bytes = b"") -> bytes:
    """A real JMA document with a DOCTYPE after its declaration, and `reference` in its Headline text."""
    declaration, _, rest = doc.partition(b"?>")
    doc = declaration + b"?>\n" + doctype + rest
    return doc.replace(b"<Text>", b"<Text>" + reference, 1) if reference else doc


def xml_corpus(valid: bytes) -> dict[str, bytes]:
    """Hostile or broken XML: each must be refused with a parse error and store nothing."""
    lol = b'<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    )
    big = b"A" * 100_000
    return {
        "xxe_file": _with_doctype(valid, b'<!DOCTYPE Report [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n', b"&xxe;"),
        "xxe_http": _with_doctype(
            valid, b'<!DOCTYPE Report [<!ENTITY xxe SYSTEM "http://127.0.0.1:1/secret">]>\n', b"&xxe;"
        ),
        "xxe_external_dtd": _with_doctype(valid, b'<!DOCTYPE Report SYSTEM "http://127.0.0.1:1/evil.dtd">\n'),
        "parameter_entities": _with_doctype(
            valid,
            b'<!DOCTYPE Report [<!ENTITY % p SYSTEM "file:///etc/passwd"><!ENTITY % q "<!ENTITY e \'%p;\'>">%q;]>\n',
            b"&e;",
        ),
        "billion_laughs": _with_doctype(valid, b"<!DOCTYPE Report [" + lol + b"]>\n", b"&lol9;"),
        "quadratic_blowup": _with_doctype(valid, b'<!DOCTYPE Report [<!ENTITY a "' + big + b'">]>\n', b"&a;" * 20_000),
        "doctype_only": _with_doctype(valid, b"<!DOCTYPE Report>\n"),
        "internal_entity": _with_doctype(valid, b'<!DOCTYPE Report [<!ENTITY hi "hello">]>\n', b"&hi;"),
        "utf16_bom": b"\xff\xfe"
        + valid.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16-le"),
        "utf16_no_declaration": valid.decode("utf-8").split("?>", 1)[1].lstrip().encode("utf-16"),
        "declared_shift_jis_but_utf8": valid.replace(b'encoding="UTF-8"', b'encoding="Shift_JIS"', 1),
        "really_shift_jis": valid.decode("utf-8")
        .replace('encoding="UTF-8"', 'encoding="Shift_JIS"')
        .encode("cp932", "replace"),
        "declared_ebcdic": valid.replace(b'encoding="UTF-8"', b'encoding="IBM037"', 1),
        "invalid_utf8_byte": valid.replace(b"<Text>", b"<Text>\xff\xfe", 1),
        "lone_surrogate_utf8": valid.replace(b"<Text>", b"<Text>\xed\xa0\x80", 1),
        "nul_byte": valid.replace(b"<Text>", b"<Text>\x00", 1),
        "truncated": valid[: len(valid) // 2],
        "truncated_in_tag": valid[: valid.index(b"<Head") + 3],
        "not_a_report": b'<?xml version="1.0" encoding="UTF-8"?><html><script>alert(1)</script></html>',
        "atom_feed_not_report": b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title></feed>',
        "deep_nesting": b"<a>" * 50_000 + b"</a>" * 50_000,
        "one_byte": b"<",
        "whitespace": b" \r\n\t ",
        "bom_only": b"\xef\xbb\xbf",
        "html_js_polyglot": b"<!--<?xml?>--><html><body><script>alert(document.cookie)</script></body></html>",
        "gif_header": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;<Report/>",
        "processing_instruction_bomb": b'<?xml version="1.0"?>' + b"<?pi " + b"x" * 1_000_000 + b"?><a/>",
        "ten_mb_line_over_parser_limit": b"<a>" + b"x" * (5 * MB) + b"</a>",
    }


# --- Corpus: images, archives and other files -----------------------------------------------------------------


def png(width: int = 8, height: int = 8, *, text: bytes = b"") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    data = out.getvalue()
    if not text:
        return data
    chunk = b"tEXt" + b"Comment\x00" + text
    chunk = struct.pack(">I", len(text) + 8) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def gif(*, comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    Image.new("P", (4, 4), 1).save(out, "GIF", comment=comment) if comment else Image.new("P", (4, 4), 1).save(
        out, "GIF"
    )
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    return out.getvalue()


def zip_bomb(inner_name: str, size: int = 64 * MB) -> bytes:
    """A small zip that expands to `size` bytes of zeros (the server must never expand it)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open(inner_name, "w", force_zip64=True) as member,
    ):
        for _ in range(size // MB):
            member.write(b"\0" * MB)
    return out.getvalue()


def docx_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", "<w:document>" + " " * (32 * MB) + "</w:document>")
    return out.getvalue()


def jar_as_docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nMain-Class: Evil\n")
        archive.writestr("Evil.class", b"\xca\xfe\xba\xbe")
    return out.getvalue()


def exe() -> bytes:
    return b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00" + b"\x00" * 200


PDF_WITH_JS = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R/OpenAction 3 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n3 0 obj<</S/JavaScript/JS(app.alert\\('x'\\))>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
SVG_WITH_SCRIPT = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(document.domain)</script></svg>"
)
HTML_PAGE = b"<!DOCTYPE html><html><body><script>fetch('/acme/api/me/').then(r=>r.text()).then(alert)</script>"
# Served as a download, these content types would still be dangerous if a browser were allowed to render them.
RENDERABLE = {"text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml", "text/javascript"}


# --- Corpus: TSV -----------------------------------------------------------------------------------------


def tsv_corpus(sample: bytes) -> dict[str, bytes]:
    """User files that must not import: each is a file-level error or a list of row faults, never a write."""
    text = sample.decode("utf-8")
    header = text.split("\n", 1)[0]
    width = len(USER_COLUMNS)
    row = "\t".join(["x"] * width)
    first_name = text.split("\n")[1].split("\t")[2]  # 木村
    return {
        "empty": b"",
        "one_byte": b"L",
        "whitespace": b" \r\n\t\r\n",
        "bom_only": b"\xef\xbb\xbf",
        "header_only": (header + "\r\n").encode(),
        "nul_byte": sample.replace("木村".encode(), "木\x00村".encode(), 1),
        "lone_surrogate_utf8": sample.replace(first_name.encode(), b"\xed\xa0\x80", 1),
        "lone_surrogate_utf16": b"\xff\xfe"
        + text.replace(first_name, "\ud800", 1).encode("utf-16-le", "surrogatepass"),
        "utf16_without_bom": text.encode("utf-16-le"),
        "utf32": text.encode("utf-32"),
        "cp932_behind_a_utf8_bom": b"\xef\xbb\xbf" + text.encode("cp932"),
        "png_named_tsv": png(),
        "zip_named_tsv": jar_as_docx(),
        "exe_named_tsv": exe(),
        "pdf_named_tsv": PDF_WITH_JS,
        "xml_with_xxe": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        "html_polyglot": HTML_PAGE,
        "ten_mb_single_line": (header + "\n").encode() + b"x" * (10 * MB),
        "ten_mb_cell": (header + "\n").encode()
        + ("a@example.com\tpw\t" + "姓" * (10 * MB // 3)).encode()
        + ("\tx" * (width - 3)).encode(),
        "too_many_rows": (header + "\n" + (row + "\n") * 100_001).encode(),
        "unterminated_quote": (header + '\n"' + text.split("\n", 1)[1]).encode(),
        "unknown_department_on_the_last_row": sample
        + "\t".join(["last@example.co.jp", "Init-pass-1234", "最後", "", "", "", "NOPE"] + [""] * (width - 7)).encode()
        + b"\n",
    }


# --- Snapshots: "nothing changed" ------------------------------------------------------------------------


def directory_state(org: Organization) -> tuple[list[dict[str, Any]], ...]:
    """Every row of the organisation's directory, whole: a change to any field of anyone shows."""
    return (
        list(Department.objects.filter(organization=org).order_by("id").values()),
        list(User.objects.filter(organization=org).order_by("id").values()),
        list(RoleAssignment.objects.filter(user__organization=org).order_by("id").values()),
    )


def jma_state() -> tuple[Any, ...]:
    return (
        JmaDocument.objects.count(),
        Incident.objects.count(),
        Dispatch.objects.count(),
        sorted(JmaDocument.objects.values_list("url", "sha256")),
    )


def talk_state(files_dir: Path) -> tuple[Any, ...]:
    files = sorted(p.name for p in files_dir.iterdir()) if files_dir.exists() else []
    return Message.objects.count(), Attachment.objects.count(), files


# --- Directory import --------------------------------------------------------------------------------------


@pytest.fixture
def directory_org(org: Organization, admin: User) -> Organization:
    """acme with the sample departments and people (and its system administrator, who is not in the file)."""
    plan = import_apply(
        organization=org,
        departments_raw=shared("directory", SAMPLE_DEPARTMENTS),
        users_raw=shared("directory", SAMPLE_USERS),
    )
    assert not plan.faults, plan.report(applied=False)["errors"]
    return org


ImportPost = Callable[..., tuple[Any, dict[str, Any] | None]]


@pytest.fixture
def import_post(admin: User, django_capture_on_commit_callbacks: Any) -> ImportPost:
    """POST files to the import API as the system administrator; the check (a Celery task queued after commit)
    runs eagerly. Returns the response and, when a job was made, the job as the API shows it afterwards."""
    client = signed_in(admin)

    def post(**files: tuple[str, bytes] | Path) -> tuple[Any, dict[str, Any] | None]:
        data: dict[str, Any] = {}
        handles = []
        for field, value in files.items():
            if isinstance(value, Path):
                handle = value.open("rb")
                handles.append(handle)
                data[field] = handle
            else:
                data[field] = SimpleUploadedFile(value[0], value[1], content_type="text/tab-separated-values")
        try:
            with django_capture_on_commit_callbacks(execute=True):
                response = client.post("/acme/api/directory/imports/", data)
        finally:
            for handle in handles:
                handle.close()
        assert response.status_code < 500, response.content[:500]
        if response.status_code != 202:
            return response, None
        job = client.get(f"/acme/api/directory/imports/{response.json()['id']}/")
        assert job.status_code == 200
        return response, job.json()

    def confirm(job_id: int) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(f"/acme/api/directory/imports/{job_id}/")

    post.client = client  # type: ignore[attr-defined]
    post.confirm = confirm  # type: ignore[attr-defined]
    return post


def assert_import_refused(post: ImportPost, job: dict[str, Any] | None, response: Any) -> None:
    """An upload that cannot be imported: a 400 with a message, or a job marked invalid whose every error has a
    code and a message, and which cannot be applied (409 with a message)."""
    if job is None:
        assert_clear_refusal(response, statuses=(400,))
        return
    assert job["status"] == ImportJob.Status.INVALID, job["status"]
    assert job["errors"], job
    codes = {str(f) for f in Fault}
    for error in job["errors"]:
        assert error["code"] in codes and str(error["message"]).strip(), error
    client: Client = post.client  # type: ignore[attr-defined]
    assert_clear_refusal(client.post(f"/acme/api/directory/imports/{job['id']}/"), statuses=(409,))


def test_nasty_user_files_are_refused_with_their_faults_and_change_nothing(
    directory_org: Organization, import_post: ImportPost
) -> None:
    corpus = tsv_corpus(shared("directory", SAMPLE_USERS))
    before = directory_state(directory_org)
    slow: dict[str, float] = {}
    for name, raw in corpus.items():
        started = time.monotonic()
        response, job = import_post(users=(f"{name}.tsv", raw))
        assert_import_refused(import_post, job, response)
        # The service under the API refuses it too, all or nothing, with a message for each fault.
        plan = import_apply(organization=directory_org, users_raw=raw)
        assert plan.faults and all(f.message for f in plan.faults), name
        slow[name] = time.monotonic() - started
        assert directory_state(directory_org) == before, f"{name} changed the directory"
    assert max(slow.values()) < SLOW, slow


def test_a_header_of_many_empty_columns_is_reported_in_a_few_lines(
    directory_org: Organization, import_post: ImportPost
) -> None:
    """Regression: a 400 KB file whose header is 200,000 tabs made 400,000 faults (46 MB of JSON in the job and
    seconds of work per check; a 20 MB file would take gigabytes in the worker). Now at most a screenful."""
    row = "\t".join(["x"] * len(USER_COLUMNS))
    raw = ("\t".join(USER_COLUMNS) + "\t" * 200_000 + "\n" + row + "\n").encode()
    started = time.monotonic()
    plan = import_plan(organization=directory_org, users_raw=raw)
    assert time.monotonic() - started < SLOW
    assert 2 <= len(plan.faults) <= 60, len(plan.faults)
    assert any("200018 columns" in f.message for f in plan.faults), [f.message for f in plan.faults][-5:]
    response, job = import_post(users=("wide.tsv", raw))
    assert_import_refused(import_post, job, response)
    assert job is not None and len(job["errors"]) <= 60


def test_a_good_department_file_with_a_bad_user_file_is_not_half_applied(
    directory_org: Organization, import_post: ImportPost
) -> None:
    departments = shared("directory", SAMPLE_DEPARTMENTS) + "D999\t新しい部\t\tD000\t99\t\t\n".encode()
    users = tsv_corpus(shared("directory", SAMPLE_USERS))["unknown_department_on_the_last_row"]
    before = directory_state(directory_org)
    response, job = import_post(departments=("departments.tsv", departments), users=("users.tsv", users))
    assert_import_refused(import_post, job, response)
    plan = import_apply(organization=directory_org, departments_raw=departments, users_raw=users, full_sync=True)
    assert [f.code for f in plan.faults] == [Fault.UNKNOWN_DEPARTMENT]
    assert directory_state(directory_org) == before
    assert not Department.objects.filter(code="D999").exists()


def test_every_encoding_excel_writes_imports_to_the_same_directory(
    directory_org: Organization, import_post: ImportPost
) -> None:
    """The valid encodings are not nasty: cp932, UTF-16 with a BOM and UTF-8 with and without a BOM all read as
    the directory already imported, so the check finds nothing to change."""
    before = directory_state(directory_org)
    for name, slot in (
        (SAMPLE_USERS, "users"),
        (CP932_USERS, "users"),
        (UTF16_USERS, "users"),
        (BOM_DEPARTMENTS, "departments"),
    ):
        _, job = import_post(**{slot: (name, shared("directory", name))})
        assert job is not None and job["status"] == ImportJob.Status.PREVIEWED, (name, job)
        counts = job["preview"][slot]
        assert counts["created"] == 0 and counts["updated"] == 0 and counts["unchanged"] > 0, (name, counts)
    assert directory_state(directory_org) == before


def test_formula_cells_are_kept_as_text_and_exported_so_excel_never_runs_them(
    directory_org: Organization, import_post: ImportPost
) -> None:
    sample = shared("directory", SAMPLE_USERS).decode("utf-8")
    header, *rows = sample.splitlines()
    position = USER_COLUMNS.index("POSITION")
    formulas = ['=HYPERLINK("http://127.0.0.1:1/","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "=1+1"]
    edited = []
    for index, line in enumerate(rows):
        cells = line.split("\t")
        if index < len(formulas):
            cells[position] = formulas[index]
        edited.append("\t".join(cells))
    _, job = import_post(users=("formulas.tsv", ("\n".join([header, *edited]) + "\n").encode()))
    assert job is not None and job["status"] == ImportJob.Status.PREVIEWED, job
    client: Client = import_post.client  # type: ignore[attr-defined]
    applied = import_post.confirm(job["id"])  # type: ignore[attr-defined]
    assert applied.status_code == 202
    stored = set(User.objects.filter(organization=directory_org).values_list("position", flat=True))
    assert set(formulas) <= stored  # data, kept exactly
    exported = client.get("/acme/api/directory/export/users.tsv")
    assert exported.status_code == 200
    values = {v for row in csv.reader(io.StringIO(exported.content.decode("utf-8-sig")), delimiter="\t") for v in row}
    for formula in formulas:
        assert formula not in values and "'" + formula in values, formula  # Excel shows it as text
    # The exported file imports back to the same directory.
    before = directory_state(directory_org)
    _, again = import_post(users=("export.tsv", exported.content))
    assert again is not None and again["preview"]["users"]["updated"] == 0, again
    assert directory_state(directory_org) == before


def test_a_user_file_over_the_size_limit_is_refused_before_it_is_stored(
    directory_org: Organization, import_post: ImportPost, tmp_path: Path
) -> None:
    huge = tmp_path / "export_user_data_huge.tsv"
    with huge.open("wb") as file:
        file.write(shared("directory", SAMPLE_USERS))
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: the rest reads as NUL bytes
    before, jobs = directory_state(directory_org), ImportJob.objects.count()
    response, job = import_post(users=huge)
    assert job is None
    body = assert_clear_refusal(response, statuses=(400,))
    assert body["code"] == "file_too_large" and "20" in body["message"]
    assert ImportJob.objects.count() == jobs and directory_state(directory_org) == before


# --- JMA ingest --------------------------------------------------------------------------------------------


@pytest.fixture
def jma_push(settings: Any) -> Callable[..., Any]:
    settings.JMA_INGEST_TOKEN = JMA_TOKEN
    client = Client()

    def post(raw: bytes, url: str = "") -> Any:
        path = "/api/jma/documents/" + (f"?url={url}" if url else "")
        return client.post(path, raw, content_type="application/xml", HTTP_AUTHORIZATION=f"Bearer {JMA_TOKEN}")

    return post


def test_hostile_xml_is_refused_quickly_and_stores_nothing(
    org: Organization, jma_push: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    valid = shared("jma", VXSE53)
    before = jma_state()
    took: dict[str, float] = {}
    for name, raw in xml_corpus(valid).items():
        started = time.monotonic()
        with pytest.raises(JmaParseError) as refused:
            parse_report(raw)  # what a feed poll and the file command call
        assert str(refused.value).strip(), name
        with django_capture_on_commit_callbacks(execute=True):
            response = jma_push(raw)
        took[name] = time.monotonic() - started
        body = assert_clear_refusal(response)
        assert body["code"] in ("jma_parse_error", "jma_too_large", "jma_empty"), (name, body)
        assert "root:" not in body["message"], name  # /etc/passwd never echoed back
        assert jma_state() == before, f"{name} stored something"
    assert max(took.values()) < SLOW, took
    assert took["billion_laughs"] < 5 and took["quadratic_blowup"] < 5, took


def test_jma_size_limits_give_413_or_a_parse_error(
    org: Organization, jma_push: Callable[..., Any], settings: Any
) -> None:
    before = jma_state()
    for size in (settings.JMA_MAX_DOCUMENT_BYTES + 1, 10 * MB):  # just over, and a 10 MB single line
        body = assert_clear_refusal(jma_push(b"<a>" + b"x" * (size - 3)), statuses=(413,))
        assert body["code"] == "jma_too_large"
    # With the endpoint's limit raised past the parser's own (5 MB) and past Django's request limit (10 MB):
    settings.JMA_MAX_DOCUMENT_BYTES = 20 * MB
    assert assert_clear_refusal(jma_push(b"<a>" + b"x" * (6 * MB) + b"</a>"))["code"] == "jma_parse_error"
    assert assert_clear_refusal(jma_push(b"<a>" + b"x" * (11 * MB)), statuses=(413,))["code"] == "jma_too_large"
    assert assert_clear_refusal(jma_push(b""))["code"] == "jma_empty"
    assert jma_state() == before


def test_the_file_command_reports_hostile_files_and_stores_nothing(org: Organization, tmp_path: Path) -> None:
    corpus = xml_corpus(shared("jma", VXSE53))
    paths = []
    for name in ("xxe_file", "billion_laughs", "utf16_bom", "truncated"):
        path = tmp_path / f"{name}.xml"
        path.write_bytes(corpus[name])
        paths.append(str(path))
    before = jma_state()
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("jma_ingest", *paths, stdout=out)
    assert exited.value.code == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(": error: " in line for line in lines), lines
    assert jma_state() == before


def test_quirks_real_jma_files_have_are_accepted(
    org: Organization, jma_push: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    """No declaration, CRLF line ends and a UTF-8 BOM occur in real captures (FORMAT_NOTES §1): accepted."""
    valid = shared("jma", VXSE53)
    body = valid.split(b"?>", 1)[1].lstrip()
    variants = {
        "no-declaration": body,
        "crlf": valid.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
        "bom": b"\xef\xbb\xbf" + valid,
    }
    for name, raw in variants.items():
        with django_capture_on_commit_callbacks(execute=True):
            response = jma_push(raw, url=f"https://example.invalid/{name}.xml")
        assert response.status_code == 201, (name, response.content[:300])
        assert response.json()["type_code"] == "VXSE53"
    assert JmaDocument.objects.count() == 3


def test_drill_and_test_messages_are_stored_as_such_and_never_dispatch(
    org: Organization, jma_push: Callable[..., Any], django_capture_on_commit_callbacks: Any
) -> None:
    factories.person(org, "miyagi", anpi_login_id="anpiMiyagi", region_code="04")
    autodispatch.rule_create(organization=org, actor=None, name="震度1以上", hazard="earthquake", min_intensity="1")
    real = shared("jma", VXSE53)
    assert "<Status>通常</Status>".encode() in real
    for status in ("訓練", "試験"):
        raw = real.replace("<Status>通常</Status>".encode(), f"<Status>{status}</Status>".encode(), 1)
        with django_capture_on_commit_callbacks(execute=True):
            response = jma_push(raw, url=f"https://example.invalid/{status}.xml")
        assert response.status_code == 201 and response.json()["is_drill"] is True, response.content[:300]
        assert JmaDocument.objects.get(url=f"https://example.invalid/{status}.xml").status == status
    with django_capture_on_commit_callbacks(execute=True):
        assert jma_push(shared("jma", TRAINING_TSUNAMI)).status_code == 201
    assert (Incident.objects.count(), Dispatch.objects.count()) == (0, 0)
    # The control: the same document as a real (通常) message does dispatch under this rule.
    with django_capture_on_commit_callbacks(execute=True):
        assert jma_push(real, url="https://example.invalid/real.xml").status_code == 201
    assert Incident.objects.count() == 1


# --- Talk uploads ------------------------------------------------------------------------------------------


TALK_CASES: list[tuple[str, str, Callable[[], bytes], str | None, str | None]] = [
    # name, file name, bytes, refusal under "all except executables", refusal under "images only"
    (
        "html_js_polyglot_png",
        "cute.png",
        lambda: png(text=b"<html><script>alert(1)</script></html>"),
        None,
        "not_an_image",
    ),
    ("html_named_png", "photo.png", lambda: HTML_PAGE, None, "not_an_image"),
    ("gif_html_polyglot", "anim.gif", lambda: gif(comment=b"<script>alert(1)</script>"), None, "not_an_image"),
    ("gif_js_polyglot", "anim.gif", lambda: gif(comment=b"*/=1;alert(document.cookie);/*"), None, None),
    ("pdf_with_javascript", "report.pdf", lambda: PDF_WITH_JS, None, "not_an_image"),
    ("svg_with_script", "logo.svg", lambda: SVG_WITH_SCRIPT, None, "not_an_image"),
    ("svg_named_png", "logo.png", lambda: SVG_WITH_SCRIPT, None, "not_an_image"),
    ("zip_bomb", "data.zip", lambda: zip_bomb("zeros.bin"), None, "not_an_image"),
    ("docx_bomb", "report.docx", docx_bomb, None, "not_an_image"),
    ("jar_named_docx", "report.docx", jar_as_docx, "file_type_blocked", "not_an_image"),
    ("exe_named_png", "photo.png", exe, "file_type_blocked", "file_type_blocked"),
    ("jpeg_named_exe", "photo.exe", jpeg, "file_type_blocked", "not_an_image"),
    ("exe_with_trailing_dot", "setup.exe.", exe, "file_type_blocked", "not_an_image"),
    ("jpeg_named_png", "photo.png", jpeg, None, None),  # the content decides: a JPEG
    # Django drops non-printable characters from an upload's name, so "photo\u202egnp.exe" arrives as
    # "photognp.exe"; upload_check itself refuses the override (test_fuzz_talk_file_policy… and below).
    ("right_to_left_override_name", "photo\u202egnp.exe", png, "file_type_blocked", "not_an_image"),
    ("empty", "empty.txt", lambda: b"", "file_empty", "file_empty"),
    ("one_byte", "a.txt", lambda: b"a", None, "not_an_image"),
    ("ten_mb_single_line", "log.txt", lambda: b"x" * (10 * MB), None, "not_an_image"),
]


@pytest.fixture
def talk(org: Organization, settings: Any, tmp_path: Path) -> dict[str, Any]:
    settings.TALK_FILES_DIR = str(tmp_path / "talk-files")
    settings.TALK_SEND_RATE_PER_MINUTE = 10_000
    alice, bob = talk_person(org, "alice"), talk_person(org, "bob")
    client = client_for(alice)
    room = client.post(
        "/acme/api/talk/rooms/", {"name": "防災チーム", "member_ids": [bob.id]}, content_type="application/json"
    )
    assert room.status_code == 201
    return {
        "client": client,
        "url": f"/acme/api/talk/rooms/{room.json()['id']}/messages/",
        "dir": tmp_path / "talk-files",
    }


def upload(talk: dict[str, Any], filename: str, data: bytes) -> Any:
    return talk["client"].post(talk["url"], {"body": "", "file": SimpleUploadedFile(filename, data)})


@pytest.mark.parametrize("policy", [FilePolicy.ALL_EXCEPT_EXECUTABLES, FilePolicy.IMAGES_ONLY])
def test_nasty_talk_files_are_refused_or_only_ever_offered_as_inert_downloads(
    org: Organization, talk: dict[str, Any], policy: str
) -> None:
    row = talk_settings_get(organization=org)
    row.file_policy = policy
    row.save()
    for name, filename, make, refused_default, refused_images in TALK_CASES:
        data = make()
        expected = refused_default if policy == FilePolicy.ALL_EXCEPT_EXECUTABLES else refused_images
        before = talk_state(talk["dir"])
        started = time.monotonic()
        response = upload(talk, filename, data)
        assert time.monotonic() - started < SLOW, name
        if expected is not None:
            body = assert_clear_refusal(response, statuses=(400,))
            assert body["code"] == expected, (name, body)
            assert talk_state(talk["dir"]) == before, f"{name} left something behind"
            continue
        assert response.status_code == 201, (name, response.content[:300])
        attachment = Attachment.objects.latest("id")
        assert attachment.size == len(data) and attachment.sha256 == hashlib.sha256(data).hexdigest()
        assert attachment.content_type not in RENDERABLE, (name, attachment.content_type)
        if attachment.is_image:
            assert attachment.content_type in ("image/png", "image/jpeg", "image/gif"), name
            assert not re.search(rb"<(script|html|svg)", data.lower()), name
        download = talk["client"].get(f"/acme/api/talk/files/{attachment.id}/")
        assert download.status_code == 200
        assert download["Content-Type"] == attachment.content_type
        assert download["Content-Disposition"].startswith("attachment;")
        assert download["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in download["Content-Security-Policy"]
        assert b"".join(download.streaming_content) == data  # stored as sent, never expanded or rewritten


def test_a_name_that_hides_its_extension_is_refused_by_the_policy_itself() -> None:
    for name in ("photo\u202egnp.exe", "a\x00.png", "report\u2066.pdf"):
        with pytest.raises(ApplicationError) as refused:
            upload_check(filename=name, data=png(), policy=FilePolicy.ALL_EXCEPT_EXECUTABLES, max_bytes=MB)
        assert refused.value.code == "bad_filename" and refused.value.message


def test_talk_files_when_files_are_off(org: Organization, talk: dict[str, Any]) -> None:
    row = talk_settings_get(organization=org)
    row.file_policy = FilePolicy.DISABLED
    row.save()
    before = talk_state(talk["dir"])
    for _name, filename, make, _, _ in TALK_CASES[:4]:
        assert assert_clear_refusal(upload(talk, filename, make()), statuses=(400,))["code"] == "files_disabled"
    assert talk_state(talk["dir"]) == before


def test_talk_files_over_the_limit_are_refused_before_anything_is_stored(
    org: Organization, talk: dict[str, Any], tmp_path: Path
) -> None:
    limit = django_settings.TALK_FILE_MAX_BYTES
    before = talk_state(talk["dir"])
    just_over = tmp_path / "just-over.bin"
    with just_over.open("wb") as file:
        file.truncate(limit + 1)
    with just_over.open("rb") as handle:
        response = talk["client"].post(talk["url"], {"body": "", "file": handle})
    body = assert_clear_refusal(response, statuses=(400,))
    assert body["code"] == "file_too_large" and str(limit // MB) in body["message"]
    way_over = tmp_path / "way-over.bin"
    with way_over.open("wb") as file:
        file.truncate(limit + 2 * MB)
    with way_over.open("rb") as handle:
        response = talk["client"].post(talk["url"], {"body": "", "file": handle})
    assert assert_clear_refusal(response, statuses=(413,))["code"] == "file_too_large"
    assert talk_state(talk["dir"]) == before


# --- Hypothesis ----------------------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with a few random edits: bytes inserted, deleted or replaced, or cut short; or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2000))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        if operation == "insert":
            data[where:where] = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=8),
                    st.sampled_from([b"\t", b"\n", b"\r", b'"', b"\x00", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"&", b"<"]),
                )
            )
        elif operation == "delete":
            del data[where : where + draw(st.integers(1, 16))]
        elif operation == "replace" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif operation == "truncate":
            del data[where:]
    return bytes(data)


def _at_import(kind: str, name: str) -> bytes:
    """A shared fixture read when the module loads, for a strategy; empty when absent (the tests using it then
    call shared_fixtures, which fails in CI and skips elsewhere)."""
    path = SHARED_FIXTURES / kind / name
    return path.read_bytes() if path.exists() else b""


USER_SAMPLE_HEAD = b"\n".join(_at_import("directory", SAMPLE_USERS).split(b"\n")[:6]) + b"\n"
JMA_SAMPLE = _at_import("jma", VXSE53)


def _tsv_outcome(raw: bytes, parse: Callable[[bytes], Parsed]) -> None:
    try:
        parsed = parse(raw)
    except TsvFileError as exc:
        assert isinstance(exc.fault.code, Fault) and exc.fault.message.strip()
        return
    assert isinstance(parsed, Parsed)
    for fault in parsed.faults:
        assert isinstance(fault.code, Fault) and fault.message.strip()


@FUZZ
@given(raw=mutated(USER_SAMPLE_HEAD))
def test_fuzz_tsv_reader_gives_rows_or_faults_only(raw: bytes) -> None:
    shared_fixtures("directory")
    _tsv_outcome(raw, parse_users)
    _tsv_outcome(raw, parse_departments)


@FUZZ
@given(
    cells=st.lists(st.lists(st.text(max_size=12), min_size=len(USER_COLUMNS), max_size=len(USER_COLUMNS)), max_size=4),
    encoding=st.sampled_from(["utf-8", "utf-16", "cp932", "utf-8-sig"]),
)
def test_fuzz_tsv_reader_with_arbitrary_cell_text(cells: list[list[str]], encoding: str) -> None:
    text = "\t".join(USER_COLUMNS) + "\r\n" + "".join("\t".join(row) + "\r\n" for row in cells)
    raw = text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
    _tsv_outcome(raw, parse_users)


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=mutated(USER_SAMPLE_HEAD))
def test_fuzz_import_service_applies_all_or_nothing(directory_org: Organization, raw: bytes) -> None:
    before = directory_state(directory_org)
    plan = import_apply(organization=directory_org, users_raw=raw)  # never raises
    if plan.faults:
        assert all(f.message.strip() for f in plan.faults)
        assert directory_state(directory_org) == before


def _jma_outcome(raw: bytes) -> None:
    try:
        report = parse_report(raw)
    except JmaParseError as exc:
        assert str(exc).strip()
        return
    assert isinstance(report, Report) and report.title and report.status


@FUZZ
@given(raw=mutated(JMA_SAMPLE))
def test_fuzz_jma_parser_gives_a_report_or_a_parse_error(raw: bytes) -> None:
    shared_fixtures("jma")
    _jma_outcome(raw)


_JMA_TEXTS = re.compile(rb">([^<>]+)</")


@FUZZ
@given(data=st.data())
def test_fuzz_jma_parser_with_arbitrary_element_text(data: st.DataObject) -> None:
    """Any element's text (Serial, DateTime, MaxInt, codes, magnitude…) replaced by arbitrary text."""
    shared_fixtures("jma")
    texts = list(_JMA_TEXTS.finditer(JMA_SAMPLE))
    chosen = data.draw(st.lists(st.sampled_from(texts), min_size=1, max_size=4, unique_by=lambda m: m.start()))
    raw = JMA_SAMPLE
    for match in sorted(chosen, key=lambda m: m.start(), reverse=True):
        value = data.draw(st.text(max_size=20)).encode("utf-8", "surrogatepass")
        value = value.replace(b"&", b"&amp;").replace(b"<", b"&lt;")
        raw = raw[: match.start(1)] + value + raw[match.end(1) :]
    _jma_outcome(raw)


@FUZZ
@given(
    filename=st.text(min_size=0, max_size=40),
    data=st.one_of(st.binary(max_size=3000), mutated(png()), mutated(gif()), mutated(jpeg())),
    policy=st.sampled_from(list(FilePolicy.values)),
)
def test_fuzz_talk_file_policy_gives_a_verdict_or_a_refusal(filename: str, data: bytes, policy: str) -> None:
    try:
        verdict = upload_check(filename=filename, data=data, policy=policy, max_bytes=MB)
    except ApplicationError as exc:
        assert exc.status == 400 and exc.code and exc.message.strip()
        return
    assert isinstance(verdict, FileVerdict)
    assert verdict.content_type not in RENDERABLE
    if verdict.is_image:
        assert verdict.content_type in ("image/png", "image/jpeg", "image/gif")
