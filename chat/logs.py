"""Talk logs and retention: the archive that writes an organisation's messages into CSV log files, the "latest
talk log" of what is not archived yet, the month's list of files, and the retention that removes old messages
and their files once they are archived.

A log file is CSV in UTF-8 with a BOM and CRLF (what Excel opens without garbling): one file per day in
settings.TIME_ZONE and part, each part at most TALK_LOG_MAX_MESSAGES messages, stored in TALK_LOGS_DIR under a
random name. The archive appends under a lock on the organisation's TalkSettings row, so two workers never
archive the same messages. `TalkLogFile.size` is the length that committed: a file is cut back to it before
each append and read only up to it, so a run that died after writing but before committing leaves no trace in
what anyone downloads.

Log files are written in the site's language (LANGUAGE_CODE), whoever downloads them: a file grows over a day
and its header and rows must agree.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from chat.files import file_remove
from chat.models import Attachment, Message, RoomKind, TalkLogFile, TalkSettings
from chat.selectors import talk_settings_get
from directory.models import Organization, User
from directory.tsv import excel_safe

logger = logging.getLogger(__name__)

# A message is archived once it is this old. Ids come from a sequence when a row is inserted, so a transaction
# that commits late can make a smaller id visible after a larger one. Archiving only messages older than any
# message transaction lasts, and stopping at the first newer one in id order, means no id is ever passed over.
ARCHIVE_DELAY = timedelta(seconds=60)
ARCHIVE_BATCH = 2000  # messages per archive transaction (and per query of the latest log)
RETENTION_BATCH = 1000  # messages removed per transaction, so a year of them never holds one huge transaction
READ_CHUNK = 64 * 1024
BOM = b"\xef\xbb\xbf"

_STORED_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- reads ----------------------------------------------------------------------------------------------


def talk_logs_of_month(*, organization: Organization, today: date) -> list[TalkLogFile]:
    """The organisation's log files of the month `today` falls in, newest day and part first."""
    first = today.replace(day=1)
    next_first = (first + timedelta(days=32)).replace(day=1)
    return list(
        TalkLogFile.objects.filter(organization=organization, day__gte=first, day__lt=next_first).order_by(
            "-day", "-part"
        )
    )


def talk_log_get(*, organization: Organization, log_id: int) -> TalkLogFile:
    """One of the organisation's log files; Http404 for any other id."""
    log = TalkLogFile.objects.filter(id=log_id, organization=organization).first()
    if log is None:
        raise Http404
    return log


def talk_log_pending_count(*, organization: Organization) -> int:
    """How many messages are not archived yet (what the latest talk log holds)."""
    through = talk_settings_get(organization=organization).archived_through_id
    return Message.objects.filter(room__organization=organization, id__gt=through).count()


def talk_log_path(stored_name: str) -> Path:
    """The path of a log file. Raises ValueError for anything but a stored name, so no name can point outside
    TALK_LOGS_DIR."""
    if not isinstance(stored_name, str) or _STORED_NAME.fullmatch(stored_name) is None:
        raise ValueError(f"not a stored log name: {stored_name!r}")
    return Path(settings.TALK_LOGS_DIR) / stored_name


