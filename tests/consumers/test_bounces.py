"""Bounce intake: RFC 3464 delivery status notifications and a provider's webhook, posted to
POST /api/mail/bounces/, mark addresses failing and fail the e-mail deliveries they bounced.

Real parts: PostgreSQL, aiosmtpd (`smtp_server`) for the mail the DSN answers, and DSN messages in the shape
Postfix writes them (tests/consumers/fixtures/)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from consumers.bounces import (
    MAX_REPORT_BYTES,
    WEBHOOK_MAX_EVENTS,
    Bounce,
    BounceParseError,
    address_recovered,
    bounce_record,
    dsn_parse,
    webhook_parse,
)
from consumers.models import BounceSource, MailAddressState
from safety.models import Delivery, DeliveryState
from tests.safety.conftest import incident_make, mail_recipients, safety_person, send

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "bounce-secret-token"
URL = "/api/mail/bounces/"


def fixture(name: str, *, crlf: bool = False) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def dsn(recipients: list[tuple[str, str, str, str]], *, headers: str = "Subject: x\n") -> bytes:
    """A DSN for (address, action, status, diagnostic) recipients, the returned message's headers attached."""
    blocks = "\n".join(
        f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\nDiagnostic-Code: smtp; {diagnostic}\n"
        for address, action, status, diagnostic in recipients
    )
    return (
        "From: MAILER-DAEMON@mail.acme.example (Mail Delivery System)\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"\n\n'
        "--B0UND\nContent-Type: text/plain\n\nThe mail system\n\n"
        "--B0UND\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mail.acme.example\nX-Postfix-Queue-ID: 4A1B22C0F1\n\n"
        f"{blocks}\n"
        f"--B0UND\nContent-Type: text/rfc822-headers\n\n{headers}\n--B0UND--\n"
    ).encode()


PLAIN_MAIL = b"From: a@example.com\nTo: b@example.com\nSubject: hello\n\nJust a mail.\n"
MDN = (
    b'Content-Type: multipart/report; report-type=disposition-notification; boundary="X"\n\n'
    b"--X\nContent-Type: message/disposition-notification\n\nFinal-Recipient: rfc822; a@example.com\n"
    b"Disposition: manual-action/MDN-sent-manually; displayed\n\n--X--\n"
)
NO_RECIPIENT_PART = (
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="X"\n\n'
    b"--X\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mail.acme.example\n\n--X--\n"
)
NO_STATUS_PART = b'Content-Type: multipart/report; report-type=delivery-status; boundary="X"\n\n--X\n\nhi\n--X--\n'


# --- the parser -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("crlf", [False, True])
def test_postfix_dsn_gives_the_failed_and_the_delayed_recipient(crlf: bool) -> None:
    bounces = dsn_parse(fixture("postfix_failed_and_delayed.eml", crlf=crlf))
    assert [(b.address, b.action, b.status, b.permanent) for b in bounces] == [
        ("nobody@example.net", "failed", "5.1.1", True),
        ("slow@example.org", "delayed", "4.4.1", False),
    ]
    assert bounces[0].diagnostic.startswith("550 5.1.1 <Nobody@Example.net>: Recipient address rejected")
    assert "\n" not in bounces[0].diagnostic


@pytest.mark.parametrize("crlf", [False, True])
def test_multi_recipient_dsn_leaves_out_relayed_recipients(crlf: bool) -> None:
    bounces = dsn_parse(fixture("multi_recipient.eml", crlf=crlf))
    assert [(b.address, b.status) for b in bounces] == [("hanako@acme.example", "5.2.2"), ("gone@example.com", "5.1.1")]
    assert all(b.permanent for b in bounces)


