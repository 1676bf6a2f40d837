"""Private contacts: a person adds up to 3 private e-mail addresses of their own, each confirmed through the link
mailed to it before any safety notification goes there.

Real parts: PostgreSQL, aiosmtpd (`smtp_server`: the confirmation mail really arrives and its link is followed,
and a dispatch's safety mail reaches the confirmed address), and a second aiosmtpd that refuses a recipient
(what the mail layer writes about a refused private address). The privacy of the addresses towards
administrators is checked endpoint by endpoint in tests/privacy/."""

from __future__ import annotations

import logging
import re
import smtplib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import signing
from django.core.cache import cache
from django.test import Client
from django.utils import timezone, translation

from consumers.mail import PRIVATE_MARK, MailMessage, mail_send_results, redact_private
from consumers.models import MailAddressState
from directory.contacts import (
    SALT,
    ContactError,
    ContactState,
    private_contact_add,
    private_contact_confirm,
    private_contact_list,
    private_contact_token,
)
from directory.models import PrivateContact, Role, User
from safety.models import Delivery, DeliveryState
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import incident_make, mail_recipients, safety_person, send
from tests.services import ROOT, free_port

pytestmark = pytest.mark.django_db
# For tests that read the mail: what services queue after commit (the confirmation mail) runs as in production.
committing = pytest.mark.django_db(transaction=True)

API = "/acme/api/me/contacts/"
PRIVATE = "hanako.yamada.home@private-mail.example"
SHOTS = ROOT / "test-artifacts" / "screenshots"
LINK = re.compile(r"https?://[^/\s]+(/acme/contacts/confirm/([^/\s]+)/)")


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """The confirmation mails' rate limit counts in the cache."""
    cache.clear()


@pytest.fixture
def hanako(org: Any) -> User:
    return safety_person(org, "hanako", email="hanako@acme.example")


@pytest.fixture
def crisis(org: Any) -> User:
    return factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))


@pytest.fixture
def hanako_client(hanako: User) -> Client:
    return signed_in(hanako)


def tr(language: str, message: str) -> str:
    with translation.override(language):
        return translation.gettext(message)


def add(client: Client, address: str) -> Any:
    return client.post(API, {"address": address}, content_type="application/json")


def link_in(message: Any) -> tuple[str, str]:
    """(path, token) of the confirmation link in a received mail."""
    match = LINK.search(message.get_content())
    assert match, message.get_content()
    return match.group(1), match.group(2)


def signed_at(value: Any, seconds_ago: int) -> str:
    """A confirmation token signed `seconds_ago` (Django's signing with its timestamp moved back)."""

    class PastSigner(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - seconds_ago)

    return PastSigner(salt=SALT).sign_object(value, compress=False)


# --- adding and confirming ------------------------------------------------------------------------------


@committing
def test_the_link_mailed_to_the_new_address_confirms_it_with_a_post_not_a_get(
    hanako: User, hanako_client: Client, smtp_server: Any
) -> None:
    response = add(hanako_client, f"  {PRIVATE.replace('private-mail.example', 'Private-Mail.EXAMPLE')} ")
    assert response.status_code == 201, response.content
    assert response.json()["address"] == PRIVATE  # stripped, the domain lower-cased
    assert response.json()["state"] == "pending" and response.json()["confirmed"] is False

    [message] = smtp_server.messages
    assert message.envelope_to == [PRIVATE]  # that address only: not the work address
    assert message["To"] == PRIVATE and message["Content-Language"] == "ja"
    assert tr("ja", "Confirm your address for safety notifications") == message["Subject"].strip()
    path, token = link_in(message)
    assert "hanako" not in token and "private-mail" not in token  # the link does not carry the address

    anonymous = Client(enforce_csrf_checks=True)  # the mailbox's browser, signed in nowhere
    page = anonymous.get(path)
    assert page.status_code == 200
    assert 'id="contact-confirm"' in page.content.decode()
    assert "h•••@private-mail.example" in page.content.decode() and PRIVATE not in page.content.decode()
    # A mail scanner's GET (or a second one) confirms nothing.
    anonymous.get(path)
    assert PrivateContact.objects.get().confirmed_at is None

    csrf = anonymous.cookies["csrftoken"].value
    done = anonymous.post(path, {"csrfmiddlewaretoken": csrf})
    assert done.status_code == 200
    assert 'class="ok"' in done.content.decode()
    assert PrivateContact.objects.get().confirmed_at is not None
    listed = hanako_client.get(API).json()
    assert listed["max"] == 3
    assert [(c["address"], c["state"], c["confirmed"]) for c in listed["contacts"]] == [(PRIVATE, "confirmed", True)]
    # Following the link again is harmless: it says the address is confirmed.
    again = anonymous.post(path, {"csrfmiddlewaretoken": csrf})
    assert again.status_code == 200 and 'class="ok"' in again.content.decode()


