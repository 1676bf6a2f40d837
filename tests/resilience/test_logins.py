"""Issue 10, item 11: brute force and forged or replayed links.

- A brute force from one address is locked out through a real daphne process, even when every attempt sends a
  different X-Forwarded-For (daphne runs without --proxy-headers and TRUSTED_PROXY_COUNT is 0 by default, so
  only the socket address counts); the same person still signs in from another address (127.0.0.2, a
  different source address on the loopback). Password checks behind the JSON API (sudo) and Django's admin
  sign-in count towards the same lockout.
- A password reset link works once, for one person of one organisation, and expires; altered or made-up
  links are a clear 400, never a 500, and change nothing.
- A signed answer link cannot be altered or moved to another incident, person or organisation; posting the
  same answer twice (same client_key) counts once; after the incident closes the link shows the request, a
  replay of the kept answer is acknowledged and a new answer is refused with 409.
"""

from __future__ import annotations

import http.client
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.tokens import PasswordResetTokenGenerator, default_token_generator
from django.core import mail, signing
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from directory.hashers import InitialPasswordHasher
from directory.models import Organization, Role, User
from safety import services as safety_services
from safety.models import Answer, Incident, Recipient
from safety.tokens import answer_token
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import incident_make, safety_person, send
from tests.services import daphne, require_postgres, require_redis, subprocess_env

HTTP_TIMEOUT = 60.0  # a busy 2-core box: slow, but every request still ends by itself
# The client-wide limit for the daphne under test: the lowest allowed (the pair limit, 10), as every guess at an
# unknown login ID spends a full PBKDF2 hash to hide that the ID does not exist.
CLIENT_LIMIT = 12


# --- Brute force through a real daphne process -------------------------------------------------------------


