"""Administrators cannot see a person's private contacts, in any page, API, export or log (issue 9).

One person adds a private address (a distinctive string), confirms it through the link that really arrives at
aiosmtpd, gets a safety mail and a contact check there, and the address bounces (a DSN posted to the bounce
intake). Then an organisation administrator (every role, in sudo mode) and a site operator (Django superuser)
walk EVERY GET endpoint of the URL conf, enumerated from `get_resolver()` with the path parameters filled with
real ids of the organisation (a parameter nobody taught this test to fill fails it, so a new endpoint cannot
slip through unwalked), each list again searched for the address, every export, and the Django admin pages of
every registered model and object. The address, and its local part on its own, must appear in none of the
responses (bodies and headers), in no log record of the whole flow, and in no database column an administrator
could be shown (delivery errors, outbox events, …) outside the two tables that must hold it.

The person themself sees it on their profile and in their API: asserted too, so the search can fail."""

from __future__ import annotations

import itertools
import logging
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.contrib import admin
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import models
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils import timezone

from chat import services as chat_services
from chat.logs import talk_log_archive
from chat.models import Attachment, Message, Room, TalkLogFile
from consumers.models import MailAddressState
from directory.contacts import private_contact_token
from directory.import_jobs import import_job_create
from directory.models import Department, ImportJob, Organization, PersonalGroup, PrivateContact, Role, User
from safety import services as safety_services
from safety.autodispatch import preset_rule_create
from safety.checks import check_start, check_token
from safety.models import Delivery, DispatchRule, Incident, JmaDecision, JmaDocument, MessageTemplate
from safety.tokens import answer_token
from tests import factories
from tests.conftest import signed_in
from tests.consumers.test_bounces import dsn
from tests.safety.conftest import mail_recipients
from tests.services import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

LOCAL_PART = "zq7kestrel.hidden"
SECRET = f"{LOCAL_PART}@private-nest.example"
NEEDLES = (SECRET.lower(), LOCAL_PART.lower())
# Searching for the address, a page may echo the query: the same search for a decoy of the same shape tells an
# echo (as many in both) from a leak (more for the real address, or the person found by it).
DECOY_LOCAL_PART = "zq7falcons.absent"
DECOY = f"{DECOY_LOCAL_PART}@private-tree.example"
BOUNCE_TOKEN = "privacy-bounce-token"
SLUG = "acme"

# Routes not walked, each with the reason it cannot show anything of a person.
NOT_WALKED: dict[str, str] = {
    "admin/r/<path:content_type_id>/<path:object_id>/": "Django admin's 'view on site': only a redirect to the "
    "object's own page (models here have no get_absolute_url, so a 404)",
    "admin/(?P<url>.*)$": "the admin's catch-all for unknown addresses: a redirect or a 404, no data",
}
# Log records of the test's own mail server (aiosmtpd, standing in for the real one, which logs its recipients in
# its own log, not ours) are not the application's logs.
NOT_OUR_LOGGERS = ("mail.log",)
# The only columns that hold the address: the contact itself, and what bounce reports said about the address.
HOLDERS = {
    (PrivateContact, "address"),
    (MailAddressState, "address"),
    (MailAddressState, "last_diagnostic"),
}
PNG = (ROOT / "frontend" / "static" / "frontend" / "icons" / "icon-192.png").read_bytes()


# --- the world ----------------------------------------------------------------------------------------------


@dataclass
class World:
    org: Organization
    owner: User  # the person with the private address
    org_admin: User  # every organisation role
    operator: User  # Django superuser (site operator), system administrator of the organisation too
    department: Department
    contact: PrivateContact
    incident: Incident
    ids: dict[str, list[Any]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


class LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not fit its message: keep both
            text = f"{record.msg!r} {record.args!r}"
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:  # the messages of the exception and its causes (the code lines hold no data)
            text += "\n" + "".join(traceback.format_exception_only(type(exc), exc))
            exc = exc.__cause__ or exc.__context__
        if record.stack_info:
            text += "\n" + record.stack_info
        self.lines.append((record.name, text))


@pytest.fixture
def every_log() -> Iterator[LogRecorder]:
    """Every log record of every logger, at DEBUG, from the first step of the flow to the last request."""
    recorder = LogRecorder()
    root = logging.getLogger()
    loggers = [root] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    root.addHandler(recorder)
    # Loggers that do not pass records up get the recorder themselves.
    lonely = [logger for logger in loggers if logger is not root and not logger.propagate]
    for logger in lonely:
        logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)
        for logger in lonely:
            logger.removeHandler(recorder)
        for logger, level in levels.items():
            logger.setLevel(level)