@committing
def test_the_mail_is_in_the_persons_language(org: Any, smtp_server: Any) -> None:
    english = safety_person(org, "mary", language="en")
    private_contact_add(user=english, address="mary@home.example")
    [message] = smtp_server.messages
    assert message["Content-Language"] == "en"
    assert message["Subject"] == "Confirm your address for safety notifications"
    assert "Open the link below" in message.get_content()


@pytest.mark.parametrize(
    "address",
    [
        "",
        "   ",
        "no-at-sign",
        "two@@example.com",
        "space in@example.com",
        "name@localhost",
        "name@example.com\nBcc: someone@example.com",
        "x" * 250 + "@example.com",
        "<name@example.com>",
    ],
)
@committing
def test_a_malformed_address_is_refused_and_nothing_is_sent(
    hanako_client: Client, smtp_server: Any, address: str
) -> None:
    response = add(hanako_client, address)
    assert response.status_code == 400, response.content
    assert response.json()["code"] in {ContactError.BAD_ADDRESS, "invalid"}
    assert not PrivateContact.objects.exists() and smtp_server.messages == []


@pytest.mark.parametrize("body", [{}, {"address": 5}, {"address": None}, {"address": ["a@b.example"]}, []])
def test_a_body_of_the_wrong_shape_is_a_400(hanako_client: Client, body: Any) -> None:
    response = hanako_client.post(API, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert not PrivateContact.objects.exists()


def test_the_work_address_is_refused_in_any_case(hanako: User, hanako_client: Client) -> None:
    hanako.email2 = "Hanako.Second@acme.example"
    hanako.save(update_fields=["email2"])
    for address in ("HANAKO@acme.example", "hanako.second@ACME.example"):
        response = add(hanako_client, address)
        assert response.status_code == 400 and response.json()["code"] == ContactError.WORK_ADDRESS
    assert not PrivateContact.objects.exists()


def test_at_most_three_and_no_duplicates(hanako: User, hanako_client: Client) -> None:
    for n in range(3):
        assert add(hanako_client, f"home{n}@private.example").status_code == 201
    duplicate = add(hanako_client, "HOME0@Private.example")
    assert duplicate.status_code == 400 and duplicate.json()["code"] == ContactError.DUPLICATE
    fourth = add(hanako_client, "home3@private.example")
    assert fourth.status_code == 400 and fourth.json()["code"] == ContactError.LIMIT
    assert "3" in fourth.json()["message"]
    assert PrivateContact.objects.filter(user=hanako).count() == 3
    # Removing one makes room again.
    first = hanako_client.get(API).json()["contacts"][0]["id"]
    assert hanako_client.delete(f"{API}{first}/").status_code == 204
    assert add(hanako_client, "home3@private.example").status_code == 201


@committing
def test_confirmation_mails_are_rate_limited(hanako_client: Client, smtp_server: Any) -> None:
    assert add(hanako_client, "a@private.example").status_code == 201
    contact_id = PrivateContact.objects.get().id
    for _ in range(4):
        assert hanako_client.post(f"{API}{contact_id}/resend/").status_code == 200
    refused = hanako_client.post(f"{API}{contact_id}/resend/")
    assert refused.status_code == 429 and refused.json()["code"] == ContactError.TOO_MANY_MAILS
    refused = add(hanako_client, "b@private.example")
    assert refused.status_code == 429
    assert PrivateContact.objects.count() == 1
    assert len(smtp_server.messages) == 5
    # A mistyped address is not counted against the person: nothing was sent for it.
    cache.clear()
    for _ in range(6):
        assert add(hanako_client, "not an address").status_code == 400
    assert add(hanako_client, "b@private.example").status_code == 201


@committing
def test_resend_mails_a_new_link_and_is_refused_once_confirmed(
    hanako: User, hanako_client: Client, smtp_server: Any
) -> None:
    add(hanako_client, PRIVATE)
    contact = PrivateContact.objects.get()
    response = hanako_client.post(f"{API}{contact.id}/resend/")
    assert response.status_code == 200 and response.json()["state"] == "pending"
    assert len(smtp_server.messages) == 2 and smtp_server.messages[1].envelope_to == [PRIVATE]
    private_contact_confirm(token=link_in(smtp_server.messages[1])[1], organization_id=hanako.organization_id)
    refused = hanako_client.post(f"{API}{contact.id}/resend/")
    assert refused.status_code == 400 and refused.json()["code"] == ContactError.ALREADY_CONFIRMED
    assert len(smtp_server.messages) == 2


def test_someone_elses_contact_is_a_404_and_never_listed(
    org: Any, other_org: Any, hanako: User, hanako_client: Client
) -> None:
    colleague = safety_person(org, "colleague")
    theirs = private_contact_add(user=colleague, address="colleague@home.example")
    outsider = factories.person(other_org, "outsider")
    foreign = private_contact_add(user=outsider, address="outsider@home.example")
    for contact in (theirs, foreign):
        assert hanako_client.delete(f"{API}{contact.id}/").status_code == 404
        assert hanako_client.post(f"{API}{contact.id}/resend/").status_code == 404
        assert hanako_client.post(f"/acme/contacts/{contact.id}/remove/").status_code == 404
        assert hanako_client.post(f"/acme/contacts/{contact.id}/resend/").status_code == 404
    assert hanako_client.get(API).json()["contacts"] == []
    assert PrivateContact.objects.count() == 2
    # Another organisation's API is a 404 altogether; signed out is a 403.
    assert hanako_client.get("/globex/api/me/contacts/").status_code == 404
    assert Client().get(API).status_code == 403


def test_a_person_with_a_one_time_password_cannot_use_the_api_yet(org: Any) -> None:
    newcomer = factories.person(org, "newcomer", must_change_password=True)
    client = signed_in(newcomer)
    assert client.get(API).status_code == 403
    assert add(client, "new@home.example").status_code == 403


# --- the link: expired, altered, removed, another organisation ---------------------------------------------


def test_an_expired_link_says_so_and_confirms_nothing(hanako: User, settings: Any) -> None:
    contact = private_contact_add(user=hanako, address=PRIVATE)
    token = signed_at(
        signing.loads(private_contact_token(contact), salt=SALT), settings.PRIVATE_CONTACT_CONFIRM_SECONDS + 5
    )
    client = Client()
    for response in (client.get(f"/acme/contacts/confirm/{token}/"), client.post(f"/acme/contacts/confirm/{token}/")):
        assert response.status_code == 410
        text = response.content.decode()
        assert tr("ja", "This link has expired") in text and "/acme/profile/#contacts" in text
    PrivateContact.objects.get(id=contact.id, confirmed_at__isnull=True)
    # Within its time the same link works.
    fresh = signed_at(
        signing.loads(private_contact_token(contact), salt=SALT), settings.PRIVATE_CONTACT_CONFIRM_SECONDS - 60
    )
    assert client.post(f"/acme/contacts/confirm/{fresh}/").status_code == 200


def test_altered_removed_changed_and_foreign_links_are_a_friendly_404(org: Any, other_org: Any, hanako: User) -> None:
    contact = private_contact_add(user=hanako, address=PRIVATE)
    other = private_contact_add(user=hanako, address="second@private.example")
    token = private_contact_token(contact)
    outsider = factories.person(other_org, "outsider")
    foreign_token = private_contact_token(private_contact_add(user=outsider, address="out@home.example"))
    wrong_salt = signing.dumps([contact.id, "x"], salt="another.salt", compress=False)
    someone_elses_digest = signing.loads(private_contact_token(other), salt=SALT)
    bad = [
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # altered signature
        "x",
        "a" * 400,
        wrong_salt,
        signing.dumps([contact.id, someone_elses_digest[1]], salt=SALT, compress=False),  # digest of another address
        signing.dumps({"id": contact.id}, salt=SALT, compress=False),
        signing.dumps(["1", "x"], salt=SALT, compress=False),
    ]
    client = Client()
    for value in bad:
        for response in (
            client.get(f"/acme/contacts/confirm/{value}/"),
            client.post(f"/acme/contacts/confirm/{value}/"),
        ):
            assert response.status_code == 404, value
            assert tr("ja", "This link cannot be used") in response.content.decode()
    # Another organisation's link under this organisation's address, and this one's under the other's.
    assert client.post(f"/acme/contacts/confirm/{foreign_token}/").status_code == 404
    assert client.post(f"/globex/contacts/confirm/{token}/").status_code == 404
    # The address changed since the link was sent: the old link no longer confirms anything.
    PrivateContact.objects.filter(id=contact.id).update(address="changed@private.example")
    assert client.post(f"/acme/contacts/confirm/{token}/").status_code == 404
    # Removed since.
    PrivateContact.objects.filter(id=contact.id).delete()
    assert client.post(f"/acme/contacts/confirm/{token}/").status_code == 404
    # A deactivated person's link.
    User.objects.filter(id=hanako.id).update(is_active=False)
    assert client.post(f"/acme/contacts/confirm/{private_contact_token(other)}/").status_code == 404
    assert not PrivateContact.objects.filter(confirmed_at__isnull=False).exists()


def test_confirming_clears_a_failing_mark_on_the_address(hanako: User) -> None:
    contact = private_contact_add(user=hanako, address=PRIVATE)
    MailAddressState.objects.create(address=PRIVATE, failing=True, bounce_count=1)
    assert [r.state for r in private_contact_list(user=hanako)] == [ContactState.FAILING]
    private_contact_confirm(token=private_contact_token(contact), organization_id=hanako.organization_id)
    assert not MailAddressState.objects.get(address=PRIVATE).failing
    assert [r.state for r in private_contact_list(user=hanako)] == [ContactState.CONFIRMED]


# --- safety mail -----------------------------------------------------------------------------------------


@committing
def test_a_confirmed_address_gets_the_safety_mail_and_an_unconfirmed_one_does_not(
    org: Any, crisis: User, hanako: User, smtp_server: Any
) -> None:
    confirmed = private_contact_add(user=hanako, address=PRIVATE)
    private_contact_add(user=hanako, address="unconfirmed@private.example")
    private_contact_confirm(token=private_contact_token(confirmed), organization_id=org.id)
    # Someone with only a confirmed private address still gets an e-mail delivery.
    only_private = safety_person(org, "noworkmail", email="")
    private_contact_confirm(
        token=private_contact_token(private_contact_add(user=only_private, address="only@private.example")),
        organization_id=org.id,
    )
    smtp_server.messages.clear()

    incident = incident_make(org, crisis)
    send(incident, crisis)
    received = mail_recipients(smtp_server.messages)
    assert received.count(PRIVATE) == 1 and received.count("hanako@acme.example") == 1
    assert "unconfirmed@private.example" not in received
    assert received.count("only@private.example") == 1
    hanakos = next(m for m in smtp_server.messages if PRIVATE in m.envelope_to)
    # One message, with the private address as Bcc: the copy at work does not name it.
    assert hanakos["To"] == "hanako@acme.example" and PRIVATE not in str(hanakos)
    assert "/acme/answer/" in hanakos.get_content()
    only = next(m for m in smtp_server.messages if "only@private.example" in m.envelope_to)
    assert only["To"] == "only@private.example"
    states = dict(Delivery.objects.filter(incident=incident, channel="email").values_list("person_id", "state"))
    assert states[hanako.id] == states[only_private.id] == DeliveryState.SENT


# --- what the mail layer writes about a private address -----------------------------------------------------


@pytest.fixture
def refusing_smtp(settings: Any) -> Iterator[list[str]]:
    """An aiosmtpd that refuses every recipient whose address contains "refuse", naming it in the reply as real
    servers do; yields the addresses it accepted."""
    from aiosmtpd.controller import Controller

    accepted: list[str] = []

    class Handler:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
            if "refuse" in address.lower():
                return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            accepted.extend(envelope.rcpt_tos)
            return "250 Message accepted"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield accepted
    finally:
        controller.stop()


def test_a_refused_private_address_is_redacted_from_the_error_and_the_log(
    refusing_smtp: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Refuse.Me.Please@Home.example"
    caplog.set_level(logging.DEBUG)
    results = mail_send_results(
        [
            MailMessage(to=[secret], subject="s", body="b", private=(secret,)),
            MailMessage(to=["refuse-work@acme.example"], subject="s", body="b"),
            MailMessage(to=["fine@acme.example"], subject="s", body="b"),
        ]
    )
    assert results[2] is None and refusing_smtp == ["fine@acme.example"]
    assert results[0] is not None and results[0].startswith("refused:") and PRIVATE_MARK in results[0]
    assert "refuse.me.please" not in results[0].lower() and "550" in results[0]
    # A work address is for the administrators to fix: it stays in the error.
    assert results[1] is not None and "refuse-work@acme.example" in results[1]
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert "refused" in logged and "refuse.me.please" not in logged.lower()


def test_a_private_address_keeps_its_mark_through_the_mail_task() -> None:
    message = MailMessage(to=["w@acme.example", PRIVATE], subject="s", body="b", private=(PRIVATE,))
    data = message.as_dict()
    assert data["private"] == [PRIVATE]
    assert MailMessage(**data).private == [PRIVATE]  # what consumers.tasks.mail_send rebuilds
    assert "private" not in MailMessage(to=["w@acme.example"], subject="s", body="b").as_dict()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{{'{PRIVATE}': (550, b'5.1.1 <{PRIVATE}>')}}", f"{{'{PRIVATE_MARK}': (550, b'5.1.1 <{PRIVATE_MARK}>')}}"),
        (PRIVATE.upper(), PRIVATE_MARK),
        ("user hanako.yamada.home unknown", f"user {PRIVATE_MARK} unknown"),
        ("nothing private", "nothing private"),
    ],
)
def test_redact_private(text: str, expected: str) -> None:
    assert redact_private(text, [PRIVATE]) == expected