def test_dsn_with_an_mbox_from_line_and_a_failure_that_expired_in_the_queue() -> None:
    raw = b"From MAILER-DAEMON Thu Nov 20 09:15:02 2025\n" + dsn(
        [("late@example.com", "failed", "4.4.7", "delivery time expired")]
    )
    [bounce] = dsn_parse(raw)
    # given up on (the delivery failed), but not proof that the address is bad
    assert (bounce.gave_up, bounce.permanent) == (True, False)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(PLAIN_MAIL, id="plain-mail"),
        pytest.param(MDN, id="read-receipt"),
        pytest.param(NO_RECIPIENT_PART, id="no-per-recipient-part"),
        pytest.param(NO_STATUS_PART, id="no-status-part"),
        pytest.param(bytes(range(256)) * 40, id="binary-garbage"),
        pytest.param(dsn([("not-an-address", "failed", "5.1.1", "x")]), id="no-valid-recipient"),
        pytest.param(dsn([("a@example.com", "failed", "5.1.1", "x" * MAX_REPORT_BYTES)]), id="huge"),
    ],
)
def test_parser_refuses_what_is_not_a_dsn(raw: bytes) -> None:
    with pytest.raises(BounceParseError):
        dsn_parse(raw)


def test_webhook_events_map_to_bounces() -> None:
    bounces = webhook_parse(
        {
            "events": [
                {"email": " Gone@Example.com ", "type": "bounce", "status": "5.1.1", "reason": "550 no such user"},
                {"email": "full@example.com", "type": "bounce", "status": "4.2.2"},
                {"email": "x@example.com", "type": "permanent"},
                {"email": "y@example.com", "type": "transient", "status": "4.4.1", "extra": 1},
                {"email": "z@example.com", "type": "complaint"},
            ]
        }
    )
    assert [(b.address, b.action, b.permanent) for b in bounces] == [
        ("gone@example.com", "failed", True),
        ("full@example.com", "delayed", False),
        ("x@example.com", "failed", True),
        ("y@example.com", "delayed", False),
        ("z@example.com", "complaint", False),
    ]


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"events": "x"},
        {"events": []},
        {"events": [1]},
        {"events": [{"email": "nope", "type": "bounce"}]},
        {"events": [{"email": "rfc822; a@example.com", "type": "bounce"}]},
        {"events": [{"email": "a@example.com", "type": "opened"}]},
        {"events": [{"email": "a@example.com", "type": "bounce", "status": "550"}]},
        {"events": [{"email": "a@example.com", "type": "bounce", "reason": ["x"]}]},
        {"events": [{"email": "a@example.com", "type": "bounce"}] * (WEBHOOK_MAX_EVENTS + 1)},
    ],
)
def test_webhook_refuses_a_bad_shape(data: Any) -> None:
    with pytest.raises(BounceParseError):
        webhook_parse(data)


# --- the endpoint ---------------------------------------------------------------------------------------


@pytest.fixture
def bounce_token(settings: Any) -> str:
    settings.MAIL_BOUNCE_TOKEN = TOKEN
    return TOKEN


def post(body: bytes, content_type: str = "message/rfc822", token: str | None = TOKEN) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return Client().post(URL, data=body, content_type=content_type, **headers)


def states() -> dict[str, tuple[bool, int, str]]:
    return {s.address: (s.failing, s.bounce_count, s.last_status) for s in MailAddressState.objects.all()}


@pytest.mark.django_db
def test_posted_dsn_marks_the_failed_address_and_counts_the_delayed_one(bounce_token: str) -> None:
    response = post(fixture("postfix_failed_and_delayed.eml", crlf=True))
    assert response.status_code == 200, response.content
    assert response.json() == {"recorded": 2, "failing": ["nobody@example.net"], "deliveries_failed": 0}
    assert states() == {"nobody@example.net": (True, 1, "5.1.1"), "slow@example.org": (False, 1, "4.4.1")}
    state = MailAddressState.objects.get(address="nobody@example.net")
    assert state.source == "dsn" and state.last_bounce_at is not None
    assert "User unknown" in state.last_diagnostic

    # the same report again counts again; a later delay does not clear a failing address
    post(fixture("postfix_failed_and_delayed.eml"))
    post(dsn([("nobody@example.net", "delayed", "4.4.1", "timeout")]))
    assert states()["nobody@example.net"] == (True, 3, "4.4.1")


@pytest.mark.django_db
def test_dsn_posted_as_multipart_report_with_the_mime_body(bounce_token: str) -> None:
    raw = fixture("multi_recipient.eml")
    _head, _, body = raw.partition(b"\n\n")
    response = post(body, 'multipart/report; report-type="delivery-status"; boundary="=_report_1763600531"')
    assert response.status_code == 200, response.content
    assert response.json()["failing"] == ["gone@example.com", "hanako@acme.example"]