def found_in(text: str | bytes) -> list[str]:
    lowered = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).lower()
    return [needle for needle in NEEDLES if needle in lowered]


def snippet(text: str) -> str:
    at = text.lower().find(LOCAL_PART)
    return text[max(0, at - 200) : at + 100]


def build_world(tmp_path: Any, settings: Any, smtp_server: Any) -> World:
    settings.MAIL_BOUNCE_TOKEN = BOUNCE_TOKEN
    settings.TALK_FILES_DIR = tmp_path / "talk-files"
    settings.TALK_LOGS_DIR = tmp_path / "talk-logs"
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    hq = factories.department(org, "HQ")
    department = factories.department(org, "SALES", hq)
    owner = factories.person(
        org,
        "hanako",
        email="hanako@acme.example",
        department=department,
        talk_available=True,
        anpi_login_id="anpi-hanako",
    )
    org_admin = factories.person(
        org,
        "kanri",
        email="kanri@acme.example",
        roles=tuple(Role),
        department=hq,
        talk_available=True,
        anpi_login_id="anpi-kanri",
    )
    operator = factories.person(org, "operator", email="ops@acme.example", roles=(Role.SYSTEM_ADMIN,))
    User.objects.filter(id=operator.id).update(is_staff=True, is_superuser=True)
    operator.refresh_from_db()
    factories.person(org, "colleague", department=department, anpi_login_id="anpi-colleague")

    # 1. The person adds the address in the app; the confirmation link arrives there, and only there.
    owner_client = signed_in(owner)
    response = owner_client.post("/acme/api/me/contacts/", {"address": SECRET}, content_type="application/json")
    assert response.status_code == 201, response.content
    [confirmation] = [m for m in smtp_server.messages if SECRET in m.envelope_to]
    assert confirmation.envelope_to == [SECRET]
    path = re.search(r"https?://[^/\s]+(/acme/contacts/confirm/[^/\s]+/)", confirmation.get_content())
    assert path, confirmation.get_content()
    # 2. The link is followed from that mailbox: GET shows the button, the POST confirms.
    mailbox = Client()
    assert mailbox.get(path.group(1)).status_code == 200
    assert mailbox.post(path.group(1), {"csrfmiddlewaretoken": mailbox.cookies["csrftoken"].value}).status_code == 200
    contact = PrivateContact.objects.get(user=owner)
    assert contact.confirmed_at is not None

    # 3. A safety check is sent to everyone: the private address gets the safety mail.
    incident = safety_services.incident_create(
        organization=org, actor=org_admin, title="震度6強の地震が発生しました", message="安否を回答してください。"
    )
    admin_client = signed_in(org_admin)
    sent = admin_client.post(
        f"/acme/api/safety/incidents/{incident.id}/dispatches/",
        {"target": {"mode": "everyone"}},
        content_type="application/json",
    )
    assert sent.status_code in (200, 201, 202), sent.content
    safety_mail = [m for m in smtp_server.messages if SECRET in m.envelope_to and "/acme/answer/" in m.get_content()]
    assert len(safety_mail) == 1, mail_recipients(smtp_server.messages)
    assert "hanako@acme.example" in safety_mail[0].envelope_to

    world = World(
        org=org,
        owner=owner,
        org_admin=org_admin,
        operator=operator,
        department=department,
        contact=contact,
        incident=incident,
    )

    # 4. A contact check (連絡先の確認) reaches the private address too.
    before = sum(SECRET in m.envelope_to for m in smtp_server.messages)
    check = check_start(organization=org, actor=org_admin)
    world.ids["check_id"] = [check.id]
    world.tokens["check"] = check_token(organization_id=org.id, check_id=check.id, person_id=owner.id)
    assert sum(SECRET in m.envelope_to for m in smtp_server.messages) == before + 1

    # 5. The private address bounces: the mail server posts the DSN it got back.
    returned = safety_mail[0]
    headers = "".join(f"{name}: {value}\n" for name, value in returned.items())
    bounced = Client().post(
        "/api/mail/bounces/",
        dsn([(SECRET, "failed", "5.1.1", f"550 5.1.1 <{SECRET}>: User unknown")], headers=headers),
        content_type="message/rfc822",
        HTTP_AUTHORIZATION=f"Bearer {BOUNCE_TOKEN}",
    )
    assert bounced.status_code == 200, bounced.content
    assert MailAddressState.objects.get(address=SECRET).failing

    # 6. Everything else an id in a URL can stand for, with the person in it where it can hold them.
    owner.refresh_from_db()
    room = chat_services.room_direct_open(user=org_admin, other=owner)
    message = chat_services.message_send(room=room, sender=owner, body="無事です。自宅にいます。")
    with_file = chat_services.message_send(
        room=room, sender=org_admin, body="地図", upload=SimpleUploadedFile("map.png", PNG, content_type="image/png")
    )
    department_room = chat_services.department_room_ensure(department=department)
    Message.objects.filter(room__organization=org).update(created_at=timezone.now() - timedelta(days=2))
    talk_log_archive(organization=org)
    group = PersonalGroup.objects.create(owner=org_admin, name="営業")
    group.members.add(owner)
    template = safety_services.template_create(organization=org, name="地震", title="地震", body="回答してください")
    rule = preset_rule_create(org)
    from directory.exporter import users_export

    job = import_job_create(
        organization=org,
        actor=org_admin,
        users=SimpleUploadedFile("users.tsv", users_export(organization=org), content_type="text/plain"),
    )
    document = JmaDocument.objects.create(
        url="https://example.invalid/jma/1.xml",
        source="pull",
        raw=b"<Report/>",
        sha256="0" * 64,
        title="震源・震度に関する情報",
        status="通常",
        info_type="発表",
        kind="eq",
    )
    decision = JmaDecision.objects.create(
        organization=org, document=document, decision="ignore", reason="テスト", reason_code="test"
    )
    world.ids.update(
        slug=[SLUG],
        incident_id=[incident.id],
        person_id=[owner.id],
        department_id=[department.id],
        room_id=[room.id, department_room.id],
        message_id=[message.id],
        attachment_id=list(Attachment.objects.filter(message=with_file).values_list("id", flat=True)),
        template_id=[template.id],
        rule_id=[rule.id],
        job_id=[job.id],
        log_id=list(TalkLogFile.objects.filter(organization=org).values_list("id", flat=True)),
        decision_id=[decision.id],
        group_id=[group.id],
        contact_id=[contact.id],  # the person's own contact id in their own API: 404 to anyone else
        kind=["users", "departments"],
        uidb64=["MQ"],
    )
    world.tokens.update(
        answer=answer_token(organization_id=org.id, incident_id=incident.id, person_id=owner.id),
        contact=private_contact_token(contact),
    )
    assert all(world.ids[name] for name in ("attachment_id", "log_id")), world.ids
    return world


