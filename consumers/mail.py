"""E-mail delivery: one SMTP connection per batch, a plain-text part always, each in its reader's language.

A message's `private` addresses (a person's private contacts) are never written to a log or to the error a
delivery keeps: `redact_private` replaces them (and their local part) with "(private address)". They get the
message as Bcc when the person also has a work address, so the copy at work does not name them either."""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import sanitize_address
from django.utils import translation

logger = logging.getLogger(__name__)

PRIVATE_MARK = "(private address)"
# A local part shorter than this is not redacted on its own (it would blank out ordinary words).
MIN_REDACTED_LOCAL_PART = 3


class MailDict(TypedDict):
    to: list[str]
    subject: str
    body: str
    html: str | None
    language: str
    # Those of `to` that are private contacts (see MailMessage.private); absent = none.
    private: NotRequired[list[str]]
    message_id: NotRequired[str]


@dataclass(frozen=True)
class MailMessage:
    to: list[str]
    subject: str
    body: str
    html: str | None = None
    language: str = "ja"
    # Those of `to` that are a person's private contacts: never written to a log or a delivery error.
    # (A sequence, not only a tuple: the mail_send task rebuilds messages from JSON lists.)
    private: Sequence[str] = ()
    # A fixed Message-ID ("<...@...>"): a copy sent again after a crash (the same person, incident and round)
    # carries the same one, so mail systems that drop duplicate Message-IDs show it once.
    message_id: str | None = None

    def as_dict(self) -> MailDict:
        data = MailDict(to=list(self.to), subject=self.subject, body=self.body, html=self.html, language=self.language)
        if self.private:
            data["private"] = list(self.private)
        if self.message_id:
            data["message_id"] = self.message_id
        return data


def redact_private(text: str, private: Iterable[str], *, others: Iterable[str] = ()) -> str:
    """`text` with every private address, and its local part on its own, replaced by PRIVATE_MARK
    (case-insensitively: a server may echo an address in another case). A local part that one of `others` (the
    message's work addresses) shares is left alone: blanking it there would tell what the private one is."""
    shown = {a.lower().rpartition("@")[0] for a in others}
    # An internationalised domain goes out (and comes back in a refusal) as punycode: redact that form too.
    forms = {a for a in private if a} | {_ascii_form(a) for a in private if a}
    for address in sorted(forms, key=len, reverse=True):
        text = re.sub(re.escape(address), PRIVATE_MARK, text, flags=re.IGNORECASE)
        local = address.rpartition("@")[0]
        if len(local) >= MIN_REDACTED_LOCAL_PART and local.lower() not in shown:
            text = re.sub(re.escape(local), PRIVATE_MARK, text, flags=re.IGNORECASE)
    return text


def _ascii_form(address: str) -> str:
    try:
        return sanitize_address(address, "utf-8")
    except (ValueError, IndexError, UnicodeError):
        return address


def recipients_for_log(message: MailMessage) -> str:
    """The message's recipients as a log may show them: the private ones as PRIVATE_MARK."""
    private = {a.lower() for a in message.private}
    return ", ".join(PRIVATE_MARK if a.lower() in private else a for a in message.to)


class MailInterrupted(Exception):
    """The connection failed part-way; `remaining` were not sent."""

    def __init__(self, remaining: Sequence[MailMessage]) -> None:
        super().__init__(f"{len(remaining)} messages not sent")
        self.remaining = list(remaining)


def mail_send_batch(messages: Sequence[MailMessage]) -> int:
    """Send every message over one connection. Returns the number sent.

    A recipient the server refuses is logged and skipped, so one bad address never stops the rest; a lost
    connection raises MailInterrupted with the messages still to send."""
    return sum(error is None for error in mail_send_results(messages))


def mail_send_results(
    messages: Sequence[MailMessage], *, meanwhile: Callable[[], None] | None = None, every: float = 10.0
) -> list[str | None]:
    """Send every message over one connection; one result per message: None when the server accepted it,
    else why it refused. A lost connection raises MailInterrupted with the messages still to send.
    `meanwhile` is called between messages at most every `every` seconds (a sender renewing its claim: a slow
    server must not make the batch look abandoned)."""
    if not messages:
        return []
    last_call = time.monotonic()
    connection = get_connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError):
        raise MailInterrupted(messages) from None
    results: list[str | None] = []
    try:
        for index, message in enumerate(messages):
            if meanwhile is not None and time.monotonic() - last_call >= every:
                meanwhile()
                last_call = time.monotonic()
            try:
                sent = connection.send_messages([_email(message, connection)]) or 0
                results.append(None if sent else "not sent")
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                # The server's reply names the addresses it refused: private ones never reach a log or an error.
                private = {a.lower() for a in message.private}
                others = [a for a in message.to if a.lower() not in private]
                reason = redact_private(str(exc), message.private, others=others)
                logger.warning("mail to %s refused: %s", recipients_for_log(message), reason)
                results.append(f"refused: {reason}"[:200])
            except (smtplib.SMTPException, OSError):
                raise MailInterrupted(messages[index:]) from None
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.close()
    return results


def _email(message: MailMessage, connection: Any) -> EmailMultiAlternatives:
    private = {a.lower() for a in message.private}
    work = [a for a in message.to if a.lower() not in private]
    hidden = [a for a in message.to if a.lower() in private]
    # With a work address too, the private ones go as Bcc: the copy read at work must not name them.
    to, bcc = (work, hidden) if work else (hidden, [])
    email = EmailMultiAlternatives(
        subject=message.subject.replace("\n", " ").strip(),
        body=message.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
        bcc=bcc,
        connection=connection,
        headers={
            "Content-Language": message.language,
            "Auto-Submitted": "auto-generated",
            **({"Message-ID": message.message_id} if message.message_id else {}),
        },
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    return email


def mail_for_people(
    people: Iterable[Any], render: Callable[[Any], tuple[str, str]], *, extra_addresses: bool = True
) -> list[MailMessage]:
    """One message per person with an address, rendered (subject, body) in that person's language."""
    messages = []
    for person in people:
        to = [a for a in (person.email, person.email2 if extra_addresses else "") if a]
        if not to:
            continue
        with translation.override(person.language or settings.LANGUAGE_CODE):
            subject, body = render(person)
        messages.append(MailMessage(to=to, subject=subject, body=body, language=person.language))
    return messages


def message_id_for(*parts: object) -> str:
    """A Message-ID that is the same whenever it is made from the same `parts` (the incident, its creation time,
    the person, the round: a copy sent again after a crash), on the sender's domain. It is a keyed hash: it shows
    no ids, and another installation, or this one restored from a backup (whose ids start again), never makes
    the same one, which a mail system that drops duplicate Message-IDs would otherwise take for a copy."""
    from django.utils.crypto import salted_hmac

    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2].strip(" >") or "localhost"
    digest = salted_hmac("tsunagu.message-id", "|".join(str(p) for p in parts), algorithm="sha256").hexdigest()
    return f"<{digest[:40]}@{domain}>"