@pytest.mark.django_db
def test_webhook_json_records_events(bounce_token: str) -> None:
    events = {
        "events": [
            {"email": "gone@example.com", "type": "permanent", "status": "5.1.1", "reason": "no such user"},
            {"email": "slow@example.com", "type": "transient"},
        ]
    }
    response = post(json.dumps(events).encode(), "application/json")
    assert response.status_code == 200, response.content
    assert response.json()["failing"] == ["gone@example.com"]
    assert states() == {"gone@example.com": (True, 1, "5.1.1"), "slow@example.com": (False, 1, "delayed")}
    assert MailAddressState.objects.get(address="gone@example.com").source == "webhook"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("wrong", 401), ("", 401), (TOKEN + "x", 401)],
)
def test_a_missing_or_wrong_token_is_refused(bounce_token: str, token: str | None, status: int) -> None:
    response = post(fixture("postfix_failed_and_delayed.eml"), token=token)
    assert response.status_code == status
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not MailAddressState.objects.exists()


@pytest.mark.django_db
def test_endpoint_is_off_while_the_token_is_unset(settings: Any) -> None:
    settings.MAIL_BOUNCE_TOKEN = ""
    assert post(fixture("postfix_failed_and_delayed.eml"), token="").status_code == 404
    assert post(fixture("postfix_failed_and_delayed.eml"), token="anything").status_code == 404
    assert not MailAddressState.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        pytest.param(PLAIN_MAIL, "message/rfc822", 400, id="plain-mail"),
        pytest.param(MDN, "message/rfc822", 400, id="read-receipt"),
        pytest.param(NO_RECIPIENT_PART, "text/plain", 400, id="no-per-recipient-part"),
        pytest.param(b"", "message/rfc822", 400, id="empty"),
        pytest.param(b"  \r\n", "application/json", 400, id="blank"),
        pytest.param(bytes(range(256)) * 40, "message/rfc822", 400, id="binary-garbage"),
        pytest.param(b"\xff\xfe{", "application/json", 400, id="not-utf8-json"),
        pytest.param(b"[" * 100_000, "application/json", 400, id="deep-json"),
        pytest.param(b'{"events": [{"email": "x"}]}', "application/json", 400, id="bad-json-shape"),
        pytest.param(b"x" * (MAX_REPORT_BYTES + 1), "message/rfc822", 413, id="huge"),
        pytest.param(fixture("multi_recipient.eml"), "application/pdf", 415, id="other-type"),
    ],
)
def test_malformed_input_is_refused_and_changes_nothing(
    bounce_token: str, body: bytes, content_type: str, status: int
) -> None:
    response = post(body, content_type)
    assert response.status_code == status, response.content
    assert response.json()["code"].startswith("bounce_")
    assert response.json()["message"]
    assert not MailAddressState.objects.exists()


# --- deliveries -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bounce_of_a_real_mail_fails_that_persons_recent_email_delivery(
    org: Any, bounce_token: str, smtp_server: Any
) -> None:
    crisis = safety_person(org, "crisis", anpi=False)
    gone = safety_person(org, "gone", email="Gone@Example.COM")
    other = safety_person(org, "other", email="other@example.com")
    old_incident, incident = incident_make(org, crisis), incident_make(org, crisis, title="訓練")
    send(old_incident, crisis)
    send(incident, crisis)
    assert mail_recipients(smtp_server.messages).count("Gone@Example.COM") == 2
    Delivery.objects.filter(incident=old_incident).update(sent_at=timezone.now() - timedelta(days=8))

    # the DSN the receiving server would return for the mail aiosmtpd received
    returned = next(m for m in reversed(smtp_server.messages) if "Gone@Example.COM" in m.envelope_to)
    headers = "".join(f"{name}: {value}\n" for name, value in returned.items())
    response = post(
        dsn(
            [("Gone@Example.COM", "failed", "5.1.1", "550 5.1.1 <Gone@Example.COM>: User unknown")],
            headers=headers,
        )
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"recorded": 1, "failing": ["gone@example.com"], "deliveries_failed": 1}

    bounced = Delivery.objects.get(incident=incident, person=gone, channel="email")
    assert bounced.state == DeliveryState.FAILED
    assert bounced.error == "bounced: 5.1.1 550 5.1.1 <Gone@Example.COM>: User unknown"
    # older than the lookback, another person's, and another channel: unchanged
    assert Delivery.objects.get(incident=old_incident, person=gone, channel="email").state == DeliveryState.SENT
    assert Delivery.objects.get(incident=incident, person=other, channel="email").state == DeliveryState.SENT
    assert Delivery.objects.get(incident=incident, person=gone, channel="inapp").state == DeliveryState.SENT