def test_a_local_part_the_work_address_shares_is_not_blanked_in_the_work_address() -> None:
    # Blanking "hanako" in the work address would tell the administrator what the private one starts with.
    text = "550 <hanako@acme.example> unknown; 550 <hanako@home.example> unknown"
    redacted = redact_private(text, ["hanako@home.example"], others=["hanako@acme.example"])
    assert redacted == f"550 <hanako@acme.example> unknown; 550 <{PRIVATE_MARK}> unknown"


def test_smtp_refusal_of_every_recipient_is_the_exception_the_mail_layer_catches() -> None:
    # The refusal above comes as SMTPRecipientsRefused, whose text is the dict of refused addresses.
    exc = smtplib.SMTPRecipientsRefused({PRIVATE: (550, b"5.1.1 <" + PRIVATE.encode() + b">")})
    assert PRIVATE in str(exc) and PRIVATE not in redact_private(str(exc), [PRIVATE])


# --- the profile page, without JavaScript ------------------------------------------------------------------


def test_profile_lists_the_addresses_with_their_states_and_forms(hanako: User, hanako_client: Client) -> None:
    pending = private_contact_add(user=hanako, address="pending@private.example")
    confirmed = private_contact_add(user=hanako, address="confirmed@private.example")
    failing = private_contact_add(user=hanako, address="failing@private.example")
    for contact in (confirmed, failing):
        private_contact_confirm(token=private_contact_token(contact), organization_id=hanako.organization_id)
    MailAddressState.objects.create(address="failing@private.example", failing=True, bounce_count=1)
    text = hanako_client.get("/acme/profile/").content.decode()
    states = dict(re.findall(r'data-contact="(\d+)" data-state="(\w+)"', text))
    assert states == {str(pending.id): "pending", str(confirmed.id): "confirmed", str(failing.id): "failing"}
    for label in ("Waiting for confirmation", "Confirmed", "Delivery error"):
        assert tr("ja", label) in text
    assert f"/acme/contacts/{pending.id}/resend/" in text and f"/acme/contacts/{confirmed.id}/resend/" not in text
    assert f"/acme/contacts/{confirmed.id}/remove/" in text
    # Three: the add form gives way to a note.
    assert 'id="contact-add"' not in text and 'id="contacts-full"' in text