class CommittedBytes:
    """The committed bytes of a log file (its first `size` bytes), read in chunks. An archive run may be
    appending behind them; what it has not committed is never served. `close()` closes the file, as a
    streaming response does when it is done."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._remaining = size

    def __iter__(self) -> Iterator[bytes]:
        while self._remaining > 0:
            data = self._handle.read(min(READ_CHUNK, self._remaining))
            if not data:
                break
            self._remaining -= len(data)
            yield data
        self.close()

    def close(self) -> None:
        self._handle.close()


def talk_log_open(*, log: TalkLogFile) -> CommittedBytes:
    """Open a log file for download. Raises OSError when the file is gone."""
    return CommittedBytes(talk_log_path(log.stored_name).open("rb"), log.size)


def talk_log_latest(*, organization: Organization) -> bytes:
    """The latest talk log: a CSV like the archived files of every message not archived yet, as each message
    is now."""
    through = talk_settings_get(organization=organization).archived_through_id
    rows = _RowMaker()
    with translation.override(settings.LANGUAGE_CODE):
        chunks = [_csv_bytes([], header=True)]
        while True:
            batch = list(_messages(organization, after_id=through)[:ARCHIVE_BATCH])
            if not batch:
                break
            chunks.append(_csv_bytes(rows.rows(batch), header=False))
            through = batch[-1].id
            if len(batch) < ARCHIVE_BATCH:
                break
    return b"".join(chunks)


# --- archive --------------------------------------------------------------------------------------------


def talk_log_archive(*, organization: Organization, now: datetime | None = None) -> int:
    """Append the organisation's messages that are not archived yet to its log files, in id order, and
    return how many were archived.

    Only messages created more than ARCHIVE_DELAY before `now` are archived, and a run stops at the first
    message in id order that is newer, so a transaction that commits a smaller id late is never skipped.
    Each message goes to the open part of its day (settings.TIME_ZONE); a part that holds
    TALK_LOG_MAX_MESSAGES is closed and the next one started. Each batch is one transaction under a lock on
    the TalkSettings row: the files are written and fsynced, then sizes, counts and `archived_through_id`
    commit together."""
    cutoff = (now or timezone.now()) - ARCHIVE_DELAY
    talk = talk_settings_get(organization=organization)
    # Most runs find nothing to do: look before taking the lock.
    first = (
        Message.objects.filter(room__organization=organization, id__gt=talk.archived_through_id)
        .order_by("id")
        .values_list("created_at", flat=True)
        .first()
    )
    if first is None or first > cutoff:
        return 0
    Path(settings.TALK_LOGS_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
    rows = _RowMaker()
    total = 0
    with translation.override(settings.LANGUAGE_CODE):
        while True:
            archived, more = _archive_batch(organization, talk.id, cutoff, rows)
            total += archived
            if not more:
                break
    return total


@transaction.atomic
def _archive_batch(organization: Organization, talk_id: int, cutoff: datetime, rows: _RowMaker) -> tuple[int, bool]:
    """Archive up to ARCHIVE_BATCH messages. Returns how many, and whether there may be more to archive."""
    talk = TalkSettings.objects.select_for_update().get(id=talk_id)
    batch = list(_messages(organization, after_id=talk.archived_through_id)[:ARCHIVE_BATCH])
    ready: list[Message] = []
    for message in batch:
        if message.created_at > cutoff:
            break
        ready.append(message)
    if not ready:
        return 0, False
    writer = _LogWriter(organization)
    try:
        for message, row in zip(ready, rows.rows(ready), strict=True):
            writer.add(rows.day(message), message.id, row)
        writer.write()
        talk.archived_through_id = ready[-1].id
        talk.save(update_fields=["archived_through_id"])
    except BaseException:
        # Nothing of this batch commits: files it created are removed here; what it appended to existing
        # files lies beyond their committed size and is cut off by the next run.
        writer.discard_created()
        raise
    return len(ready), len(ready) == len(batch) == ARCHIVE_BATCH


@dataclass
class _Part:
    log: TalkLogFile
    new: bool
    rows: list[list[str]]


class _LogWriter:
    """The parts one archive batch appends to, and the rows for each."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self.max_messages = int(settings.TALK_LOG_MAX_MESSAGES)
        self.open_parts: dict[date, _Part] = {}
        self.parts: list[_Part] = []
        self.created: list[Path] = []

    def add(self, day: date, message_id: int, row: list[str]) -> None:
        part = self.open_parts.get(day) or self._open_part(day)
        if part.log.message_count >= self.max_messages:
            part = self._new_part(day, part.log.part + 1)
        part.rows.append(row)
        part.log.message_count += 1
        if part.log.first_message_id is None:
            part.log.first_message_id = message_id
        part.log.last_message_id = message_id

    def _open_part(self, day: date) -> _Part:
        last = TalkLogFile.objects.filter(organization=self.organization, day=day).order_by("-part").first()
        if last is None:
            return self._new_part(day, 1)
        if last.message_count < self.max_messages and not _intact(last):
            # Appending to a file that lost committed bytes would bury the loss; start the next part.
            logger.error("talk log %s (%s) is missing or shorter than its committed size", last.id, last.stored_name)
            return self._new_part(day, last.part + 1)
        part = _Part(log=last, new=False, rows=[])
        self.open_parts[day] = part
        self.parts.append(part)
        return part

    def _new_part(self, day: date, number: int) -> _Part:
        log = TalkLogFile(organization=self.organization, day=day, part=number, stored_name=secrets.token_urlsafe(24))
        part = _Part(log=log, new=True, rows=[])
        self.open_parts[day] = part
        self.parts.append(part)
        return part

    def write(self) -> None:
        """Append each part's rows to its file (new files get the BOM and the header), fsync, then save the
        rows of the parts. Runs inside the batch's transaction."""
        for part in self.parts:
            if not part.rows:
                continue
            data = _csv_bytes(part.rows, header=part.new)
            path = talk_log_path(part.log.stored_name)
            if part.new:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                self.created.append(path)
            else:
                descriptor = os.open(path, os.O_WRONLY)
            with os.fdopen(descriptor, "wb") as file:
                # Anything beyond the committed size was written by a run that never committed.
                file.truncate(part.log.size)
                file.seek(part.log.size)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            part.log.size += len(data)
            part.log.updated_at = timezone.now()
            part.log.save()
        if self.created:
            _fsync_directory(Path(settings.TALK_LOGS_DIR))

    def discard_created(self) -> None:
        for path in self.created:
            path.unlink(missing_ok=True)


def _intact(log: TalkLogFile) -> bool:
    try:
        return talk_log_path(log.stored_name).stat().st_size >= log.size
    except OSError:
        return False


