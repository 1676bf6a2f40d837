"""Retention: an organisation that keeps messages for a number of days loses older messages and their files
every day, but only once they are archived, and the archived talk logs stay."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from chat import logs
from chat.files import file_path, file_store
from chat.logs import BOM, talk_log_archive, talk_log_path, talk_retention_apply
from chat.models import Attachment, Message, Room, TalkLogFile, TalkSettings
from chat.services import room_group_create, talk_settings_update
from chat.tasks import talk_retention
from directory.models import User
from tests.chat.support import talk_person

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings: Any, tmp_path: Any) -> Any:
    settings.TALK_LOGS_DIR = tmp_path / "logs"
    settings.TALK_FILES_DIR = tmp_path / "files"
    settings.LANGUAGE_CODE = "en"
    return tmp_path


@pytest.fixture
def room(alice: User) -> Room:
    return room_group_create(creator=alice, name="総務", member_ids=[])


def days_ago(days: int) -> Any:
    return timezone.now() - timedelta(days=days)


def post(room: Room, sender: User, body: str, days: int, *, file: bytes | None = None) -> Message:
    attachment = None
    if file is not None:
        stored_name, sha256 = file_store(file)
        attachment = Attachment.objects.create(
            organization_id=room.organization_id, room=room, uploader=sender, name=f"{body}.txt",
            stored_name=stored_name, size=len(file), content_type="text/plain", sha256=sha256,
        )  # fmt: skip
    return Message.objects.create(room=room, sender=sender, body=body, created_at=days_ago(days), attachment=attachment)


def logged_bodies(org: Any) -> list[str]:
    found = []
    for log in TalkLogFile.objects.filter(organization=org).order_by("day", "part"):
        data = talk_log_path(log.stored_name).read_bytes()[: log.size]
        assert data.startswith(BOM)
        found += [row[3] for row in list(csv.reader(io.StringIO(data[3:].decode(), newline="")))[1:]]
    return found


def remaining(org: Any) -> list[str]:
    return list(Message.objects.filter(room__organization=org).order_by("id").values_list("body", flat=True))


def test_old_archived_messages_and_their_files_go_newer_ones_and_the_logs_stay(
    org, room, alice, django_capture_on_commit_callbacks
):
    talk_settings_update(organization=org, retention_days=90)
    old = post(room, alice, "old", 200, file=b"old file")
    post(room, alice, "just old", 91)
    new = post(room, alice, "new", 89, file=b"new file")
    old_file, new_file = file_path(old.attachment.stored_name), file_path(new.attachment.stored_name)
    assert talk_log_archive(organization=org) == 3

    with django_capture_on_commit_callbacks(execute=True):
        assert talk_retention_apply(organization=org) == 2

    assert remaining(org) == ["new"]
    assert list(Attachment.objects.values_list("name", flat=True)) == ["new.txt"]
    assert not old_file.exists()
    assert new_file.exists()
    assert logged_bodies(org) == ["old", "just old", "new"]  # the archived logs keep everything


def test_messages_not_archived_yet_are_never_removed(org, room, alice, django_capture_on_commit_callbacks):
    talk_settings_update(organization=org, retention_days=30)
    old = post(room, alice, "old", 100, file=b"kept")
    with django_capture_on_commit_callbacks(execute=True):
        assert talk_retention_apply(organization=org) == 0
    assert remaining(org) == ["old"]
    assert file_path(old.attachment.stored_name).exists()


def test_the_daily_task_archives_first_then_removes(org, other_org, room, alice, django_capture_on_commit_callbacks):
    talk_settings_update(organization=org, retention_days=30)
    old = post(room, alice, "old", 100, file=b"old file")
    post(room, alice, "recent", 2)
    # Another organisation without a retention period keeps everything, archived or not.
    outsider = talk_person(other_org)
    post(room_group_create(creator=outsider, name="Globex", member_ids=[]), outsider, "globex", 1000)

    with django_capture_on_commit_callbacks(execute=True):
        assert talk_retention.delay().get() == 1

    assert remaining(org) == ["recent"]
    assert not file_path(old.attachment.stored_name).exists()
    assert logged_bodies(org) == ["old", "recent"]
    assert TalkSettings.objects.get(organization=org).archived_through_id == Message.objects.get(body="recent").id
    assert remaining(other_org) == ["globex"]
    assert not TalkLogFile.objects.filter(organization=other_org).exists()
    assert django_settings.CELERY_BEAT_SCHEDULE["talk-retention"]["task"] == talk_retention.name


def test_without_a_retention_period_nothing_is_removed(org, room, alice):
    post(room, alice, "ancient", 3650)
    talk_log_archive(organization=org)
    assert talk_retention_apply(organization=org) == 0
    assert talk_retention.delay().get() == 0
    assert remaining(org) == ["ancient"]


def test_a_long_backlog_is_removed_in_batches(org, room, alice, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(logs, "RETENTION_BATCH", 2)
    talk_settings_update(organization=org, retention_days=7)
    files = [post(room, alice, f"m{n}", 400 - n, file=f"file {n}".encode()).attachment.stored_name for n in range(5)]
    post(room, alice, "this week", 1)
    talk_log_archive(organization=org)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert talk_retention_apply(organization=org) == 5
    assert len(callbacks) == 3  # one transaction, and one removal of files, per batch
    assert remaining(org) == ["this week"]
    assert not any(file_path(name).exists() for name in files)
