"""Talk: rooms, their members and messages, attachments, the organisation's talk settings and talk logs.

Rooms come in four kinds. Direct (1:1) and group rooms hold their members as `Membership` rows. A
department room's members are whoever the directory puts in that department today (active, talk users);
their `Membership` row, created when they first read, only holds their read position. Instruction rooms are
attached to a safety incident by the safety app (which points at the room); only people the room allows may
post there.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from directory.models import Department, Organization


class FilePolicy(models.TextChoices):
    ALL_EXCEPT_EXECUTABLES = "all_except_executables", _("All files except some executables")
    IMAGES_ONLY = "images_only", _("Images only (JPEG, PNG, GIF)")
    DISABLED = "disabled", _("No files")


class TalkSettings(models.Model):
    """One per organisation, created on first use (`talk_settings_get`)."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="talk_settings")
    file_policy = models.CharField(max_length=30, choices=FilePolicy.choices, default=FilePolicy.ALL_EXCEPT_EXECUTABLES)
    # Messages older than this many days are removed by the daily retention task; None keeps them forever.
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    # People the talk administrator allowed to download talk logs (talk administrators always may).
    log_downloaders = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    # Every message with an id up to this one is in a talk log file.
    archived_through_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"talk settings of {self.organization_id}"


class RoomKind(models.TextChoices):
    DIRECT = "direct", _("1:1")
    GROUP = "group", _("Group")
    DEPARTMENT = "department", _("Department")
    INSTRUCTION = "instruction", _("Instructions")


class Room(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="rooms")
    kind = models.CharField(max_length=20, choices=RoomKind.choices)
    name = models.CharField(max_length=100, blank=True)
    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    # "<smaller user id>:<larger user id>" for a 1:1 room, so a pair has exactly one.
    direct_key = models.CharField(max_length=40, null=True, blank=True)  # noqa: DJ001
    # False for rooms where only the room's administrators post (instruction rooms).
    members_may_post = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "direct_key"], condition=Q(direct_key__isnull=False), name="room_direct_unique"
            ),
            models.UniqueConstraint(
                fields=["department"], condition=Q(kind="department"), name="room_department_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


class Membership(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships")
    # Room administrators rename the room and remove other members (the creator of a group room).
    is_admin = models.BooleanField(default=False)
    # The id of the newest message this person has read in this room.
    last_read_id = models.BigIntegerField(default=0)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.room_id}"


class Attachment(models.Model):
    """An uploaded file, stored under a random name outside the static root (TALK_FILES_DIR)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=255)  # as the uploader named it, shown and offered on download
    stored_name = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=100)  # from the sniffed content, never from the client
    is_image = models.BooleanField(default=False)
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    body = models.TextField(blank=True)
    attachment = models.OneToOneField(
        Attachment, null=True, blank=True, on_delete=models.SET_NULL, related_name="message"
    )
    # The sender's own id for this message, so a retried send never posts twice.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["room", "sender", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique",
            )
        ]
        indexes = [
            models.Index(fields=["room", "id"], name="message_room_idx"),
            models.Index(fields=["created_at"], name="message_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.id}"


class TalkLogFile(models.Model):
    """One archived talk log: CSV (UTF-8 with a BOM) of an organisation's messages of one day, in parts of at
    most TALK_LOG_MAX_MESSAGES. The file grows while it is the day's open part; `size` is the length that
    committed, so an archive run that died half-way is cut back to it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="talk_logs")
    day = models.DateField()
    part = models.PositiveIntegerField(default=1)
    stored_name = models.CharField(max_length=64, unique=True)
    message_count = models.PositiveIntegerField(default=0)
    size = models.BigIntegerField(default=0)
    first_message_id = models.BigIntegerField(null=True, blank=True)
    last_message_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "day", "part"], name="talk_log_part_unique")]
        ordering = ["-day", "-part"]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.day}#{self.part}"

    @property
    def filename(self) -> str:
        return f"talk-log-{self.day:%Y%m%d}-{self.part:02d}.csv"
