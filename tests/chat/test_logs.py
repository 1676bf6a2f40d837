"""Talk logs: the archive splits files by day (Asia/Tokyo) and by message count, writes CSV that Excel opens
safely, survives a run that died before commit, never passes over a message that commits late, and the logs
are downloaded by talk administrators and the people they allowed, nobody else."""

from __future__ import annotations

import csv
import io
import threading
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import logs
from chat.files import file_store
from chat.logs import (
    BOM,
    talk_log_archive,
    talk_log_latest,
    talk_log_path,
    talk_log_pending_count,
    talk_logs_of_month,
)
from chat.models import Attachment, Message, Room, TalkLogFile, TalkSettings
from chat.selectors import talk_settings_get
from chat.services import department_room_ensure, room_direct_open, room_group_create, talk_access_set
from chat.tasks import talk_archive
from directory.models import Role, User
from tests import factories
from tests.chat.support import client_for, talk_person

pytestmark = pytest.mark.django_db

JST = ZoneInfo("Asia/Tokyo")
HEADER = ["Time", "Room", "Sender", "Message", "Attachment"]


@pytest.fixture(autouse=True)
def storage(settings: Any, tmp_path: Any) -> Any:
    settings.TALK_LOGS_DIR = tmp_path / "logs"
    settings.TALK_FILES_DIR = tmp_path / "files"
    settings.LANGUAGE_CODE = "en"  # the header and the deleted marker in their msgid form
    return tmp_path


@pytest.fixture
def room(alice: User, bob: User) -> Room:
    return room_group_create(creator=alice, name="防災チーム", member_ids=[bob.id])


def jst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=JST)


def post(room: Room, sender: User | None, body: str, at: datetime, **fields: Any) -> Message:
    return Message.objects.create(room=room, sender=sender, body=body, created_at=at, **fields)


def table(data: bytes) -> list[list[str]]:
    """A whole CSV file: BOM, then rows separated by CRLF."""
    assert data.startswith(BOM)
    return list(csv.reader(io.StringIO(data[len(BOM) :].decode("utf-8"), newline="")))


def committed(log: TalkLogFile) -> bytes:
    log.refresh_from_db()
    data = talk_log_path(log.stored_name).read_bytes()
    assert len(data) == log.size
    return data


def bodies(log: TalkLogFile) -> list[str]:
    rows = table(committed(log))
    assert rows[0] == HEADER
    return [row[3] for row in rows[1:]]


def parts(org: Any) -> list[TalkLogFile]:
    return list(TalkLogFile.objects.filter(organization=org).order_by("day", "part"))


def through(org: Any) -> int:
    return TalkSettings.objects.get(organization=org).archived_through_id


# --- splitting ------------------------------------------------------------------------------------------


def test_archive_starts_a_new_file_when_the_tokyo_date_changes(org, room, alice, bob):
    # 23:59 and 00:01 in Tokyo are 14:59 and 15:01 of the same day in UTC.
    before = post(room, alice, "まだ1日", jst(2025, 4, 1, 23, 59))
    after = post(room, bob, "もう2日", jst(2025, 4, 2, 0, 1))
    assert before.created_at.astimezone(ZoneInfo("UTC")).date() == after.created_at.astimezone(ZoneInfo("UTC")).date()

    assert talk_log_archive(organization=org, now=jst(2025, 4, 2, 1, 0)) == 2

    first, second = parts(org)
    assert (first.day.isoformat(), first.part, first.message_count) == ("2025-04-01", 1, 1)
    assert (second.day.isoformat(), second.part, second.message_count) == ("2025-04-02", 1, 1)
    alice_name, bob_name = f"{alice.display_name} (alice)", f"{bob.display_name} (bob)"
    assert table(committed(first))[1:] == [["2025-04-01 23:59:00", "防災チーム", alice_name, "まだ1日", ""]]
    assert table(committed(second))[1:] == [["2025-04-02 00:01:00", "防災チーム", bob_name, "もう2日", ""]]
    assert (first.first_message_id, first.last_message_id) == (before.id, before.id)
    assert (second.first_message_id, second.last_message_id) == (after.id, after.id)
    assert first.filename == "talk-log-20250401-01.csv"
    assert through(org) == after.id


