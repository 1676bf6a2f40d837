"""Safety data: the JMA feeds and documents, and the safety confirmation (incidents, sends, deliveries, answers)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class JmaFeed(models.Model):
    """A PULL feed (Atom) and what the last conditional GET told us about it."""

    url = models.URLField(max_length=500, unique=True)
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.url


class JmaSource(models.TextChoices):
    PULL = "pull", "pull"
    PUSH = "push", "push"
    FILE = "file", "file"


class JmaDocument(models.Model):
    """One JMA XML message, keyed by its document URL, stored exactly as received with its parsed summary.

    Only documents that parse are stored: a document that fails to parse leaves no row, so it can never be
    mistaken for a report, and the poller fetches it again on its next run."""

    url = models.CharField(max_length=500, unique=True)
    source = models.CharField(max_length=8, choices=JmaSource.choices)
    raw = models.BinaryField()
    sha256 = models.CharField(max_length=64, db_index=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10)
    info_type = models.CharField(max_length=10)
    kind = models.CharField(max_length=16, db_index=True)
    type_code = models.CharField(max_length=16, blank=True)
    event_ids = models.JSONField(default=list)
    serial = models.IntegerField(null=True, blank=True)
    report_datetime = models.DateTimeField(null=True, blank=True, db_index=True)
    headline = models.TextField(blank=True)
    # report.inspect_dict() plus epicenter_name, magnitude and origin_time.
    summary = models.JSONField(default=dict)
    # When automatic dispatch decided on it for every organisation; the scan picks up any a crash left undecided.
    evaluated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-report_datetime", "-id"]
        indexes = [models.Index(fields=["-received_at", "-id"], name="jmadoc_latest")]

    def __str__(self) -> str:
        return f"{self.title} {self.url}"

    @property
    def is_drill(self) -> bool:
        return self.status != "通常"


# --- Safety confirmation (安否確認): templates, incidents, dispatches, deliveries, answers -------------------


class MessageTemplate(models.Model):
    """An organisation's reusable text (定型文) for incident titles and messages."""

    organization = models.ForeignKey("directory.Organization", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField(max_length=5000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class IncidentStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    ACCEPTING = "accepting", _("Accepting answers")
    SENDING = "sending", _("Sending")
    COMPLETED = "completed", _("Completed")


class Incident(models.Model):
    """One safety check: what happened, the question form, and its state. Answers are accepted while it is
    accepting or sending; completing it closes answers and clears the directory badges."""

    organization = models.ForeignKey("directory.Organization", on_delete=models.CASCADE, related_name="incidents")
    title = models.CharField(max_length=200)
    message = models.TextField(max_length=5000)
    status = models.CharField(max_length=10, choices=IncidentStatus.choices, default=IncidentStatus.DRAFT)
    tally_start_at = models.DateTimeField()
    end_notice_at = models.DateTimeField(null=True, blank=True)
    end_notice_addresses = models.JSONField(default=list, blank=True)
    end_notice_sent_at = models.DateTimeField(null=True, blank=True)
    collect_location = models.BooleanField(default=False)
    # The question form: a list of safety.questions.Question dicts; [] means "no questions" (no tally).
    questions = models.JSONField(default=list, blank=True)
    is_drill = models.BooleanField(default=False)
    # People sent the incident's link when it opens (chosen administrators).
    notify_user_ids = models.JSONField(default=list, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey("directory.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    opened_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(
        "directory.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The instruction room (対策室): a talk room of the people chosen to decide what to do next.
    room = models.OneToOneField("chat.Room", null=True, blank=True, on_delete=models.SET_NULL, related_name="incident")
    # Automatic incidents: the JMA event they answer ("earthquake|通常|20240101161010") and their title in each
    # language ({"ja": "災害発生：…", "en": "Disaster occurred: …"}), which every recipient gets in their own.
    jma_event = models.CharField(max_length=200, blank=True)
    titles = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "status"], name="incident_org_status")]

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status in (IncidentStatus.ACCEPTING, IncidentStatus.SENDING)

    def title_in(self, language: str) -> str:
        """The title a person reads: an automatic incident's in their language, else the one title."""
        return str(self.titles.get(language) or self.title)

    @property
    def display_title(self) -> str:
        """The title in the language of the page being rendered."""
        return self.title_in((translation.get_language() or "ja")[:2])


class Dispatch(models.Model):
    """One send (the first, or a resend) of an incident to a set of people. Its delivery rows are written with
    it; `dispatch_run` sends them, and the `safety_scan` beat task restarts any run whose heartbeat stopped."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="dispatches")
    number = models.PositiveIntegerField()
    # {"mode": "everyone" | "filter" | "chosen", ...filter fields}: what the sender asked for.
    target = models.JSONField(default=dict)
    recipients = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey("directory.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["incident_id", "number"]
        constraints = [models.UniqueConstraint(fields=["incident", "number"], name="dispatch_number_unique")]
        indexes = [models.Index(fields=["finished_at"], name="dispatch_unfinished")]

    def __str__(self) -> str:
        return f"{self.incident_id}#{self.number}"


class AnswerStatus(models.TextChoices):
    """The safety answer, denormalised on the recipient so the tally is one GROUP BY."""

    NONE = "", _("No answer")
    SAFE = "safe", _("Safe")
    MINOR = "minor", _("Minor injury")
    SERIOUS = "serious", _("Serious injury")
    # Answered a form without the safety question.
    ANSWERED = "answered", _("Answered")


class Recipient(models.Model):
    """A person asked by an incident (by any of its sends), with their current answer. One row per (incident,
    person), so resends merge into one tally (合算集計)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="recipients")
    person = models.ForeignKey("directory.User", on_delete=models.CASCADE, related_name="safety_requests")
    first_dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=AnswerStatus.choices, blank=True, default="")
    needs_help = models.BooleanField(default=False)
    answer = models.ForeignKey("Answer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    answer_count = models.PositiveIntegerField(default=0)
    first_answered_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Escalation: when the person, still unanswered, was sent again on every channel (once per incident).
    escalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["incident", "person"], name="recipient_unique")]
        indexes = [models.Index(fields=["incident", "status"], name="recipient_incident_status")]

    def __str__(self) -> str:
        return f"{self.incident_id}:{self.person_id}"