# --- the URL conf ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    route: str  # the whole route, prefixes joined, as the URL conf writes it
    params: tuple[str, ...]
    regex: bool  # some part is a regular expression (not filled by substitution)
    name: str | None


def endpoints() -> list[Endpoint]:
    found: list[Endpoint] = []

    def walk(patterns: Any, prefix: str, params: tuple[str, ...], regex: bool) -> None:
        for entry in patterns:
            pattern = entry.pattern
            route = prefix + str(pattern)
            if isinstance(pattern, RoutePattern):
                names = params + tuple(pattern.converters)
                is_regex = regex
            else:
                assert isinstance(pattern, RegexPattern)
                names = params + tuple(pattern.regex.groupindex)
                is_regex = True
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route, names, is_regex)
            else:
                assert isinstance(entry, URLPattern)
                found.append(Endpoint(route, names, is_regex, entry.name))

    walk(get_resolver().url_patterns, "", (), False)
    return found


def admin_objects() -> dict[str, list[str]]:
    """'app_model' -> the primary keys of every object of each model registered in the Django admin."""
    return {
        f"{model._meta.app_label}_{model._meta.model_name}": [
            str(pk) for pk in model._default_manager.values_list("pk", flat=True)[:50]
        ]
        for model in admin.site._registry
    }


def fill(endpoint: Endpoint, world: World, objects: dict[str, list[str]], unfilled: set[str]) -> list[str]:
    """Every URL of an endpoint with its parameters filled; a parameter nobody knows is added to `unfilled`."""
    route = endpoint.route
    if endpoint.regex:
        if route.startswith("admin/^(?P<app_label>"):
            return [f"/admin/{model._meta.app_label}/" for model in admin.site._registry]
        unfilled.add(f"{route} (a regular expression)")
        return []
    choices: list[list[str]] = []
    for name in endpoint.params:
        if name == "object_id" and route.startswith("admin/"):
            model_key = "_".join(route.split("/")[1:3])
            values = objects.get(model_key, [])
        elif name == "token":
            values = [token_for(route, world)]
        else:
            values = [str(v) for v in world.ids.get(name, [])]
        if not values:
            if name == "object_id":
                return []  # no object of that model: nothing to show
            unfilled.add(f"{route}: {name}")
            return []
        choices.append(values)
    urls = []
    for combination in itertools.product(*choices):
        url = route
        for name, value in zip(endpoint.params, combination, strict=True):
            url = re.sub(r"<(?:\w+:)?" + name + ">", value, url, count=1)
        urls.append("/" + url)
    return urls


