"""Storing JMA documents: once per URL, published after commit, never a report when it does not parse;
the REST push endpoint and `manage.py jma_ingest`."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import cast

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, include, path

from config.urls import urlpatterns as site_urlpatterns
from safety.events import JMA_GROUP, JMA_REPORT, jma_stream_access, jma_stream_snapshot
from safety.jma.ingest import jma_document_ingest, jma_document_ingest_result
from safety.jma.parser import JmaParseError
from safety.models import JmaDocument
from tests import factories
from tests.services import shared_fixtures

NOTO_VXSE51 = "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
TOHOKU_VXSE53 = "earthquake/tohoku2011_vxse53_MAXINT7_41prefs__32-39_11_05_240613_VXSE53.xml"
TRAINING_TSUNAMI = "tsunami/TRAINING_nankai2016_vtse41_MAJOR_29areas__32-39_12_02_250206_VTSE41.xml"
TOKEN = "s3cret-token-for-tests"


def fixture(name: str) -> Path:
    return shared_fixtures("jma") / name


@pytest.fixture
def push_settings(settings):
    settings.JMA_INGEST_TOKEN = TOKEN
    settings.JMA_MAX_DOCUMENT_BYTES = 1024 * 1024
    return settings


def test_second_arrival_of_a_url_returns_the_stored_document_and_publishes_once(
    db, capture_events, django_capture_on_commit_callbacks
):
    raw = fixture(NOTO_VXSE51).read_bytes()
    url = "https://www.data.jma.go.jp/developer/xml/data/noto.xml"
    with django_capture_on_commit_callbacks(execute=True):
        first = jma_document_ingest(url=url, raw=raw, source="pull")
    with django_capture_on_commit_callbacks(execute=True):
        again = jma_document_ingest_result(url=url, raw=raw, source="push")

    assert again.document.id == first.id and not again.created
    assert JmaDocument.objects.count() == 1
    events = capture_events.of_type(JMA_REPORT)
    assert len(events) == 1
    assert events[0].stream == JMA_GROUP
    data = events[0].data
    assert data["id"] == first.id
    assert data["kind"] == "earthquake" and data["type_code"] == "VXSE51"
    assert data["max_intensity"] == "6+"
    assert data["intensity_by_pref"]["17"] == "6+"  # 石川県
    assert data["is_drill"] is False
    # Display fields the disaster page renders: strongest prefecture first, labelled.
    assert data["max_intensity_label"] == "6強"
    assert data["prefs"][0] == {"code": "17", "name": "石川県", "rank": 8, "label": "6強"}
    assert data["report_time"] == "2024-01-01 16:13"


def test_document_is_stored_as_received_with_its_parsed_summary(db):
    raw = fixture(TOHOKU_VXSE53).read_bytes()
    doc = jma_document_ingest(url="file:tohoku", raw=raw, source="file")
    doc.refresh_from_db()
    assert bytes(doc.raw) == raw
    assert len(doc.sha256) == 64
    assert doc.kind == "earthquake" and doc.type_code == "VXSE53"
    assert doc.summary["max_intensity"] == "7"
    assert doc.summary["epicenter_name"]
    assert doc.summary["magnitude"]
    assert doc.summary["origin_time"]
    assert doc.report_datetime is not None


def test_drill_is_marked_as_a_drill(db, capture_events, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        doc = jma_document_ingest(url="file:nankai", raw=fixture(TRAINING_TSUNAMI).read_bytes(), source="file")
    assert doc.status == "訓練"
    data = capture_events.of_type(JMA_REPORT)[0].data
    assert data["is_drill"] is True and data["kind"] == "tsunami" and data["tsunami_by_area"]
    assert data["tsunami"][0]["severity"] == "major" and data["tsunami"][0]["kind_name"].startswith("大津波警報")
    assert data["tsunami"][0]["name"]


def test_event_is_not_sent_when_the_transaction_rolls_back(db, capture_events, django_capture_on_commit_callbacks):
    from django.db import transaction

    raw = fixture(NOTO_VXSE51).read_bytes()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        jma_document_ingest(url="file:x", raw=raw, source="file")
        raise RuntimeError("boom")
    assert capture_events.events == []
    assert not JmaDocument.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"<?xml version='1.0'?><html><body>not JMA</body></html>",
        b"<Report xmlns='http://xml.kishou.go.jp/jmaxml1/'><Control><Title>",
        b"",
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<Report xmlns="http://xml.kishou.go.jp/jmaxml1/">&xxe;</Report>'
        ),
    ],
    ids=["not-jma", "truncated", "empty", "xxe"],
)
def test_document_that_does_not_parse_is_not_stored(db, capture_events, django_capture_on_commit_callbacks, raw):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(JmaParseError):
        jma_document_ingest(url="https://example.invalid/broken.xml", raw=raw, source="pull")
    assert not JmaDocument.objects.exists()
    assert capture_events.events == []


def test_jma_stream_is_readable_by_crisis_managers_only(db):
    from django.http import Http404

    from directory.models import Role

    org = factories.organization()
    manager = factories.person(org, roles=(Role.CRISIS_MANAGER,))
    employee = factories.person(org)
    jma_document_ingest(url="file:noto", raw=fixture(NOTO_VXSE51).read_bytes(), source="file")

    assert jma_stream_access(manager, "all") == JMA_GROUP
    with pytest.raises(Http404):
        jma_stream_access(employee, "all")
    with pytest.raises(Http404):
        jma_stream_access(manager, "other")
    reports = jma_stream_snapshot(manager, "all")["reports"]
    assert isinstance(reports, list)
    assert [r["type_code"] for r in reports] == ["VXSE51"]


# --- REST push ----------------------------------------------------------------------------------------------

# The site's URLs with /api/jma/ mounted, whether or not config/urls.py includes it yet.
urlpatterns: list[URLPattern | URLResolver] = [
    path("api/jma/", include("safety.urls")),
    *cast(list[URLPattern | URLResolver], site_urlpatterns),
]
rest = pytest.mark.urls(__name__)


def push(client, body: bytes, *, token: str | None = TOKEN, url: str | None = None):
    path = "/api/jma/documents/" + (f"?url={url}" if url else "")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return client.post(path, data=body, content_type="application/xml", **headers)


@rest
def test_push_stores_then_reports_already_stored(
    db, client, push_settings, capture_events, django_capture_on_commit_callbacks
):
    raw = fixture(NOTO_VXSE51).read_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        first = push(client, raw)
    assert first.status_code == 201, first.content
    body = first.json()
    assert body["type_code"] == "VXSE51" and body["max_intensity"] == "6+"
    assert body["url"].startswith("push:")
    with django_capture_on_commit_callbacks(execute=True):
        again = push(client, raw)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert len(capture_events.of_type(JMA_REPORT)) == 1
    assert JmaDocument.objects.get().source == "push"


@rest
def test_push_keys_on_the_given_url(db, client, push_settings):
    raw = fixture(NOTO_VXSE51).read_bytes()
    assert push(client, raw, url="https://relay.example/a.xml").status_code == 201
    assert push(client, raw, url="https://relay.example/b.xml").status_code == 201
    assert sorted(JmaDocument.objects.values_list("url", flat=True)) == [
        "https://relay.example/a.xml",
        "https://relay.example/b.xml",
    ]


@rest
def test_push_refuses_a_bad_token(db, client, push_settings):
    raw = fixture(NOTO_VXSE51).read_bytes()
    assert push(client, raw, token="wrong").status_code == 401
    assert push(client, raw, token=None).status_code == 401
    response = client.post("/api/jma/documents/", data=raw, content_type="application/xml", HTTP_AUTHORIZATION=TOKEN)
    assert response.status_code == 401
    assert not JmaDocument.objects.exists()


@rest
def test_push_endpoint_is_off_without_a_token(db, client, settings):
    settings.JMA_INGEST_TOKEN = ""
    assert push(client, b"<x/>", token="").status_code == 404
    assert push(client, b"<x/>", token="anything").status_code == 404


@rest
def test_push_refuses_a_document_over_the_size_limit(db, client, push_settings):
    push_settings.JMA_MAX_DOCUMENT_BYTES = 64 * 1024
    response = push(client, b"<a>" + b"x" * (64 * 1024) + b"</a>")
    assert response.status_code == 413
    assert response.json()["code"] == "jma_too_large"
    assert not JmaDocument.objects.exists()


@rest
def test_push_of_a_broken_document_is_a_400_and_stores_nothing(db, client, push_settings, capture_events):
    response = push(client, b"<?xml version='1.0'?><not-jma/>")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "jma_parse_error" and body["message"]
    assert not JmaDocument.objects.exists()
    assert capture_events.events == []


# --- manage.py jma_ingest -----------------------------------------------------------------------------------


def test_command_ingests_real_files_and_reports_each(db, tmp_path):
    files = [fixture(NOTO_VXSE51), fixture(TOHOKU_VXSE53), fixture(TRAINING_TSUNAMI)]
    out = StringIO()
    call_command("jma_ingest", *map(str, files), stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(": stored #" in line for line in lines), lines
    assert set(JmaDocument.objects.values_list("url", flat=True)) == {f"file:{f.resolve()}" for f in files}
    assert set(JmaDocument.objects.values_list("source", flat=True)) == {"file"}

    out = StringIO()
    call_command("jma_ingest", str(files[0]), stdout=out)
    assert ": already stored #" in out.getvalue()


def test_command_fails_after_reporting_every_file(db, tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<Report")
    good = fixture(NOTO_VXSE51)
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("jma_ingest", str(broken), str(tmp_path / "missing.xml"), str(good), stdout=out)
    assert exit_info.value.code == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"{broken}: error: ")
    assert lines[1].startswith(f"{tmp_path / 'missing.xml'}: error: ")
    assert ": stored #" in lines[2]
    assert list(JmaDocument.objects.values_list("url", flat=True)) == [f"file:{good.resolve()}"]


def test_command_stores_a_single_file_under_the_given_url(db):
    out = StringIO()
    call_command("jma_ingest", str(fixture(NOTO_VXSE51)), "--url", "https://relay.example/noto.xml", stdout=out)
    assert JmaDocument.objects.get().url == "https://relay.example/noto.xml"