def test_archive_starts_a_new_part_at_the_message_limit_and_a_later_run_fills_the_last_part(org, room, alice, settings):
    settings.TALK_LOG_MAX_MESSAGES = 3
    start = jst(2025, 4, 1, 9, 0)
    for n in range(1, 8):
        post(room, alice, f"m{n}", start + timedelta(minutes=n))

    assert talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)) == 7
    assert [(log.part, log.message_count) for log in parts(org)] == [(1, 3), (2, 3), (3, 1)]
    assert [bodies(log) for log in parts(org)] == [["m1", "m2", "m3"], ["m4", "m5", "m6"], ["m7"]]

    for n in range(8, 11):
        post(room, alice, f"m{n}", start + timedelta(minutes=n))
    assert talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)) == 3

    assert [(log.part, log.message_count) for log in parts(org)] == [(1, 3), (2, 3), (3, 3), (4, 1)]
    third, fourth = parts(org)[2:]
    assert bodies(third) == ["m7", "m8", "m9"]  # one header: the later run appended rows only
    assert bodies(fourth) == ["m10"]
    assert fourth.filename == "talk-log-20250401-04.csv"


def test_archive_does_nothing_when_everything_is_archived(org, room, alice):
    post(room, alice, "one", jst(2025, 4, 1, 9, 0))
    assert talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)) == 1
    before = committed(parts(org)[0])
    assert talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)) == 0
    assert committed(parts(org)[0]) == before


def test_archive_works_in_batches_and_keeps_the_order(org, room, alice, monkeypatch):
    monkeypatch.setattr(logs, "ARCHIVE_BATCH", 4)
    start = jst(2025, 4, 1, 9, 0)
    for n in range(10):
        post(room, alice, f"m{n}", start + timedelta(seconds=n))
    assert talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)) == 10
    (log,) = parts(org)
    assert bodies(log) == [f"m{n}" for n in range(10)]


# --- the CSV --------------------------------------------------------------------------------------------


def test_log_is_utf8_with_bom_and_crlf_with_guarded_cells_and_readable_names(org, room, alice, bob):
    at = jst(2025, 4, 1, 9, 0)
    post(room, alice, '=HYPERLINK("http://evil.example")', at)
    post(room, bob, "-1+2", at + timedelta(seconds=1))
    post(room, alice, 'こんにちは、世界 🌏\n2行目, "引用"', at + timedelta(seconds=2))
    post(room, bob, "消します", at + timedelta(seconds=3), deleted_at=at + timedelta(minutes=1))
    edited = post(room, alice, "前の文", at + timedelta(seconds=4))
    Message.objects.filter(id=edited.id).update(body="直した文", edited_at=at + timedelta(minutes=1))
    stored_name, sha256 = file_store(b"%PDF-1.4 plan")
    plan = Attachment.objects.create(
        organization=org, room=room, uploader=alice, name="避難計画.pdf", stored_name=stored_name,
        size=13, content_type="application/pdf", sha256=sha256,
    )  # fmt: skip
    post(room, alice, "", at + timedelta(seconds=5), attachment=plan)
    dept = factories.department(org)
    User.objects.filter(id__in=[alice.id, bob.id]).update(department=dept)
    post(department_room_ensure(department=dept), bob, "部署へ", at + timedelta(seconds=6))
    post(room_direct_open(user=bob, other=alice), bob, "1:1です", at + timedelta(seconds=7))
    formula_room = room_group_create(creator=alice, name="@team", member_ids=[])
    post(formula_room, alice, "+ok", at + timedelta(seconds=8))

    latest = talk_log_latest(organization=org)
    assert talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)) == 9
    (log,) = parts(org)
    data = committed(log)
    assert data == latest  # the latest log is the same CSV the archive writes

    assert data.startswith(BOM + b"Time,Room,Sender,Message,Attachment\r\n")
    assert data.endswith(b"\r\n")
    assert data.replace(b"\r\n", b"").count(b"\n") == 1  # rows end in CRLF; the one LF is inside a body
    rows = table(data)
    assert rows[0] == HEADER
    assert all(len(row) == 5 for row in rows)
    alice_name, bob_name = f"{alice.display_name} (alice)", f"{bob.display_name} (bob)"
    assert rows[1] == ["2025-04-01 09:00:00", "防災チーム", alice_name, '\'=HYPERLINK("http://evil.example")', ""]
    assert rows[2][3] == "'-1+2"
    assert rows[3][3] == 'こんにちは、世界 🌏\n2行目, "引用"'
    assert rows[4][2:] == [bob_name, "(deleted)", ""]
    assert rows[5][3] == "直した文"
    assert rows[6][3:] == ["", "避難計画.pdf"]
    assert rows[7][1:4] == [dept.name, bob_name, "部署へ"]
    # A 1:1 room is named after both people, the one with the smaller id first.
    low, high = sorted([alice, bob], key=lambda p: p.id)
    assert rows[8][1] == f"{low.display_name} ⇔ {high.display_name}"
    assert rows[9][1:4] == ["'@team", alice_name, "'+ok"]