@committing
def test_profile_forms_add_resend_and_remove_without_javascript(
    hanako: User, hanako_client: Client, smtp_server: Any
) -> None:
    profile = hanako_client.get("/acme/profile/").content.decode()
    assert 'id="contact-add"' in profile and tr("ja", "No private address yet.") in profile
    added = hanako_client.post("/acme/contacts/add/", {"address": PRIVATE})
    assert added.status_code == 302 and added["Location"] == "/acme/profile/?contacts=added#contacts"
    assert tr("ja", "Added. Open the link in the mail we sent to that address to confirm it.") in (
        hanako_client.get(added["Location"]).content.decode()
    )
    contact = PrivateContact.objects.get(user=hanako)
    assert smtp_server.messages[-1].envelope_to == [PRIVATE]
    resent = hanako_client.post(f"/acme/contacts/{contact.id}/resend/")
    assert resent.status_code == 302 and len(smtp_server.messages) == 2
    removed = hanako_client.post(f"/acme/contacts/{contact.id}/remove/")
    assert removed.status_code == 302 and not PrivateContact.objects.exists()


def test_a_refused_address_shows_the_reason_in_the_section_and_keeps_what_was_typed(
    hanako: User, hanako_client: Client
) -> None:
    response = hanako_client.post("/acme/contacts/add/", {"address": "hanako@ACME.example"})
    assert response.status_code == 400
    text = response.content.decode()
    assert 'id="contacts-error"' in text and 'value="hanako@ACME.example"' in text and 'aria-invalid="true"' in text
    assert tr("ja", "This is your work address; notifications already go to it. Add a private one.") in text
    assert not PrivateContact.objects.exists()
    assert hanako_client.get("/acme/contacts/add/").status_code == 405
    assert Client().post("/acme/contacts/add/", {"address": PRIVATE}).status_code == 302  # to sign in