class AnswerSource(models.TextChoices):
    APP = "app", _("In the app")
    LINK = "link", _("From the link")
    PUSH = "push", _("From the notification")
    PROXY = "proxy", _("Proxy answer")


class Answer(models.Model):
    """Every answer ever given, kept as history; the recipient points at the latest."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="answers")
    person = models.ForeignKey("directory.User", on_delete=models.CASCADE, related_name="+")
    # {question key: choice key | [choice keys] | text}
    values = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=AnswerStatus.choices, blank=True, default="")
    needs_help = models.BooleanField(default=False)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    accuracy = models.FloatField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=AnswerSource.choices)
    # Who entered a proxy answer, and how they reached the person.
    entered_by = models.ForeignKey("directory.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    proxy_note = models.CharField(max_length=200, blank=True)
    # The browser's own id for this answer (a UUID): an answer queued offline and sent twice is kept once.
    client_key = models.CharField(max_length=40, blank=True, default="", db_default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["incident", "person", "created_at"], name="answer_history")]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "person", "client_key"],
                condition=~models.Q(client_key=""),
                name="answer_client_key_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.incident_id}:{self.person_id}@{self.created_at:%H:%M:%S}"


class Channel(models.TextChoices):
    PUSH = "push", _("Push")
    EMAIL = "email", _("E-mail")
    INAPP = "inapp", _("In the app")


class DeliveryState(models.TextChoices):
    """queued → sent (the push service or SMTP server accepted it) → delivered (the service worker received the
    push and said so) → opened (the notification was tapped, or the link opened) → answered; or failed. A state
    only moves forward (see DELIVERY_RANK): a late report never takes an answered row back."""

    QUEUED = "queued", _("Queued")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    OPENED = "opened", pgettext_lazy("delivery state", "Opened")
    ANSWERED = "answered", _("Answered")
    FAILED = "failed", _("Failed")


# How far a delivery got. A failed row that is then reported delivered or opened evidently arrived.
DELIVERY_RANK = {"queued": 0, "failed": 0, "sent": 1, "delivered": 2, "opened": 3, "answered": 4}


class Delivery(models.Model):
    """One channel of one person for one incident. Unique per (incident, person, channel): a retry or a resumed
    run never sends twice; a resend re-queues the row with the next `round`.

    A sender claims queued rows by setting `claimed_at`; a claim older than SAFETY_CLAIM_STALE_SECONDS is a
    dead worker's, and is claimed again."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="deliveries")
    person = models.ForeignKey("directory.User", on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=5, choices=Channel.choices)
    dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="deliveries")
    round = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.QUEUED)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["incident", "person", "channel"], name="delivery_unique"),
        ]
        indexes = [
            models.Index(fields=["dispatch", "state"], name="delivery_dispatch_state"),
            # A sender's claim: the queued rows of one send and channel in id order, without walking past the
            # rows already sent (the claim of the last batch of a large send would otherwise read them all).
            models.Index(
                fields=["dispatch", "channel", "id"], condition=models.Q(state="queued"), name="delivery_claim"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.incident_id}:{self.person_id}:{self.channel}={self.state}"


class Instruction(models.Model):
    """An instruction (対策指示) to everyone an incident asked. It streams to the open boards, reaches people by
    web push and in the app, and shows on their answer page, newest first."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="instructions")
    author = models.ForeignKey("directory.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    body = models.TextField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["incident", "-created_at"], name="instruction_latest")]

    def __str__(self) -> str:
        return f"{self.incident_id}:{self.body[:30]}"


# --- Automatic dispatch from JMA reports ---------------------------------------------------------------------------


class Hazard(models.TextChoices):
    EARTHQUAKE = "earthquake", _("Earthquake")
    TSUNAMI = "tsunami", _("Tsunami")
    SPECIAL_WARNING = "special_warning", _("Special warning")


class TsunamiLevel(models.TextChoices):
    ADVISORY = "advisory", _("Tsunami advisory (津波注意報)")
    WARNING = "warning", _("Tsunami warning (津波警報)")
    MAJOR = "major", _("Major tsunami warning (大津波警報)")


class RuleTarget(models.TextChoices):
    BASED = "based", _("People based in the places hit")
    CHOSEN = "chosen", _("Chosen departments and people")


class SafetySettings(models.Model):
    """An organisation's automatic-dispatch settings and the decision state JMA reports left (one row, which is
    also the lock that puts one organisation's decisions in order)."""

    organization = models.OneToOneField(
        "directory.Organization", on_delete=models.CASCADE, related_name="safety_settings"
    )
    # 訓練 messages dispatch (as drills) only while this is on.
    drill_mode = models.BooleanField(default=False)
    # safety.jma.decide state: the events seen, who each report reached, recent dispatches for suppression.
    jma_state = models.JSONField(default=dict, blank=True)
    # Escalation: a person still unanswered this many minutes after they were sent to is sent again on every
    # channel they have (0: never).
    escalate_after_minutes = models.PositiveIntegerField(default=30)
    # Contact verification (連絡先の確認) every this many days (0: only when an administrator starts one), and
    # when the next scheduled one is due.
    check_every_days = models.PositiveIntegerField(default=0)
    check_next_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"settings:{self.organization_id}"


class DispatchRule(models.Model):
    """When a JMA report sends a safety check by itself, to whom, with which form and message."""

    organization = models.ForeignKey("directory.Organization", on_delete=models.CASCADE, related_name="dispatch_rules")
    name = models.CharField(max_length=100)
    hazard = models.CharField(max_length=16, choices=Hazard.choices)
    enabled = models.BooleanField(default=True)
    # Where: prefecture codes (all hazards), and finer places by hazard: 地震情報細分区域 (3 digits), 津波予報区
    # coasts (3 digits) or municipalities (7 digits). Both empty: anywhere in Japan.
    prefectures = models.JSONField(default=list, blank=True)
    areas = models.JSONField(default=list, blank=True)
    # The threshold, by hazard: an intensity class, a tsunami level, or the special-warning kinds ([]: all).
    min_intensity = models.CharField(max_length=2, default="5+")
    tsunami_level = models.CharField(max_length=8, choices=TsunamiLevel.choices, default=TsunamiLevel.WARNING)
    special_kinds = models.JSONField(default=list, blank=True)
    # Who: people whose REGION_CODE is a prefecture hit (recommended), or the chosen departments and people.
    target_mode = models.CharField(max_length=8, choices=RuleTarget.choices, default=RuleTarget.BASED)
    department_ids = models.JSONField(default=list, blank=True)
    person_ids = models.JSONField(default=list, blank=True)
    # The question form (None: the default form) and the message template (None: the built-in message).
    questions = models.JSONField(null=True, blank=True)
    template = models.ForeignKey(MessageTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Wait this long before sending (a 取消 in the meantime sends nothing); ignore weaker aftershocks in the
    # same prefecture for this long after a dispatch.
    hold_minutes = models.PositiveIntegerField(default=0)
    suppress_minutes = models.PositiveIntegerField(default=0)
    is_preset = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hazard", "id"]

    def __str__(self) -> str:
        return self.name


class JmaDecision(models.Model):
    """The audit log: what one JMA report decided for one organisation, and why. A decision with people to
    notify is also the schedule: it is executed once its hold is over (`due_at`), by whoever gets there first."""

    organization = models.ForeignKey("directory.Organization", on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(JmaDocument, on_delete=models.CASCADE, related_name="decisions")
    decided_at = models.DateTimeField(default=timezone.now)
    decision = models.CharField(max_length=8)  # dispatch / update / withdraw / ignore
    hazard = models.CharField(max_length=16, blank=True)
    drill = models.BooleanField(default=False)
    reason = models.TextField()
    reason_code = models.CharField(max_length=24)
    rule_ids = models.JSONField(default=list)
    new_person_ids = models.JSONField(default=list)
    withdrawn_person_ids = models.JSONField(default=list)
    # safety.jma.decide.Action dicts; the incident ids they went to once executed.
    actions = models.JSONField(default=list)
    incident_ids = models.JSONField(default=list)
    due_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-decided_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["organization", "document"], name="jmadecision_unique")]
        indexes = [
            models.Index(fields=["organization", "-decided_at"], name="jmadecision_log"),
            models.Index(fields=["due_at"], condition=models.Q(executed_at__isnull=True), name="jmadecision_due"),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.document_id}={self.decision}"


class ContactCheck(models.Model):
    """A contact verification run (連絡先の確認): everyone gets a test notification on every channel they have and
    confirms it with one tap. The problems it finds are shown to administrators, who can send again to just
    those people (the next `round`)."""

    organization = models.ForeignKey("directory.Organization", on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey("directory.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    scheduled = models.BooleanField(default=False)
    people = models.PositiveIntegerField(default=0)
    round = models.PositiveIntegerField(default=1)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="contactcheck_latest")]

    def __str__(self) -> str:
        return f"check:{self.organization_id}:{self.id}"


class ContactCheckPerson(models.Model):
    """One person of a check: whether (and how) they confirmed."""

    check_run = models.ForeignKey(ContactCheck, on_delete=models.CASCADE, related_name="persons")
    person = models.ForeignKey("directory.User", on_delete=models.CASCADE, related_name="+")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmed_via = models.CharField(max_length=5, blank=True)  # push / email / inapp
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["check_run", "person"], name="contactcheckperson_unique")]

    def __str__(self) -> str:
        return f"{self.check_run_id}:{self.person_id}"


class ContactCheckDelivery(models.Model):
    """One channel of one person in a check (push or e-mail), with the same states as an incident's delivery."""

    check_run = models.ForeignKey(ContactCheck, on_delete=models.CASCADE, related_name="deliveries")
    person = models.ForeignKey("directory.User", on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=5, choices=Channel.choices)
    round = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.QUEUED)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["check_run", "person", "channel"], name="contactcheckdelivery_unique")
        ]
        indexes = [models.Index(fields=["check_run", "state"], name="contactcheckdelivery_state")]

    def __str__(self) -> str:
        return f"{self.check_run_id}:{self.person_id}:{self.channel}={self.state}"