def _fsync_directory(directory: Path) -> None:
    """Make new directory entries durable, so a committed log file never vanishes in a power cut."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- rows -----------------------------------------------------------------------------------------------


def _messages(organization: Organization, *, after_id: int) -> QuerySet[Message]:
    return (
        Message.objects.filter(room__organization=organization, id__gt=after_id)
        .select_related("room__department", "sender", "attachment")
        .order_by("id")
    )


def _header() -> list[str]:
    return [_("Time"), _("Room"), _("Sender"), _("Message"), _("Attachment")]


def _csv_bytes(rows: Sequence[Sequence[str]], *, header: bool) -> bytes:
    """Rows as CSV (CRLF, every cell through the directory export's formula guard); with `header`, the
    start of a file: the BOM and the header row first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow([excel_safe(cell) for cell in _header()])
    for row in rows:
        writer.writerow([excel_safe(cell) for cell in row])
    data = out.getvalue().encode("utf-8")
    return BOM + data if header else data


class _RowMaker:
    """Turns messages into rows: time, room, sender, message, attachment name. Remembers the names of 1:1
    rooms across batches, so a batch costs one query for its messages and at most one for new 1:1 rooms."""

    def __init__(self) -> None:
        self.zone = ZoneInfo(settings.TIME_ZONE)
        self._direct_names: dict[int, str] = {}

    def day(self, message: Message) -> date:
        return message.created_at.astimezone(self.zone).date()

    def rows(self, messages: Sequence[Message]) -> list[list[str]]:
        self._name_direct_rooms(messages)
        deleted = _("(deleted)")
        return [
            [
                message.created_at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S"),
                self._room_name(message),
                f"{message.sender.display_name} ({message.sender.login_id})" if message.sender else "",
                deleted if message.deleted_at is not None else message.body,
                message.attachment.name if message.attachment and message.deleted_at is None else "",
            ]
            for message in messages
        ]

    def _room_name(self, message: Message) -> str:
        room = message.room
        if room.kind == RoomKind.DEPARTMENT and room.department is not None:
            return room.department.name
        if room.kind == RoomKind.DIRECT:
            return self._direct_names.get(room.id, room.name)
        return room.name

    def _name_direct_rooms(self, messages: Sequence[Message]) -> None:
        pairs: dict[int, tuple[int, int]] = {}
        for message in messages:
            room = message.room
            if room.kind != RoomKind.DIRECT or room.id in self._direct_names or room.id in pairs:
                continue
            low, _sep, high = (room.direct_key or "").partition(":")
            if low.isdigit() and high.isdigit():
                pairs[room.id] = (int(low), int(high))
            else:
                self._direct_names[room.id] = room.name
        if not pairs:
            return
        wanted = {uid for pair in pairs.values() for uid in pair}
        people = User.objects.filter(id__in=wanted).only("id", "last_name", "first_name", "login_id").order_by()
        names = {person.id: person.display_name for person in people}
        for room_id, (low_id, high_id) in pairs.items():
            self._direct_names[room_id] = f"{names.get(low_id, '')} ⇔ {names.get(high_id, '')}"


# --- retention ------------------------------------------------------------------------------------------


def talk_retention_apply(*, organization: Organization, now: datetime | None = None) -> int:
    """Remove the organisation's messages older than its retention period, with their attachments (rows,
    and the stored files after commit), and return how many messages were removed. Only archived messages
    are removed (run `talk_log_archive` first); the log files stay. Does nothing without a retention period.
    Works in batches of RETENTION_BATCH messages, one transaction each."""
    talk = talk_settings_get(organization=organization)
    if talk.retention_days is None:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=talk.retention_days)
    removed = 0
    while True:
        count = _retention_batch(organization, cutoff, talk.archived_through_id)
        removed += count
        if count < RETENTION_BATCH:
            return removed


@transaction.atomic
def _retention_batch(organization: Organization, cutoff: datetime, archived_through_id: int) -> int:
    found = list(
        Message.objects.filter(room__organization=organization, created_at__lt=cutoff, id__lte=archived_through_id)
        .order_by("id")
        .values_list("id", "attachment_id")[:RETENTION_BATCH]
    )
    if not found:
        return 0
    message_ids = [message_id for message_id, _attachment in found]
    attachment_ids = [attachment for _message, attachment in found if attachment is not None]
    # Messages first: deleting an attachment first would set each message's attachment to NULL, row by row.
    Message.objects.filter(id__in=message_ids).delete()
    if attachment_ids:
        attachments = Attachment.objects.filter(id__in=attachment_ids)
        stored_names = list(attachments.values_list("stored_name", flat=True))
        attachments.delete()
        transaction.on_commit(lambda: _files_remove(stored_names), robust=True)
    return len(message_ids)


def _files_remove(stored_names: Sequence[str]) -> None:
    for stored_name in stored_names:
        file_remove(stored_name)