def token_for(route: str, world: World) -> str:
    if "/answer/" in route:
        return world.tokens["answer"]  # the person's own signed link: what it shows, it shows anyone holding it
    if "contacts/confirm/" in route:
        return world.tokens["contact"]  # the link mailed to the private address itself
    if "check" in route:
        return world.tokens["check"]
    # Password reset and welcome links are the person's credentials to sign in as them: an invalid one is walked.
    return "invalid-token-value"


# --- walking ------------------------------------------------------------------------------------------------


@dataclass
class Walk:
    statuses: dict[str, int] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)


def get(client: Client, url: str, walk: Walk) -> tuple[int, bytes, str]:
    response = client.get(url)
    body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    walk.statuses[url] = response.status_code
    walk.bodies[url] = body
    return response.status_code, body, headers


def fetch(client: Client, url: str, walk: Walk, label: str) -> int:
    status, body, headers = get(client, url, walk)
    for where, text in (("body", body), ("headers", headers)):
        for needle in found_in(text):
            walk.leaks.append(f"{label} GET {url} ({status}): {needle!r} in the {where}")
    return status


def search(client: Client, url: str, walk: Walk, label: str, world: World, log: LogRecorder) -> None:
    """`url` searched for the address (and its local part) and for its decoy: more of the address than of the
    decoy, or more of the person, in the response or in what the request logged, is a leak. (What these
    requests log is taken out of the flow's log: a request log line quotes the query.)"""
    person = (world.owner.login_id.lower(), world.owner.last_name.lower())
    pairs = [(SECRET, DECOY), (LOCAL_PART, DECOY_LOCAL_PART), *((p, p) for p in person)]
    for query, decoy in ((LOCAL_PART, DECOY_LOCAL_PART), (SECRET, DECOY)):
        seen = []
        for value in (query, decoy):
            target = f"{url}?{urlencode({'q': value})}"
            mark = len(log.lines)
            status, body, headers = get(client, target, walk)
            logged = "\n".join(text for name, text in log.lines[mark:] if not name.startswith(NOT_OUR_LOGGERS))
            del log.lines[mark:]
            seen.append((target, status, (body.decode("utf-8", "replace") + "\n" + headers).lower(), logged.lower()))
        (real_url, status, real, real_log), (_, _, fake, fake_log) = seen
        for needle, twin in pairs:
            if real.count(needle.lower()) > fake.count(twin.lower()):
                walk.leaks.append(f"{label} GET {real_url} ({status}): more {needle!r} than for the decoy search")
            if real_log.count(needle.lower()) > fake_log.count(twin.lower()):
                walk.leaks.append(f"{label} GET {real_url}: its log has more {needle!r} than the decoy search's")


def walk_all(
    client: Client, label: str, world: World, unfilled: set[str], log: LogRecorder, *, search_under: str = "/"
) -> Walk:
    """GET every endpoint; those that answer 200 under `search_under` again with searches."""
    walk = Walk()
    objects = admin_objects()
    for endpoint in endpoints():
        if endpoint.route in NOT_WALKED:
            continue
        for url in fill(endpoint, world, objects, unfilled):
            if fetch(client, url, walk, label) == 200 and url.startswith(search_under):
                # Every list or search again: by the person's name, by the address's domain, by the address.
                for query in (world.owner.last_name, "private-nest"):
                    fetch(client, f"{url}?{urlencode({'q': query})}", walk, label)
                search(client, url, walk, label, world, log)
    return walk


def sudo(client: Client) -> None:
    response = client.post(f"/{SLUG}/sudo/", {"password": factories.PASSWORD, "next": f"/{SLUG}/settings/"})
    assert response.status_code == 302, response.content[:300]


def db_leaks() -> list[str]:
    """Every text column of every model that holds the address, outside HOLDERS."""
    found = []
    for model in apps.get_models():
        for f in model._meta.concrete_fields:
            if (model, f.name) in HOLDERS or not isinstance(f, models.CharField | models.TextField | models.JSONField):
                continue
            for needle in NEEDLES:
                count = model._default_manager.filter(**{f"{f.name}__icontains": needle}).count()
                if count:
                    found.append(f"{model._meta.label}.{f.name}: {count} rows hold {needle!r}")
    return found


# --- the test -------------------------------------------------------------------------------------------------