def test_the_sent_time_and_the_expiry_are_shown_to_the_person(hanako: User, hanako_client: Client) -> None:
    contact = private_contact_add(user=hanako, address=PRIVATE)
    PrivateContact.objects.filter(id=contact.id).update(confirmation_sent_at=timezone.now() - timedelta(days=1))
    [row] = hanako_client.get(API).json()["contacts"]
    assert row["confirmation_sent_at"] is not None and row["confirmed_at"] is None


# --- in Chromium: add, receive the mail, confirm from the link, see the states --------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_in_chromium_add_confirm_from_the_mailed_link_and_see_every_state(smtp_server: Any) -> None:
    from playwright.sync_api import expect

    from tests.browser.test_pwa import chromium, daphne_env, layout_problems, open_tab, person, sign_in, while_browsing
    from tests.services import daphne

    org = factories.organization(slug="acme", name="ACME株式会社")
    people = {
        language: person(
            org, f"hanako-{language}", email="hanako@acme.example", anpi_login_id=f"anpi-{language}", language=language
        )
        for language in ("ja", "en")
    }
    env = daphne_env() | {"EMAIL_URL": f"smtp://{smtp_server.host}:{smtp_server.port}"}

    def mail_to(address: str) -> Any:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for message in smtp_server.messages:
                if address in message.envelope_to:
                    return message
            time.sleep(0.1)
        raise AssertionError(f"no mail to {address}: {[m.envelope_to for m in smtp_server.messages]}")

    with daphne(env) as base, chromium() as browser:
        for language in ("ja", "en"):
            tab = open_tab(browser, base, language=language)
            page = tab.page
            hanako = people[language]  # one each: the confirmation mails are rate-limited per person
            sign_in(tab, hanako)
            page.goto(f"{base}/acme/profile/#contacts")
            home = f"home-{language}@private.example"
            # A mistake first: the work address is refused with the reason, next to the field.
            page.fill("#contact-address", "HANAKO@acme.example")
            page.locator("#contact-add button").click()
            expect(page.locator("#contacts-error")).to_be_visible()
            expect(page.locator("#contact-address")).to_have_value("HANAKO@acme.example")
            tab.shot(f"private-contacts-error-{language}")
            for address in (home, f"phone-{language}@private.example", f"gone-{language}@private.example"):
                page.fill("#contact-address", address)
                with page.expect_navigation():
                    page.locator("#contact-add button").click()
                expect(page.locator("#contacts-feedback .ok")).to_be_visible()
            assert page.locator("#contact-add").count() == 0  # three: the form gives way to a note

            # The confirmation link, as the mailbox's browser opens it (signed in nowhere).
            path = LINK.search(mail_to(home).get_content())
            assert path, "no link in the mail"
            mailbox = open_tab(browser, base, language=language)
            mailbox.page.goto(f"{base}{path.group(1)}")
            expect(mailbox.page.locator("#contact-confirm")).to_be_visible()
            mailbox.shot(f"private-contact-confirm-{language}")
            with mailbox.page.expect_navigation():
                mailbox.page.locator("#contact-confirm").click()
            expect(mailbox.page.locator(".contact-confirm .ok")).to_be_visible()
            mailbox.shot(f"private-contact-confirmed-{language}")
            mailbox.page.goto(f"{base}/acme/contacts/confirm/not-a-real-link-at-all/")
            expect(mailbox.page.locator(".contact-confirm .error")).to_be_visible()
            mailbox.shot(f"private-contact-link-invalid-{language}")

            # One address bounces: the bounce intake marked it failing.
            while_browsing(
                MailAddressState.objects.create,
                address=f"gone-{language}@private.example",
                failing=True,
                bounce_count=1,
            )
            page.goto(f"{base}/acme/profile/#contacts")
            states = page.locator("#contacts-list .contact").evaluate_all(
                "(items) => items.map((i) => i.dataset.state)"
            )
            assert states == ["confirmed", "pending", "failing"], states
            assert layout_problems(page) == []
            page.locator("#contacts").screenshot(path=str(SHOTS / f"private-contacts-{language}.png"))
            tab.shot(f"profile-private-contacts-{language}")

            # Removing asks first; declining keeps the address.
            page.once("dialog", lambda dialog: dialog.dismiss())
            page.locator('#contacts-list .contact[data-state="failing"] [data-action="remove"]').click()
            expect(page.locator("#contacts-list .contact")).to_have_count(3)
            page.once("dialog", lambda dialog: dialog.accept())
            with page.expect_navigation():
                page.locator('#contacts-list .contact[data-state="failing"] [data-action="remove"]').click()
            expect(page.locator("#contacts-list .contact")).to_have_count(2)
            expect(page.locator("#contact-add")).to_be_visible()
            assert tab.errors == [] and mailbox.errors == []
            tab.page.context.close()
            mailbox.page.context.close()


def test_redact_private_covers_the_punycode_form_of_an_international_domain() -> None:
    refused = "550 5.1.1 <ab@xn--r8jz45g.jp>: Recipient address rejected"
    assert redact_private(refused, ["ab@例え.jp"]) == f"550 5.1.1 <{PRIVATE_MARK}>: Recipient address rejected"
