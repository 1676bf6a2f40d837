"""E-mail delivery: one SMTP connection per batch, a plain-text part always, each in its reader's language."""

from __future__ import annotations

import contextlib
import logging
import smtplib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils import translation

logger = logging.getLogger(__name__)


class MailDict(TypedDict):
    to: list[str]
    subject: str
    body: str
    html: str | None
    language: str


@dataclass(frozen=True)
class MailMessage:
    to: list[str]
    subject: str
    body: str
    html: str | None = None
    language: str = "ja"

    def as_dict(self) -> MailDict:
        return MailDict(to=list(self.to), subject=self.subject, body=self.body, html=self.html, language=self.language)


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


def mail_send_results(messages: Sequence[MailMessage]) -> list[str | None]:
    """Send every message over one connection; one result per message: None when the server accepted it,
    else why it refused. A lost connection raises MailInterrupted with the messages still to send."""
    if not messages:
        return []
    connection = get_connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError):
        raise MailInterrupted(messages) from None
    results: list[str | None] = []
    try:
        for index, message in enumerate(messages):
            try:
                sent = connection.send_messages([_email(message, connection)]) or 0
                results.append(None if sent else "not sent")
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                logger.warning("mail to %s refused: %s", ", ".join(message.to), exc)
                results.append(f"refused: {exc}"[:200])
            except (smtplib.SMTPException, OSError):
                raise MailInterrupted(messages[index:]) from None
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.close()
    return results


def _email(message: MailMessage, connection: Any) -> EmailMultiAlternatives:
    email = EmailMultiAlternatives(
        subject=message.subject.replace("\n", " ").strip(),
        body=message.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=message.to,
        connection=connection,
        headers={"Content-Language": message.language, "Auto-Submitted": "auto-generated"},
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