def test_header_follows_the_site_language(org, room, alice, settings):
    settings.LANGUAGE_CODE = "ja"
    post(room, alice, "x", jst(2025, 4, 1, 9, 0))
    from django.utils import translation

    with translation.override("ja"):
        expected = [translation.gettext(name) for name in HEADER]
    with translation.override("en"):  # whoever asks, the file is in the site's language
        assert table(talk_log_latest(organization=org))[0] == expected


def test_rows_cost_the_same_queries_for_ten_messages_as_for_a_hundred(org, room, alice, bob):
    dept = factories.department(org)
    User.objects.filter(id__in=[alice.id, bob.id]).update(department=dept)
    rooms = [room, department_room_ensure(department=dept), room_direct_open(user=alice, other=bob)]
    at = jst(2025, 4, 1, 9, 0)
    talk_settings_get(organization=org)  # created on first use; not what is counted here

    def queries_for_latest() -> int:
        with CaptureQueriesContext(connection) as context:
            talk_log_latest(organization=org)
        return len(context.captured_queries)

    for n in range(10):
        post(rooms[n % 3], alice, f"m{n}", at)
    few = queries_for_latest()
    for n in range(90):
        post(rooms[n % 3], bob, f"m{n}", at)
    for _ in range(5):
        other = talk_person(org)
        post(room_direct_open(user=alice, other=other), alice, "hi", at)
    assert queries_for_latest() == few <= 4


# --- crash safety and the 60 s rule ---------------------------------------------------------------------


def test_bytes_beyond_the_committed_size_are_cut_off_before_appending(org, room, alice):
    post(room, alice, "one", jst(2025, 4, 1, 9, 0))
    post(room, alice, "two", jst(2025, 4, 1, 9, 1))
    talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0))
    (log,) = parts(org)
    with talk_log_path(log.stored_name).open("ab") as file:
        file.write(b"half a row from a run that died," * 100)  # longer than what the next run appends

    post(room, alice, "three", jst(2025, 4, 1, 9, 2))
    talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0))

    assert bodies(log) == ["one", "two", "three"]
    assert b"died" not in committed(log)