def test_no_administrator_page_api_export_admin_page_or_log_shows_a_private_address(
    tmp_path: Any, settings: Any, smtp_server: Any, every_log: LogRecorder
) -> None:
    cache.clear()
    world = build_world(tmp_path, settings, smtp_server)
    unfilled: set[str] = set()

    # The person sees their address: on their profile (with the bounce shown) and in their API.
    owner_client = signed_in(world.owner)
    profile = owner_client.get(f"/{SLUG}/profile/").content.decode()
    assert SECRET in profile and 'data-state="failing"' in profile
    assert owner_client.get(f"/{SLUG}/api/me/contacts/").json()["contacts"][0]["address"] == SECRET

    admin_client = signed_in(world.org_admin)
    sudo(admin_client)
    as_admin = walk_all(admin_client, "organisation administrator", world, unfilled, every_log)

    operator_client = signed_in(world.operator)
    sudo(operator_client)
    # The operator's organisation pages are the administrator's (fewer roles): searched in the Django admin only.
    as_operator = walk_all(operator_client, "site operator", world, unfilled, every_log, search_under="/admin/")

    # The management command that exports the directory.
    out = tmp_path / "export"
    call_command("directory_export", "--org", SLUG, "--out", str(out))
    exported = {p.name: p.read_bytes() for p in out.iterdir()}
    assert any(b"hanako@acme.example" in body for body in exported.values())

    assert not unfilled, (
        "endpoints with a parameter this test cannot fill yet; add a value in build_world (or a reason in "
        f"NOT_WALKED): {sorted(unfilled)}"
    )
    leaks = as_admin.leaks + as_operator.leaks
    leaks += [f"directory_export: {name}" for name, body in exported.items() if found_in(body)]
    assert not leaks, "\n".join(leaks)

    # The walk saw what administrators see: these answered 200 with the person in them.
    people_api = f"/{SLUG}/api/directory/people/{world.owner.id}/"
    must_show = {
        people_api: b"hanako@acme.example",
        f"/{SLUG}/directory/people/{world.owner.id}/": b"hanako@acme.example",
        f"/{SLUG}/api/directory/export/users.tsv": b"hanako@acme.example",
        f"/{SLUG}/api/safety/incidents/{world.incident.id}/results.csv": world.owner.last_name.encode(),
        f"/{SLUG}/api/safety/incidents/{world.incident.id}/results/": world.owner.last_name.encode(),
        f"/{SLUG}/safety/incidents/{world.incident.id}/": b"",
    }
    for url, expected in must_show.items():
        assert as_admin.statuses.get(url) == 200, (url, as_admin.statuses.get(url))
        assert expected in as_admin.bodies[url], url
    deliveries = f"/{SLUG}/api/safety/incidents/{world.incident.id}/deliveries/"
    if deliveries in as_admin.statuses:
        assert as_admin.statuses[deliveries] == 200
    own_contacts = f"/{SLUG}/api/me/contacts/{world.contact.id}/"
    assert as_admin.statuses[own_contacts] == 405  # GET of one contact: no such method; DELETE is the person's
    assert as_admin.statuses[f"/{SLUG}/api/me/contacts/"] == 200  # the administrator's own (empty) list
    admin_pages = {
        "/admin/directory/user/": b"hanako",
        f"/admin/directory/user/{world.owner.id}/change/": b"hanako@acme.example",
        f"/admin/directory/user/{world.owner.id}/history/": b"",
    }
    for url, expected in admin_pages.items():
        assert as_operator.statuses.get(url) == 200, (url, as_operator.statuses.get(url))
        assert expected in as_operator.bodies[url], url
    if MailAddressState in admin.site._registry:  # an operator's view of bounced addresses must leave it out
        assert as_operator.statuses.get("/admin/consumers/mailaddressstate/") == 200
    assert len(as_admin.statuses) > 300 and len(as_operator.statuses) > 200

    # No delivery error, outbox event, audit row or any other column outside the contact and its bounce state.
    assert not db_leaks(), db_leaks()
    assert not Delivery.objects.filter(error__icontains=LOCAL_PART).exists()
    assert MailAddressState.objects.filter(address=SECRET, failing=True).exists()  # the bounce did land

    # No log record of the whole flow names it.
    logged = [
        f"{name}: …{snippet(text)}…"
        for name, text in every_log.lines
        if not name.startswith(NOT_OUR_LOGGERS) and found_in(text)
    ]
    assert not logged, "\n".join(logged)
    assert any(name == "directory.contacts" for name, _ in every_log.lines)  # the recorder did record

    # Sanity: the models the world was meant to fill are there.
    for model in (Room, Message, ImportJob, TalkLogFile, DispatchRule, MessageTemplate, Department):
        assert model.objects.exists(), model