class Browser:
    """A browser at one source address, talking HTTP/1.1 to daphne over a real socket (one connection per
    request). It keeps its cookies and sends the CSRF token the sign-in form carries."""

    def __init__(self, base_url: str, source_ip: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.source_ip = source_ip
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=HTTP_TIMEOUT, source_address=(self.source_ip, 0)
        )
        try:
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key.strip()] = rest.split(";", 1)[0]
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text
        finally:
            conn.close()

    def open_sign_in(self, slug: str) -> None:
        status, _, page = self.request("GET", f"/{slug}/")
        assert status == 200, page[:500]
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert found, "the sign-in form carries a CSRF token"
        self.csrf = found.group(1)

    def sign_in(self, slug: str, login_id: str, password: str, **headers: str) -> tuple[int, str]:
        body = urlencode({"csrfmiddlewaretoken": self.csrf, "login_id": login_id, "password": password})
        status, response_headers, page = self.request(
            "POST",
            f"/{slug}/",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        return status, response_headers.get("location", "") or page


def spoofed_headers(n: int) -> dict[str, str]:
    """A different claimed client address on every attempt, in every header a proxy might set."""
    fake = f"198.51.100.{n % 250 + 1}"
    return {
        "X-Forwarded-For": f"{fake}, 203.0.113.{n % 250 + 1}",
        "X-Real-IP": fake,
        "Forwarded": f"for={fake}",
        "True-Client-IP": fake,
    }


@pytest.fixture
def server(transactional_db: Any) -> Iterator[str]:
    """daphne with the production settings profile on the test database, exactly as deployed (no proxy headers)."""
    require_postgres()
    require_redis()
    env = subprocess_env(AXES_CLIENT_FAILURE_LIMIT=str(CLIENT_LIMIT))
    env.pop("TRUSTED_PROXY_COUNT", None)  # the documented default: no proxy trusted
    with daphne(env=env) as base_url:
        yield base_url


def test_brute_force_from_one_address_is_locked_whatever_x_forwarded_for_says(server: str, settings: Any) -> None:
    org = factories.organization(slug="acme", name="ACME株式会社")
    # A cheap hash (the import's initial password) so that a busy box spends its time on the lockout, not PBKDF2.
    person = factories.person(org, "target@acme.example", must_change_password=True)
    person.password = InitialPasswordHasher().encode("Initial-pass-123", "saltsalt1234")
    person.save(update_fields=["password"])
    limit = settings.AXES_FAILURE_LIMIT

    attacker = Browser(server, "127.0.0.1")
    attacker.open_sign_in("acme")
    statuses = [attacker.sign_in("acme", person.login_id, f"guess-{n}", **spoofed_headers(n))[0] for n in range(limit)]
    assert statuses[:-1] == [400] * (limit - 1), statuses
    assert statuses[-1] == 429, statuses  # the limit-th failure locks the pair

    # Locked, even with the right password and yet another claimed address; the page says why.
    status, page = attacker.sign_in("acme", person.login_id, "Initial-pass-123", **spoofed_headers(999))
    assert status == 429
    assert "15" in page  # the minutes to wait (AXES_COOLOFF_TIME)
    # Every failure was counted against the socket address, none against a forwarded one.
    recorded = set(AccessAttempt.objects.values_list("ip_address", flat=True))
    assert recorded == {"127.0.0.1"}, recorded

    # The person, from another address, is not locked out by the attacker (the lock is per login and address).
    own_device = Browser(server, "127.0.0.2")
    own_device.open_sign_in("acme")
    status, location = own_device.sign_in("acme", person.login_id, "Initial-pass-123")
    assert (status, location) == (302, "/acme/password/"), (status, location[:300])


def test_many_login_ids_from_one_address_lock_the_address_whatever_x_forwarded_for_says(server: str) -> None:
    org = factories.organization(slug="acme", name="ACME株式会社")
    factories.person(org, "victim@acme.example")
    attacker = Browser(server, "127.0.0.1")
    attacker.open_sign_in("acme")
    last = 0
    for n in range(CLIENT_LIMIT):
        last, _ = attacker.sign_in("acme", f"guess{n}@acme.example", "x", **spoofed_headers(n))
    assert last == 429
    status, _ = attacker.sign_in("acme", "victim@acme.example", factories.PASSWORD, **spoofed_headers(7777))
    assert status == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    # Another address is not locked.
    other = Browser(server, "127.0.0.2")
    other.open_sign_in("acme")
    assert other.sign_in("acme", "victim@acme.example", "wrong")[0] == 400


# --- Other password checks count towards the same lockout (in-process, real views) ---------------------------


@pytest.mark.django_db
def test_sudo_api_password_guesses_lock_out_with_a_json_answer(org: Organization, admin: User, settings: Any) -> None:
    client = signed_in(admin)
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        refused = client.post("/acme/api/sudo/", {"password": f"wrong-{n}"}, content_type="application/json")
        assert refused.status_code == 403 and refused.json()["code"] == "wrong_password"
    locked = client.post(
        "/acme/api/sudo/", {"password": "wrong"}, content_type="application/json", HTTP_X_FORWARDED_FOR="192.0.2.1"
    )
    assert locked.status_code == 429 and locked.json()["code"] == "locked_out" and locked.json()["message"]
    right = client.post("/acme/api/sudo/", {"password": factories.PASSWORD}, content_type="application/json")
    assert right.status_code == 429


@pytest.mark.django_db
def test_the_admin_site_has_no_password_form_to_guess_against(org: Organization, admin: User) -> None:
    """Operators sign in through their organisation's page; /admin/login/ only redirects there, so guesses
    posted to it never reach a password check (and so need no lockout of their own)."""
    client = Client(REMOTE_ADDR="203.0.113.77")
    for n in range(12):
        response = client.post(
            "/admin/login/?next=/admin/",
            {"username": admin.login_id, "password": factories.PASSWORD if n == 11 else f"guess-{n}"},
            REMOTE_ADDR="203.0.113.77",
        )
        assert (response.status_code, response["Location"]) == (302, "/")
    assert not AccessAttempt.objects.exists()
    assert client.get("/admin/").status_code == 302  # still not signed in


# --- Password reset links ----------------------------------------------------------------------------------


def reset_path(slug: str, user: User, token: str | None = None) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return f"/{slug}/password/reset/{uid}/{token or default_token_generator.make_token(user)}/"


def choose(client: Client, path: str, password: str) -> Any:
    return client.post(path, {"new_password": password, "new_password2": password})


@pytest.fixture
def two_people(org: Organization) -> tuple[User, User]:
    return factories.person(org, "hanako@acme.example"), factories.person(org, "jiro@acme.example")


def alter(token: str) -> list[str]:
    """Each way of tampering with a token: a character changed at the start, middle and end, cut short,
    lengthened, and the timestamp part of another token pasted in."""
    flip = {c: ("b" if c == "a" else "a") for c in "0123456789abcdefghijklmnopqrstuvwxyz"}
    variants = []
    for i in (0, len(token) // 2, len(token) - 1):
        if token[i] in flip:
            variants.append(token[:i] + flip[token[i]] + token[i + 1 :])
    timestamp, _, digest = token.partition("-")
    variants += [token[:-1], token + "0", f"{int(timestamp, 36) + 1:x}-{digest}", f"zzzzzz-{digest}"]
    return [v for v in variants if v != token]


@pytest.mark.django_db
def test_a_reset_link_is_single_use_personal_and_cannot_be_altered(
    org: Organization, other_org: Organization, two_people: tuple[User, User]
) -> None:
    hanako, jiro = two_people
    jiro_elsewhere = factories.person(other_org, "hanako@acme.example")  # same login ID, other organisation
    token = default_token_generator.make_token(hanako)
    uid = urlsafe_base64_encode(force_bytes(hanako.pk))
    before = {u.pk: u.password for u in User.objects.all()}

    forged = [f"/acme/password/reset/{uid}/{bad}/" for bad in alter(token)]
    forged += [
        reset_path("acme", jiro, token),  # hanako's token with jiro's id
        f"/globex/password/reset/{uid}/{token}/",  # hanako's link under another organisation
        reset_path("globex", jiro_elsewhere, token),
        f"/acme/password/reset/{urlsafe_base64_encode(b'99999999999999999999999999')}/{token}/",  # out of range
        f"/acme/password/reset/{urlsafe_base64_encode(b'-1')}/{token}/",
        "/acme/password/reset/%ff%fe/abc-def/",
        f"/acme/password/reset/{uid}/{'x' * 2000}/",
    ]
    client = Client()
    for path in forged:
        shown = client.get(path)
        assert shown.status_code in (400, 404), (path, shown.status_code)
        used = choose(client, path, "Forged-password-123")
        assert used.status_code in (400, 404), (path, used.status_code)
        if used.status_code == 400:
            assert "リンク" in used.content.decode() or "link" in used.content.decode()
    assert {u.pk: u.password for u in User.objects.all()} == before

    good = f"/acme/password/reset/{uid}/{token}/"
    assert client.get(good).status_code == 200
    assert choose(client, good, "Fresh-password-123").status_code == 302
    hanako.refresh_from_db()
    assert hanako.check_password("Fresh-password-123")
    # The same link again: refused, nothing changes.
    again = choose(Client(), good, "Another-password-456")
    assert again.status_code == 400
    hanako.refresh_from_db()
    assert hanako.check_password("Fresh-password-123")
    jiro.refresh_from_db()
    assert jiro.check_password(factories.PASSWORD)


@pytest.mark.django_db
def test_a_reset_link_dies_when_the_person_signs_in_and_expires(
    org: Organization, two_people: tuple[User, User], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hanako, jiro = two_people
    # Signing in after the link was made (last_login changes) retires it: someone who remembered the password
    # does not leave a working link in their mailbox.
    path = reset_path("acme", hanako)
    signed_in(hanako)
    assert choose(Client(), path, "Fresh-password-123").status_code == 400
    hanako.refresh_from_db()
    assert hanako.check_password(factories.PASSWORD)

    path = reset_path("acme", jiro)
    made = datetime.now()
    timeout = settings.PASSWORD_RESET_TIMEOUT
    monkeypatch.setattr(PasswordResetTokenGenerator, "_now", lambda self: made + timedelta(seconds=timeout - 60))
    assert Client().get(path).status_code == 200  # still valid a minute before it expires
    monkeypatch.setattr(PasswordResetTokenGenerator, "_now", lambda self: made + timedelta(seconds=timeout + 60))
    assert Client().get(path).status_code == 400
    assert choose(Client(), path, "Fresh-password-123").status_code == 400
    jiro.refresh_from_db()
    assert jiro.check_password(factories.PASSWORD)


@pytest.mark.django_db
def test_the_reset_mail_link_is_the_only_one_and_works_once(
    org: Organization, two_people: tuple[User, User], django_capture_on_commit_callbacks: Any
) -> None:
    hanako, _ = two_people
    with django_capture_on_commit_callbacks(execute=True):
        Client().post("/acme/password/reset/", {"login_id": hanako.login_id})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/password/reset/\S+/", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    path = urlsplit(link.group(0)).path
    assert choose(Client(), path, "Mailed-password-123").status_code == 302
    assert choose(Client(), path, "Mailed-password-456").status_code == 400
    hanako.refresh_from_db()
    assert hanako.check_password("Mailed-password-123")


# --- Signed answer links -------------------------------------------------------------------------------------


def link_token(incident: Incident, person: User) -> str:
    return answer_token(organization_id=incident.organization_id, incident_id=incident.id, person_id=person.id)


def api(token: str, slug: str = "acme") -> str:
    return f"/{slug}/api/safety/answer/{token}/"


def post_answer(token: str, *, slug: str = "acme", client_key: str = "", safety: str = "safe") -> Any:
    body: dict[str, Any] = {"values": {"safety": safety}, "via": "link"}
    if client_key:
        body["client_key"] = client_key
    return Client(enforce_csrf_checks=True).post(api(token, slug), body, content_type="application/json")


@pytest.fixture
def asked(org: Organization, other_org: Organization) -> dict[str, Any]:
    """Two incidents of acme, each sent to hanako and jiro, and one of globex sent to its own person."""
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    hanako, jiro = safety_person(org, "hanako"), safety_person(org, "jiro")
    first, second = incident_make(org, crisis), incident_make(org, crisis, title="余震")
    for incident in (first, second):
        send(incident, crisis, run=False)
    foreign_crisis = factories.person(other_org, "crisis", roles=(Role.CRISIS_MANAGER,))
    foreigner = safety_person(other_org, "hanako")
    foreign = incident_make(other_org, foreign_crisis)
    send(foreign, foreign_crisis, run=False)
    return {
        "crisis": crisis,
        "hanako": hanako,
        "jiro": jiro,
        "first": first,
        "second": second,
        "foreign": foreign,
        "foreigner": foreigner,
    }


def answers_state() -> list[tuple[Any, ...]]:
    recipients = sorted(Recipient.objects.values_list("id", "answer_id", "answer_count", "status"))
    return [*recipients, (Answer.objects.count(),)]


@pytest.mark.django_db
def test_an_answer_link_cannot_be_altered_or_moved(asked: dict[str, Any]) -> None:
    hanako, first, second = asked["hanako"], asked["first"], asked["second"]
    good = link_token(first, hanako)
    forged: list[tuple[str, str]] = [("acme", bad) for bad in alter_signed(good)]
    forged += [
        (
            "acme",
            answer_token(organization_id=first.organization_id, incident_id=first.id, person_id=asked["foreigner"].id),
        ),
        (
            "acme",
            answer_token(organization_id=asked["foreign"].organization_id, incident_id=first.id, person_id=hanako.id),
        ),
        ("acme", link_token(asked["foreign"], asked["foreigner"])),  # a real globex link under acme's address
        ("globex", good),  # acme's link under globex's address
        ("acme", answer_token(organization_id=first.organization_id, incident_id=10**9, person_id=hanako.id)),
        ("acme", "x" * 5000),
        ("acme", "..%2F..%2Fetc%2Fpasswd"),
    ]
    before = answers_state()
    for slug, token in forged:
        for response in (
            Client().get(api(token, slug)),
            post_answer(token, slug=slug, client_key=str(uuid.uuid4())),
            Client().post(f"{api(token, slug)}receipt/", {"event": "opened"}, content_type="application/json"),
            Client().get(f"/{slug}/answer/{token}/"),
            Client().post(f"/{slug}/answer/{token}/", {"safety": "safe"}),
        ):
            assert response.status_code == 404, (slug, token[:60], response.status_code)
            assert response.content  # a page or a JSON body that says the link does not work
    assert answers_state() == before
    # The unaltered token answers exactly its own request: first incident, hanako; the second is untouched.
    assert post_answer(good).status_code == 200
    assert Recipient.objects.get(incident=first, person=hanako).answer_count == 1
    assert Recipient.objects.get(incident=second, person=hanako).answer_count == 0
    assert Recipient.objects.get(incident=first, person=asked["jiro"]).answer_count == 0


def alter_signed(token: str) -> list[str]:
    """Django signing tokens are `payload:timestamp:signature`: change a character of each part, swap the parts,
    drop the signature, and re-sign nothing (we have no key)."""
    payload, timestamp, signature = token.split(":")
    swap = {c: ("B" if c == "A" else "A") for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"}
    variants = [
        swap[payload[1]] != payload[1] and f"{payload[0]}{swap[payload[1]]}{payload[2:]}:{timestamp}:{signature}",
        f"{payload}:{timestamp[:-1]}{swap[timestamp[-1]]}:{signature}",
        f"{payload}:{timestamp}:{signature[:-1]}{swap[signature[-1]]}",
        f"{payload}:{timestamp}:",
        f"{payload}:{timestamp}",
        f"{payload}::{signature}",
        f"{signature}:{timestamp}:{payload}",
        token.upper(),
    ]
    return [v for v in variants if isinstance(v, str) and v != token]


@pytest.mark.django_db
def test_the_same_answer_posted_twice_counts_once_and_a_closed_incident_takes_no_new_answer(
    asked: dict[str, Any],
) -> None:
    hanako, first = asked["hanako"], asked["first"]
    token = link_token(first, hanako)
    key = str(uuid.uuid4())
    one, two = post_answer(token, client_key=key), post_answer(token, client_key=key, safety="serious")
    assert one.status_code == two.status_code == 200
    recipient = Recipient.objects.get(incident=first, person=hanako)
    assert recipient.answer_count == 1 and Answer.objects.filter(incident=first, person=hanako).count() == 1
    assert recipient.status == one.json()["answer"]["status"] == two.json()["answer"]["status"]

    safety_services.incident_complete(incident=first, actor=asked["crisis"])
    before = answers_state()
    shown = Client().get(api(token))
    assert shown.status_code == 200 and shown.json()["incident"]["is_open"] is False
    # An answer queued offline before the close and replayed after it is acknowledged (it was kept) ...
    assert post_answer(token, client_key=key).status_code == 200
    # ... a new one is refused with a reason, and nothing changes.
    late = post_answer(token, client_key=str(uuid.uuid4()), safety="minor")
    assert late.status_code == 409 and late.json()["code"] == "incident_closed" and late.json()["message"]
    page = Client().post(f"/acme/answer/{token}/", {"safety": "minor"})
    assert page.status_code == 409
    assert answers_state() == before


@pytest.mark.django_db
def test_an_answer_link_expires(asked: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    age = settings.SAFETY_ANSWER_LINK_SECONDS + 60
    # Signed as if that long ago: Django's signer with its timestamp moved back.
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(int(time.time()) - age))
    token = link_token(asked["first"], asked["hanako"])
    monkeypatch.undo()
    assert post_answer(token, client_key=str(uuid.uuid4())).status_code == 404
    assert Client().get(f"/acme/answer/{token}/").status_code == 404
    assert not Answer.objects.exists()