def test_a_run_that_dies_before_commit_leaves_nothing_behind(org, room, alice, monkeypatch, storage):
    post(room, alice, "one", jst(2025, 4, 1, 9, 0))
    talk_log_archive(organization=org, now=jst(2025, 4, 2, 12, 0))
    (log,) = parts(org)
    size = log.size
    two = post(room, alice, "two", jst(2025, 4, 1, 10, 0))
    post(room, alice, "next day", jst(2025, 4, 2, 9, 0))

    def power_cut(self: TalkSettings, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(TalkSettings, "save", power_cut)
        with pytest.raises(RuntimeError):
            talk_log_archive(organization=org, now=jst(2025, 4, 2, 12, 0))

    log.refresh_from_db()
    assert log.size == size and log.message_count == 1
    assert talk_log_path(log.stored_name).stat().st_size > size  # written, never committed
    assert through(org) < two.id
    assert sorted(p.name for p in (storage / "logs").iterdir()) == [log.stored_name]  # the new file is gone

    assert talk_log_archive(organization=org, now=jst(2025, 4, 2, 12, 0)) == 2
    first, second = parts(org)
    assert bodies(first) == ["one", "two"]
    assert bodies(second) == ["next day"]


def test_a_fresh_message_waits_a_minute_but_is_in_the_latest_log(org, room, alice):
    # A fixed midday: run just after midnight in Japan, "old" and "fresh" would fall on two days (two log parts).
    now = jst(2025, 4, 2, 12, 0)
    old = post(room, alice, "old", now - timedelta(seconds=120))
    post(room, alice, "fresh", now - timedelta(seconds=10))

    assert talk_log_archive(organization=org, now=now) == 1
    assert through(org) == old.id
    assert [row[3] for row in table(talk_log_latest(organization=org))[1:]] == ["fresh"]
    assert talk_log_pending_count(organization=org) == 1

    assert talk_log_archive(organization=org, now=now + timedelta(seconds=60)) == 1
    assert bodies(parts(org)[0]) == ["old", "fresh"]
    assert table(talk_log_latest(organization=org)) == [HEADER]


def test_archive_stops_at_the_first_fresh_message_in_id_order(org, room, alice):
    # A message whose id is smaller but which is still fresh holds back every later id, however old:
    # the same holds for a smaller id whose transaction has not committed yet.
    now = timezone.now()
    older = post(room, alice, "older", now - timedelta(minutes=5))
    post(room, alice, "fresh", now - timedelta(seconds=5))
    post(room, alice, "late", now - timedelta(minutes=3))

    assert talk_log_archive(organization=org, now=now) == 1
    assert through(org) == older.id


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_archive_the_same_message(org, alice, monkeypatch):
    room = Room.objects.create(organization=org, kind="group", name="g")
    start = jst(2025, 4, 1, 9, 0)
    for n in range(30):
        post(room, alice, f"m{n}", start + timedelta(seconds=n))
    monkeypatch.setattr(logs, "ARCHIVE_BATCH", 7)
    real_write = logs._LogWriter.write

    def slow_write(self: Any) -> None:
        time.sleep(0.05)  # hold the lock long enough for the other worker to wait on it
        real_write(self)

    monkeypatch.setattr(logs._LogWriter, "write", slow_write)
    barrier = threading.Barrier(2)
    results: list[int] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(talk_log_archive(organization=org, now=jst(2025, 4, 1, 12, 0)))
        finally:
            connection.close()

    workers = [threading.Thread(target=worker) for _ in range(2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert len(results) == 2, "a worker failed"
    assert sum(results) == 30
    (log,) = parts(org)
    assert bodies(log) == [f"m{n}" for n in range(30)]


def test_the_archive_task_archives_every_organisation(org, other_org, room, alice):
    outsider = talk_person(other_org, "outsider")
    elsewhere = room_group_create(creator=outsider, name="Globex team", member_ids=[])
    a_while_ago = timezone.now() - timedelta(minutes=5)
    post(room, alice, "acme", a_while_ago)
    post(elsewhere, outsider, "globex", a_while_ago)
    factories.organization()  # no rooms: left alone

    assert talk_archive.delay().get() == 2
    assert bodies(parts(org)[0]) == ["acme"]
    assert bodies(parts(other_org)[0]) == ["globex"]
    assert django_settings.CELERY_BEAT_SCHEDULE["talk-archive"]["task"] == talk_archive.name


def test_month_list_holds_this_months_files_only(org, room, alice):
    post(room, alice, "march", jst(2025, 3, 31, 23, 0))
    post(room, alice, "april", jst(2025, 4, 1, 0, 30))
    post(room, alice, "april 30", jst(2025, 4, 30, 10, 0))
    talk_log_archive(organization=org, now=jst(2025, 5, 1, 12, 0))
    days = [log.day.isoformat() for log in talk_logs_of_month(organization=org, today=jst(2025, 4, 15).date())]
    assert days == ["2025-04-30", "2025-04-01"]


# --- REST -----------------------------------------------------------------------------------------------


@pytest.fixture
def archived(org: Any, room: Room, alice: User) -> TalkLogFile:
    now = timezone.now()
    post(room, alice, "=archived", now - timedelta(minutes=5))
    talk_log_archive(organization=org, now=now)
    post(room, alice, "not yet", now)
    (log,) = parts(org)
    return log


def test_talk_administrator_lists_and_downloads_logs(org, archived):
    talk_admin = factories.person(org, "talkadmin", roles=(Role.ADMIN_GOTALK,))
    client = client_for(talk_admin)

    listing = client.get("/acme/api/talk/logs/")
    assert listing.status_code == 200, listing.content
    assert listing.json() == {
        "files": [
            {
                "id": archived.id,
                "name": archived.filename,
                "day": archived.day.isoformat(),
                "part": 1,
                "message_count": 1,
                "size": archived.size,
                "url": f"/acme/api/talk/logs/{archived.id}/",
            }
        ],
        "latest": {"message_count": 1, "url": "/acme/api/talk/logs/latest/"},
    }

    # Bytes of a run that has not committed yet are never served.
    with talk_log_path(archived.stored_name).open("ab") as file:
        file.write(b"uncommitted")
    download = client.get(f"/acme/api/talk/logs/{archived.id}/")
    assert download.status_code == 200
    assert download["Content-Type"] == "text/csv; charset=utf-8"
    assert download["Content-Disposition"] == f'attachment; filename="{archived.filename}"'
    assert download["X-Content-Type-Options"] == "nosniff"
    content = download.getvalue()
    assert content == talk_log_path(archived.stored_name).read_bytes()[: archived.size]
    assert table(content)[1][3] == "'=archived"

    latest = client.get("/acme/api/talk/logs/latest/")
    assert latest.status_code == 200
    assert latest["Content-Type"] == "text/csv; charset=utf-8"
    assert latest["Content-Disposition"].startswith('attachment; filename="talk-log-latest-')
    assert latest["X-Content-Type-Options"] == "nosniff"
    assert [row[3] for row in table(latest.content)[1:]] == ["not yet"]


def test_a_person_the_talk_administrator_allowed_downloads_logs(org, archived):
    granted = factories.person(org, "auditor")
    talk_access_set(person=granted, may_download_logs=True)
    client = client_for(granted)
    assert client.get("/acme/api/talk/logs/").status_code == 200
    assert client.get(f"/acme/api/talk/logs/{archived.id}/").status_code == 200
    assert client.get("/acme/api/talk/logs/latest/").status_code == 200


def test_everyone_else_is_refused(org, archived, alice, employee, admin):
    for person in (alice, employee, admin):  # a member of the room, an employee, a system administrator
        client = client_for(person)
        for url in ("/acme/api/talk/logs/", f"/acme/api/talk/logs/{archived.id}/", "/acme/api/talk/logs/latest/"):
            response = client.get(url)
            assert response.status_code == 403, (person.login_id, url)
            assert response.json()["code"] == "talk_logs_forbidden"
    assert Client().get("/acme/api/talk/logs/").status_code in (401, 403)


def test_another_organisations_log_is_not_found(org, other_org, archived):
    outsider = talk_person(other_org, "outsider")
    elsewhere = room_group_create(creator=outsider, name="Globex", member_ids=[])
    post(elsewhere, outsider, "globex", timezone.now() - timedelta(minutes=5))
    talk_log_archive(organization=other_org)
    (foreign,) = parts(other_org)

    talk_admin = client_for(factories.person(org, "talkadmin", roles=(Role.ADMIN_GOTALK,)))
    assert talk_admin.get(f"/acme/api/talk/logs/{foreign.id}/").status_code == 404
    assert talk_admin.get("/acme/api/talk/logs/999999/").status_code == 404
    # And a talk administrator of another organisation gets nothing of this one's.
    foreign_admin = client_for(factories.person(other_org, "globexadmin", roles=(Role.ADMIN_GOTALK,)))
    assert foreign_admin.get(f"/acme/api/talk/logs/{archived.id}/").status_code == 404
    assert foreign_admin.get("/acme/api/talk/logs/").status_code == 404
    assert foreign_admin.get(f"/globex/api/talk/logs/{archived.id}/").status_code == 404