@pytest.mark.django_db
def test_a_delay_or_a_second_working_address_leaves_the_delivery_sent(org: Any, bounce_token: str) -> None:
    crisis = safety_person(org, "crisis", anpi=False)
    two = safety_person(org, "two", email="first@example.com")
    two.email2 = "second@example.com"
    two.save(update_fields=["email2"])
    slow = safety_person(org, "slow", email="slow@example.com")
    incident = incident_make(org, crisis)
    send(incident, crisis)
    long_reason = "550 5.1.1 " + "very long diagnostic " * 20
    response = post(
        dsn([("first@example.com", "failed", "5.1.1", long_reason), ("slow@example.com", "delayed", "4.4.1", "t")])
    )
    assert response.json()["deliveries_failed"] == 0
    kept = Delivery.objects.get(incident=incident, person=two, channel="email")
    assert kept.state == DeliveryState.SENT and kept.error.startswith("bounced: 5.1.1")
    assert len(kept.error) == 200
    assert Delivery.objects.get(incident=incident, person=slow, channel="email").error == ""

    # once the second address bounces too, the delivery fails
    post(dsn([("second@example.com", "failed", "5.2.1", "disabled")]))
    failed = Delivery.objects.get(incident=incident, person=two, channel="email")
    assert (failed.state, failed.error) == (DeliveryState.FAILED, "bounced: 5.2.1 disabled")


@pytest.mark.django_db
def test_address_recovered_clears_failing_and_keeps_the_history() -> None:
    bounce_record(bounces=[Bounce("gone@example.com", "failed", "5.1.1", "x")], source=BounceSource.DSN)
    assert address_recovered(" Gone@Example.com ") is True
    assert address_recovered("gone@example.com") is False
    assert states() == {"gone@example.com": (False, 1, "5.1.1")}


def _private(person: Any, address: str) -> None:
    from directory.models import PrivateContact

    PrivateContact.objects.create(user=person, address=address, confirmed_at=timezone.now())


@pytest.mark.django_db
def test_a_working_private_address_keeps_the_delivery_and_a_bounced_one_fails_it_unnamed(
    org: Any, bounce_token: str
) -> None:
    crisis = safety_person(org, "crisis", anpi=False)
    kept = safety_person(org, "kept", email="work@example.com")
    _private(kept, "home@example.org")
    only = safety_person(org, "only")
    _private(only, "Private.Only@example.org")
    incident = incident_make(org, crisis)
    send(incident, crisis)

    # the work address bounced, the private copy may have arrived: still sent
    post(
        webhook := json.dumps(
            {"events": [{"email": "work@example.com", "type": "permanent", "status": "5.1.1"}]}
        ).encode(),
        "application/json",
    )
    assert Delivery.objects.get(incident=incident, person=kept, channel="email").state == DeliveryState.SENT
    # the person's only (private) address bounced: failed, and the error does not name it
    reason = "550 5.1.1 <private.only@example.org> unknown"
    events = {
        "events": [{"email": "private.only@example.org", "type": "permanent", "status": "5.1.1", "reason": reason}]
    }
    response = post(json.dumps(events).encode(), "application/json")
    assert response.json()["deliveries_failed"] == 1, webhook
    failed = Delivery.objects.get(incident=incident, person=only, channel="email")
    assert (failed.state, failed.error) == (DeliveryState.FAILED, "bounced: 5.1.1")


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["bad\u0000byte", "lone \ud800 surrogate"])
def test_a_report_with_unstorable_characters_is_recorded(bounce_token: str, reason: str) -> None:
    events = {"events": [{"email": "gone@example.com", "type": "permanent", "status": "5.1.1", "reason": reason}]}
    response = post(json.dumps(events).encode(), "application/json")
    assert response.status_code == 200, response.content
    assert "\x00" not in MailAddressState.objects.get(address="gone@example.com").last_diagnostic
