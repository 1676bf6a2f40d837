"""The access matrix (issue 10, item 8): every route of the URL conf and every WebSocket stream, tried by every
role and by anonymous callers, against the caller's own organisation and another organisation's objects.

Two organisations are built, each with a full set of objects (departments, people, rooms, messages, files,
talk logs, groups, notices, incidents with a send, answers and instructions, templates, rules, decisions,
checks, private contacts, import jobs), every name, e-mail, title and body carrying the organisation's
unique marker. Each route, enumerated from `get_resolver()` with its parameters filled, is requested by each
caller three ways:

  (a) own  — the caller's slug and the caller's organisation's ids: the answer must be what ROUTES says;
  (b) mixed — the caller's slug with the other organisation's ids, one id at a time and all at once;
  (c) other — the other organisation's slug and ids.

(b) and (c) must never answer 2xx or 5xx, nor show the other organisation's marker: only a route open to
anonymous callers may answer 2xx, and only a signed link (BEARER_LINKS) under its own organisation's slug may
show that organisation's data, to whoever holds it. Unsafe methods (POST/PUT/PATCH/DELETE) with the other
organisation's ids must change no row: a fingerprint of every table is taken before and after each request.
A route added to the URL conf without a line in ROUTES fails the test ("add it to the table"). The WebSocket
streams are in STREAMS, tried the same way through `channels.testing.WebsocketCommunicator` against the real
ASGI application.

The site operator (a Django superuser) sees every organisation in the Django admin by design: the admin pages
are in the table as ADMIN (the operator's, and a sign-in page for everyone else), walked with the own variant
only: no slug or id of an organisation is in their URLs."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib import admin
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils import timezone

from chat import services as chat_services
from chat.logs import talk_log_archive
from chat.models import Attachment, Message, TalkLogFile
from directory.contacts import private_contact_add, private_contact_token
from directory.exporter import users_export
from directory.groups import group_create
from directory.import_jobs import import_job_create
from directory.models import Department, Organization, Role, User
from directory.services import notice_post
from safety import services as safety_services
from safety.autodispatch import preset_rule_create
from safety.checks import check_start, check_token
from safety.models import JmaDecision, JmaDocument
from safety.tokens import answer_token
from tests import factories
from tests.conftest import signed_in
from tests.services import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

PNG = (ROOT / "frontend" / "static" / "frontend" / "icons" / "icon-192.png").read_bytes()
# Print the observed table instead of asserting (to review a policy change): ACCESS_MATRIX_PRINT=1.
PRINT = os.environ.get("ACCESS_MATRIX_PRINT", "") == "1"

# --- the callers ----------------------------------------------------------------------------------------------
# Everyone is in the first organisation except `outsider`, the other organisation's administrator (every role,
# in sudo mode). The organisation administrator has every role too, and is in sudo mode, as is the operator.
CALLERS = ("anonymous", "member", "dept_manager", "safety_admin", "talk_admin", "org_admin", "operator", "outsider")
ROLES: dict[str, tuple[Role, ...]] = {
    "member": (),
    "dept_manager": (Role.DEPARTMENT_MANAGER,),
    "safety_admin": (Role.ADMIN_ANPI,),
    "talk_admin": (Role.ADMIN_GOTALK,),
    "org_admin": tuple(Role),
    "operator": (Role.SYSTEM_ADMIN,),
}


# --- the two organisations ------------------------------------------------------------------------------------


@dataclass
class OrgWorld:
    org: Organization
    tag: str  # in every name, e-mail, title and body of this organisation: its marker in a response
    people: dict[str, User]
    # URL parameter -> values, the first one the caller's "own" object in (a); (b) and (c) try them all.
    ids: dict[str, list[str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.org.slug


def build_org(slug: str, tag: str, document: JmaDocument, *, callers: tuple[str, ...]) -> OrgWorld:
    """An organisation with one of each object, every text carrying `tag`; `callers` are the roles made."""
    org = factories.organization(slug=slug, name=f"{slug} 株式会社")
    hq = Department.objects.create(organization=org, code="HQ", name=f"{tag}本社")
    sales = Department.objects.create(organization=org, code="SALES", name=f"{tag}営業部", parent=hq)
    people: dict[str, User] = {}
    for key in (*callers, "colleague"):
        person = factories.person(
            org,
            f"{key}-{tag}",
            roles=ROLES.get(key, ()),
            email=f"{key}.{tag}@{tag}.example",
            department=sales if key in ("member", "dept_manager", "colleague") else hq,
            talk_available=True,
            anpi_login_id=f"anpi-{key}",
        )
        person.last_name, person.first_name = f"{tag}姓", f"{key}名"
        person.save(update_fields=["last_name", "first_name"])
        people[key] = person
    if "operator" in people:
        User.objects.filter(id=people["operator"].id).update(is_staff=True, is_superuser=True)
        people["operator"].refresh_from_db()
    boss, member = people["org_admin"], people["member"]

    # Talk: a group room of everyone, a direct room, the department's room, files, and an archived log.
    everyone = [p.id for p in people.values()]
    group_room = chat_services.room_group_create(creator=boss, name=f"{tag}全員", member_ids=everyone)
    direct_room = chat_services.room_direct_open(user=boss, other=member)
    department_room = chat_services.department_room_ensure(department=sales)
    message = chat_services.message_send(room=group_room, sender=member, body=f"{tag} 無事です。")
    chat_services.message_send(room=direct_room, sender=boss, body=f"{tag} 大丈夫ですか")
    with_file = chat_services.message_send(
        room=group_room,
        sender=boss,
        body=f"{tag}地図",
        upload=SimpleUploadedFile(f"{tag}-map.png", PNG, content_type="image/png"),
    )
    Message.objects.filter(room__organization=org).update(created_at=timezone.now() - timedelta(days=2))
    talk_log_archive(organization=org)
    group = group_create(owner=boss, name=f"{tag}班", member_ids=[member.id])
    notice_post(author=boss, title=f"{tag}お知らせ", body=f"{tag}本文", push=False)

    # Safety: an incident sent to everyone, an answer, an instruction and its room, a template, a rule, a check.
    incident = safety_services.incident_create(
        organization=org, actor=boss, title=f"{tag}地震", message=f"{tag} 安否を回答してください。"
    )
    dispatch = safety_services.dispatch_create(incident=incident, actor=boss, target={"mode": "everyone"})
    safety_services.dispatch_run(dispatch_id=dispatch.id)
    safety_services.answer_submit(incident_id=incident.id, person=member, values={"safety": "safe"}, source="app")
    safety_services.instruction_post(incident=incident, actor=boss, body=f"{tag}指示: 待機")
    instruction_room = safety_services.instruction_room_open(incident=incident, actor=boss, member_ids=everyone)
    template = safety_services.template_create(organization=org, name=f"{tag}テンプレ", title=f"{tag}件名", body="回答")
    rule = preset_rule_create(org)
    rule.name = f"{tag}規則"
    rule.save(update_fields=["name"])
    check = check_start(organization=org, actor=boss)
    contact = private_contact_add(user=member, address=f"{tag}@private-{tag}.example")
    job = import_job_create(
        organization=org,
        actor=boss,
        users=SimpleUploadedFile(f"{tag}.tsv", users_export(organization=org), content_type="text/plain"),
    )
    decision = JmaDecision.objects.create(
        organization=org, document=document, decision="ignore", reason=f"{tag}理由", reason_code="test"
    )
    world = OrgWorld(org=org, tag=tag, people=people)
    as_text = {
        "person_id": [member.id, people["colleague"].id, boss.id],
        "department_id": [sales.id, hq.id],
        "room_id": [group_room.id, direct_room.id, department_room.id, instruction_room.id],
        "message_id": [message.id],
        "attachment_id": list(Attachment.objects.filter(message=with_file).values_list("id", flat=True)),
        "template_id": [template.id],
        "rule_id": [rule.id],
        "job_id": [job.id],
        "log_id": list(TalkLogFile.objects.filter(organization=org).values_list("id", flat=True)),
        "decision_id": [decision.id],
        "group_id": [group.id],
        "contact_id": [contact.id],
        "check_id": [check.id],
        "incident_id": [incident.id],
    }
    world.ids = {name: [str(v) for v in values] for name, values in as_text.items()}
    world.ids["slug"] = [slug]
    world.tokens = {
        "answer": answer_token(organization_id=org.id, incident_id=incident.id, person_id=member.id),
        "check": check_token(organization_id=org.id, check_id=check.id, person_id=member.id),
        "contact": private_contact_token(contact),
    }
    assert all(world.ids.values()), world.ids
    return world


@dataclass
class Worlds:
    own: OrgWorld
    other: OrgWorld

    def of(self, caller: str) -> OrgWorld:
        """The caller's organisation."""
        return self.other if caller == "outsider" else self.own

    def foreign(self, caller: str) -> OrgWorld:
        return self.own if caller == "outsider" else self.other


def build_worlds() -> Worlds:
    document = JmaDocument.objects.create(
        url="https://example.invalid/jma/matrix.xml",
        source="pull",
        raw=b"<Report/>",
        sha256="0" * 64,
        title="震源・震度に関する情報",
        status="通常",
        info_type="発表",
        kind="eq",
    )
    own = build_org("acme", "qzalpha", document, callers=tuple(ROLES))
    other = build_org("globex", "qzbravo", document, callers=("org_admin", "member"))
    # The other organisation's administrator has every role too, as the first one's has.
    return Worlds(own=own, other=other)


# --- the URL conf ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str  # the whole route, prefixes joined, as the URL conf writes it
    params: tuple[str, ...]
    regex: bool
    callback: Any

    @property
    def unsafe_methods(self) -> tuple[str, ...]:
        """The write methods the view implements (a function view: POST)."""
        view_class = getattr(self.callback, "view_class", None)
        if view_class is None:
            return ("post",)
        return tuple(m for m in ("post", "put", "patch", "delete") if hasattr(view_class, m))


def routes() -> list[Route]:
    """Every route of the URL conf (as tests/privacy/test_private_contacts_privacy.py walks it)."""
    found: list[Route] = []

    def walk(patterns: Any, prefix: str, params: tuple[str, ...], regex: bool) -> None:
        for entry in patterns:
            pattern = entry.pattern
            route = prefix + str(pattern)
            if isinstance(pattern, RoutePattern):
                names, is_regex = params + tuple(pattern.converters), regex
            else:
                assert isinstance(pattern, RegexPattern)
                names, is_regex = params + tuple(pattern.regex.groupindex), True
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route, names, is_regex)
            else:
                assert isinstance(entry, URLPattern)
                found.append(Route(route, names, is_regex, entry.callback))

    walk(get_resolver().url_patterns, "", (), False)
    return found


# Parameters that name nothing of an organisation: the same value in every variant.
NEUTRAL = {"kind": ["users", "departments"], "uidb64": ["MQ"]}


def token_kind(route: str) -> str | None:
    """Which signed link a route's <token> is; None for the password-reset and welcome links (an invalid one)."""
    if "answer/" in route:
        return "answer"
    if "contacts/confirm/" in route:
        return "contact"
    if "check" in route:
        return "check"
    return None


def values(route: Route, name: str, world: OrgWorld) -> list[str]:
    if name in NEUTRAL:
        return NEUTRAL[name]
    if name == "token":
        kind = token_kind(route.route)
        return [world.tokens[kind]] if kind else ["invalid-token-value"]
    return world.ids[name]


def bound(route: Route) -> list[str]:
    """The parameters that name an object of an organisation (the slug is not one of them)."""
    return [
        name
        for name in route.params
        if name != "slug" and name not in NEUTRAL and (name != "token" or token_kind(route.route))
    ]


def url_of(route: Route, chosen: Mapping[str, str]) -> str:
    url = route.route
    for name in route.params:
        url = re.sub(r"<(?:\w+:)?" + name + ">", chosen[name], url, count=1)
    return "/" + url


def urls(route: Route, variant: str, own: OrgWorld, foreign: OrgWorld, *, every: bool = True) -> list[str]:
    """(a) own slug and own ids (the first of each); (b) own slug with foreign ids, each bound parameter in turn
    and then all of them, every foreign value (or the first with every=False); (c) the foreign slug and ids."""
    if variant == "a":
        return [url_of(route, {n: values(route, n, own)[0] for n in route.params})]
    if variant == "c":
        choices = [values(route, n, foreign) if every else values(route, n, foreign)[:1] for n in route.params]
        return [url_of(route, dict(zip(route.params, combo, strict=True))) for combo in itertools.product(*choices)]
    found: list[str] = []
    names = bound(route)
    for switched in [[n] for n in names] + ([names] if len(names) > 1 else []):
        choices = [
            (values(route, n, foreign) if every else values(route, n, foreign)[:1])
            if n in switched
            else values(route, n, own)[:1]
            for n in route.params
        ]
        found += [url_of(route, dict(zip(route.params, c, strict=True))) for c in itertools.product(*choices)]
    return list(dict.fromkeys(found))


def admin_urls(route: Route) -> list[str]:
    """An admin route filled with the first object of its model (every organisation's objects are the
    operator's to see), or every app's index for the regular-expression app index."""
    if route.route.startswith("admin/^(?P<app_label>"):
        return sorted({f"/admin/{model._meta.app_label}/" for model in admin.site._registry})
    if route.regex:
        return []  # the catch-all and 'view on site': redirects or 404s, and no parameter names an object
    chosen: dict[str, str] = {}
    for name in route.params:
        if name != "object_id":
            return []
        model_key = route.route.split("/")[1:3]
        model = apps.get_model(*model_key)
        pk = model._default_manager.values_list("pk", flat=True).first()
        if pk is None:
            return []
        chosen[name] = str(pk)
    return [url_of(route, chosen)]


# --- answers --------------------------------------------------------------------------------------------------


def classify(status: int, location: str) -> str:
    """ok (2xx), login (a redirect to a sign-in page), redirect (any other 3xx), denied (401/403/404), or the
    status itself (400, 405, 409, 5xx …)."""
    if 200 <= status < 300:
        return "ok"
    if 300 <= status < 400:
        if location.startswith("/admin/login/") or re.match(r"^/[a-z0-9-]+/(\?next=.*)?$", location):
            return "login"
        return "redirect"
    if status in (401, 403, 404):
        return "denied"
    return str(status)


@dataclass
class Answer:
    status: int
    kind: str
    body: str  # body and headers, lower-cased


def request(
    client: Client, method: str, url: str, body: Mapping[str, Any] | None = None, *, form: bool = False
) -> Answer:
    cache.clear()  # throttle counters: a long walk must not run into a rate limit
    if method == "get":
        response = client.get(url)
    elif form:
        response = getattr(client, method)(url, body or {})
    else:
        response = getattr(client, method)(url, json.dumps(body or {}), content_type="application/json")
    streamed = response.streaming
    content = b"".join(response.streaming_content) if streamed else response.content  # type: ignore[attr-defined]
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    text = (content.decode("utf-8", "replace") + "\n" + headers).lower()
    return Answer(response.status_code, classify(response.status_code, response.get("Location", "")), text)


def clients(worlds: Worlds) -> dict[str, Client]:
    made: dict[str, Client] = {"anonymous": Client()}
    for caller in CALLERS[1:]:
        person = worlds.other.people["org_admin"] if caller == "outsider" else worlds.own.people[caller]
        client = signed_in(person)
        if caller in ("org_admin", "operator", "outsider"):
            response = client.post(f"/{person.organization.slug}/sudo/", {"password": factories.PASSWORD})
            assert response.status_code == 302, response.content[:300]
        made[caller] = client
    return made


# --- the expected table ---------------------------------------------------------------------------------------
# A policy is the answer of each caller, in CALLERS order, to a GET of the route with its own organisation's
# slug and ids (for `outsider` that is the other organisation's own). ok: 2xx; login: a redirect to sign in;
# denied: 401/403/404; redirect: another 3xx; a number: that status (405: the route takes no GET; 400: the
# signed link in the URL is invalid).
#          anonymous  member     dept_manager safety_admin talk_admin org_admin operator  outsider
POLICIES: dict[str, tuple[str, ...]] = {
    # Anyone, signed in or not: the organisation's public face, and the signed links (the token is the key).
    "public": ("ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    "sign_in_form": ("ok", "redirect", "redirect", "redirect", "redirect", "redirect", "redirect", "redirect"),
    "language_switch": ("redirect",) * 8,
    "write_only": ("405",) * 8,  # POST-only, without a session (token, bounce or JMA credentials) or sign-out
    "bad_link": ("400",) * 8,  # password reset and welcome links, walked with an invalid token
    "no_logo": ("denied",) * 8,  # the organisations have no logo: 404 for everyone
    # Everyone in the organisation.
    "member_api": ("denied", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    "member_api_write": ("denied", "405", "405", "405", "405", "405", "405", "405"),
    "member_page": ("login", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    # The owner of the personal group (the organisation administrator in each organisation).
    "group_owner": ("denied", "denied", "denied", "denied", "denied", "ok", "denied", "ok"),
    # System administrators (org_admin, operator and outsider have the role).
    "sysadmin_api": ("denied", "denied", "denied", "denied", "denied", "ok", "ok", "ok"),
    "sysadmin_api_write": ("denied", "denied", "denied", "denied", "denied", "405", "405", "405"),
    "sysadmin_page": ("login", "denied", "denied", "denied", "denied", "ok", "ok", "ok"),
    "directory_export": ("denied", "denied", "denied", "ok", "denied", "ok", "ok", "ok"),
    # Talk administrators.
    "talk_admin_api": ("denied", "denied", "denied", "denied", "ok", "ok", "denied", "ok"),
    "talk_admin_api_write": ("denied", "denied", "denied", "denied", "405", "405", "denied", "405"),
    "talk_admin_page": ("login", "denied", "denied", "denied", "ok", "ok", "denied", "ok"),
    # Contact checks: system and safety administrators see them, department managers their subtree's.
    "checks_api": ("denied", "denied", "ok", "ok", "denied", "ok", "ok", "ok"),
    "checks_api_write": ("denied", "denied", "denied", "405", "denied", "405", "405", "405"),
    "checks_page": ("login", "denied", "ok", "ok", "denied", "ok", "ok", "ok"),
    # Results of an incident: crisis managers, safety administrators, managers; department managers (subtree).
    "results_api": ("denied", "denied", "ok", "ok", "denied", "ok", "denied", "ok"),
    "results_page": ("login", "denied", "ok", "ok", "denied", "ok", "denied", "ok"),
    # Sending and automatic dispatch: crisis managers and safety administrators.
    "dispatcher_api": ("denied", "denied", "denied", "ok", "denied", "ok", "denied", "ok"),
    "dispatcher_api_write": ("denied", "denied", "denied", "405", "denied", "405", "denied", "405"),
    "dispatcher_page": ("login", "denied", "denied", "ok", "denied", "ok", "denied", "ok"),
}
# Every route of the URL conf -> its policy. A route not listed here fails the test: add it to the table.
# The Django admin (every route under admin/) is the operator's alone; see ADMIN below.
ROUTES: dict[str, str] = {
    "": "public",
    "healthz": "public",
    "sw.js": "public",
    "api/jma/documents/": "write_only",
    "api/mail/bounces/": "write_only",
    "i18n/setlang/": "language_switch",
    "<str:slug>/": "sign_in_form",
    "<str:slug>/logout/": "write_only",
    "<str:slug>/password/reset/": "public",
    "<str:slug>/password/reset/<str:uidb64>/<str:token>/": "bad_link",
    "<str:slug>/welcome/<str:uidb64>/<str:token>/": "bad_link",
    "<str:slug>/help/": "public",
    "<str:slug>/manifest.webmanifest": "public",
    "<str:slug>/logo": "no_logo",
    "<str:slug>/answer/<str:token>/": "public",
    "<str:slug>/api/safety/answer/<str:token>/": "public",
    "<str:slug>/api/safety/answer/<str:token>/receipt/": "write_only",
    "<str:slug>/contacts/confirm/<str:token>/": "public",
    "<str:slug>/check/<str:token>/": "public",
    "<str:slug>/api/safety/checks/link/<str:token>/confirm/": "write_only",
    "<str:slug>/api/safety/checks/link/<str:token>/receipt/": "write_only",
    "<str:slug>/talk/with/<int:person_id>/": "write_only",
    "<str:slug>/contacts/add/": "write_only",
    "<str:slug>/contacts/<int:contact_id>/resend/": "write_only",
    "<str:slug>/contacts/<int:contact_id>/remove/": "write_only",
    # Everyone in the organisation.
    "<str:slug>/api/me/": "member_api",
    "<str:slug>/api/notices/": "member_api",
    "<str:slug>/api/push/key/": "member_api",
    "<str:slug>/api/push/subscriptions/": "member_api",
    "<str:slug>/api/me/contacts/": "member_api",
    "<str:slug>/api/directory/people/": "member_api",
    "<str:slug>/api/directory/people/<int:person_id>/": "member_api",
    "<str:slug>/api/directory/departments/": "member_api",
    "<str:slug>/api/directory/departments/<int:department_id>/": "member_api",
    "<str:slug>/api/talk/rooms/": "member_api",
    "<str:slug>/api/talk/rooms/<int:room_id>/": "member_api",
    "<str:slug>/api/talk/rooms/<int:room_id>/messages/": "member_api",
    "<str:slug>/api/talk/presence/": "member_api",
    "<str:slug>/api/talk/people/": "member_api",
    "<str:slug>/api/talk/files/<int:attachment_id>/": "member_api",
    "<str:slug>/api/safety/mine/": "member_api",
    "<str:slug>/api/safety/mine/<int:incident_id>/": "member_api",
    "<str:slug>/api/groups/": "member_api",
    "<str:slug>/api/me/password/": "member_api_write",
    "<str:slug>/api/sudo/": "member_api_write",
    "<str:slug>/api/me/contacts/<int:contact_id>/": "member_api_write",
    "<str:slug>/api/me/contacts/<int:contact_id>/resend/": "member_api_write",
    "<str:slug>/api/talk/rooms/direct/": "member_api_write",
    "<str:slug>/api/talk/rooms/<int:room_id>/members/": "member_api_write",
    "<str:slug>/api/talk/rooms/<int:room_id>/members/<int:person_id>/": "member_api_write",
    "<str:slug>/api/talk/rooms/<int:room_id>/read/": "member_api_write",
    "<str:slug>/api/talk/rooms/<int:room_id>/typing/": "member_api_write",
    "<str:slug>/api/talk/messages/<int:message_id>/": "member_api_write",
    "<str:slug>/home/": "member_page",
    "<str:slug>/profile/": "member_page",
    "<str:slug>/password/": "member_page",
    "<str:slug>/sudo/": "member_page",
    "<str:slug>/directory/": "member_page",
    "<str:slug>/directory/people/<int:person_id>/": "member_page",
    "<str:slug>/directory/departments/": "member_page",
    "<str:slug>/talk/": "member_page",
    "<str:slug>/talk/<int:room_id>/": "member_page",
    "<str:slug>/safety/": "member_page",
    "<str:slug>/safety/<int:incident_id>/": "member_page",
    "<str:slug>/groups/": "member_page",
    "<str:slug>/api/groups/<int:group_id>/": "group_owner",
    # System administrators.
    "<str:slug>/api/organization/": "sysadmin_api",
    "<str:slug>/api/directory/imports/": "sysadmin_api",
    "<str:slug>/api/directory/imports/<int:job_id>/": "sysadmin_api",
    "<str:slug>/api/directory/people/<int:person_id>/active/": "sysadmin_api_write",
    "<str:slug>/api/onboarding/invitations/": "sysadmin_api_write",
    "<str:slug>/api/directory/export/<str:kind>.tsv": "directory_export",
    "<str:slug>/settings/": "sysadmin_page",
    "<str:slug>/directory/people/new/": "sysadmin_page",
    "<str:slug>/directory/import/": "sysadmin_page",
    "<str:slug>/onboarding/": "sysadmin_page",
    "<str:slug>/onboarding/sheet/<int:department_id>/": "sysadmin_page",
    # Talk administrators.
    "<str:slug>/api/talk/settings/": "talk_admin_api",
    "<str:slug>/api/talk/access/": "talk_admin_api",
    "<str:slug>/api/talk/logs/": "talk_admin_api",
    "<str:slug>/api/talk/logs/latest/": "talk_admin_api",
    "<str:slug>/api/talk/logs/<int:log_id>/": "talk_admin_api",
    "<str:slug>/api/talk/access/<int:person_id>/": "talk_admin_api_write",
    "<str:slug>/talk/admin/": "talk_admin_page",
    "<str:slug>/talk/logs/": "talk_admin_page",
    # Contact checks.
    "<str:slug>/api/safety/checks/": "checks_api",
    "<str:slug>/api/safety/checks/schedule/": "checks_api",
    "<str:slug>/api/safety/checks/<int:check_id>/": "checks_api",
    "<str:slug>/api/safety/checks/<int:check_id>/resend/": "checks_api_write",
    "<str:slug>/safety/checks/": "checks_page",
    # Results of incidents.
    "<str:slug>/api/safety/incidents/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/deliveries/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/results/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/results.csv": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/people/<int:person_id>/answers/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/board/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/instructions/": "results_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/room/": "results_api",
    "<str:slug>/safety/incidents/": "results_page",
    "<str:slug>/safety/incidents/<int:incident_id>/": "results_page",
    "<str:slug>/safety/incidents/<int:incident_id>/board/": "results_page",
    # Sending, templates and automatic dispatch.
    "<str:slug>/api/safety/templates/": "dispatcher_api",
    "<str:slug>/api/safety/people/": "dispatcher_api",
    "<str:slug>/api/safety/incidents/<int:incident_id>/dispatches/": "dispatcher_api",
    "<str:slug>/api/safety/auto/rules/": "dispatcher_api",
    "<str:slug>/api/safety/auto/rules/<int:rule_id>/": "dispatcher_api",
    "<str:slug>/api/safety/auto/settings/": "dispatcher_api",
    "<str:slug>/api/safety/auto/decisions/": "dispatcher_api",
    "<str:slug>/api/safety/auto/documents/": "dispatcher_api",
    "<str:slug>/api/safety/templates/<int:template_id>/": "dispatcher_api_write",
    "<str:slug>/api/safety/incidents/<int:incident_id>/open/": "dispatcher_api_write",
    "<str:slug>/api/safety/incidents/<int:incident_id>/complete/": "dispatcher_api_write",
    "<str:slug>/api/safety/auto/verify/": "dispatcher_api_write",
    "<str:slug>/api/safety/auto/replay/": "dispatcher_api_write",
    "<str:slug>/api/safety/auto/decisions/<int:decision_id>/cancel/": "dispatcher_api_write",
    "<str:slug>/api/safety/auto/decisions/<int:decision_id>/send-now/": "dispatcher_api_write",
    "<str:slug>/disaster/": "dispatcher_page",
    "<str:slug>/safety/incidents/new/": "dispatcher_page",
    "<str:slug>/safety/incidents/<int:incident_id>/edit/": "dispatcher_page",
    "<str:slug>/safety/templates/": "dispatcher_page",
    "<str:slug>/safety/auto/": "dispatcher_page",
    "<str:slug>/safety/auto/rules/new/": "dispatcher_page",
    "<str:slug>/safety/auto/rules/<int:rule_id>/": "dispatcher_page",
    "<str:slug>/safety/auto/rules/<int:rule_id>/delete/": "dispatcher_page",
    "<str:slug>/safety/auto/verify/": "dispatcher_page",
    "<str:slug>/safety/auto/replay/": "dispatcher_page",
    "<str:slug>/safety/auto/log/": "dispatcher_page",
}
# The Django admin: the operator (a superuser) gets Django's own answers (2xx, its redirects, 404 for an add page
# of a model that has none …, never a 5xx); everyone else is sent to the admin's sign-in page.
ADMIN: tuple[str, ...] = ("login", "login", "login", "login", "login", "login", "any", "login")
# Signed links are bearer credentials: whoever holds the other organisation's link sees what it shows, under that
# organisation's slug (c). Under the wrong slug (b) they are refused like anything else.
BEARER_LINKS = {route for route in ROUTES if "<str:token>" in route and token_kind(route)}


# One staff_member_required guards every admin page: walked by the operator and by three who are not staff (the
# administrator with every role and in sudo mode among them), not by every role.
ADMIN_CALLERS = ("anonymous", "org_admin", "operator", "outsider")
# Its sign-in page sends everyone to the site's own (and the operator, signed in already, to the index).
ADMIN_LOGIN = "admin/login/"


def expected(route: str, caller: str) -> str:
    if route == ADMIN_LOGIN:
        return "redirect"
    policy = ADMIN if route.startswith("admin/") else POLICIES[ROUTES[route]]
    return policy[CALLERS.index(caller)]


def cross_ok(route: str, variant: str) -> bool:
    """May (b)/(c) answer 2xx? Only a route open to anonymous callers (nothing of an organisation behind it),
    and a signed link under its own organisation's slug."""
    if variant == "c" and route in BEARER_LINKS:
        return True
    return route in ROUTES and POLICIES[ROUTES[route]][0] == "ok" and route not in BEARER_LINKS


def test_the_table_covers_every_route_of_the_url_conf() -> None:
    """A new route must get a line in ROUTES; a line for a route that is gone must go."""
    conf = {r.route for r in routes() if not r.route.startswith("admin/")}
    assert not conf - set(ROUTES), (
        f"routes without a line in ROUTES (add them to the table): {sorted(conf - set(ROUTES))}"
    )
    assert not set(ROUTES) - conf, f"lines in ROUTES for routes that are gone: {sorted(set(ROUTES) - conf)}"
    assert set(ROUTES.values()) <= set(POLICIES) and all(len(p) == len(CALLERS) for p in POLICIES.values())


# --- the walk -------------------------------------------------------------------------------------------------


def test_every_route_answers_every_caller_as_the_table_says_and_never_shows_another_organisation() -> None:
    worlds = build_worlds()
    made = clients(worlds)
    mismatches: list[str] = []
    leaks: list[str] = []
    own_marker_seen: Counter[str] = Counter()
    walked = 0
    for route in routes():
        if route.route.startswith("admin/"):
            for caller in ADMIN_CALLERS:
                for url in admin_urls(route):
                    answer = request(made[caller], "get", url)
                    walked += 1
                    want = expected(route.route, caller)
                    if answer.kind == "500" or (want != "any" and answer.kind != want):
                        mismatches.append(f"{caller} GET {url}: {answer.status} {answer.kind}, the table says {want}")
            continue
        if route.route not in ROUTES:
            continue  # reported by test_the_table_covers_every_route_of_the_url_conf
        for caller in CALLERS:
            own, foreign = worlds.of(caller), worlds.foreign(caller)
            [url] = urls(route, "a", own, foreign)
            answer = request(made[caller], "get", url)
            walked += 1
            if answer.kind != expected(route.route, caller):
                mismatches.append(
                    f"{caller} GET {url}: {answer.status} {answer.kind}, the table says {expected(route.route, caller)}"
                )
            own_marker_seen[caller] += own.tag in answer.body
            # Every value of every id for the callers with every role; the first of each for the others.
            every = caller in ("org_admin", "outsider")
            for variant in ("b", "c") if bound(route) else ("c",):
                for url in urls(route, variant, own, foreign, every=every):
                    answer = request(made[caller], "get", url)
                    walked += 1
                    if answer.kind.startswith("5") or (answer.kind == "ok" and not cross_ok(route.route, variant)):
                        leaks.append(f"({variant}) {caller} GET {url}: {answer.status}")
                    if foreign.tag in answer.body and not (variant == "c" and route.route in BEARER_LINKS):
                        leaks.append(f"({variant}) {caller} GET {url}: {answer.status} shows {foreign.tag}")
    print(f"[matrix] {walked} GET requests; own organisation's marker seen by caller: {dict(own_marker_seen)}")
    assert not leaks, "another organisation's data or a 2xx/5xx:\n" + "\n".join(leaks)
    assert not mismatches, "answers that differ from the table:\n" + "\n".join(mismatches)
    # The marker search can fail: the callers saw their own organisation's objects where the table lets them.
    assert own_marker_seen["org_admin"] > 50 and own_marker_seen["outsider"] > 50, own_marker_seen
    assert own_marker_seen["member"] > 20 and own_marker_seen["anonymous"] >= 3, own_marker_seen


# --- writes with another organisation's ids ------------------------------------------------------------------

# A body that a write endpoint would take, whatever it is: the fields of every input serializer, filled with
# values of the organisation the URL names (so that a missing organisation check, not a bad body, decides).
PWNED = "qzpwned"


def anything(world: OrgWorld) -> dict[str, Any]:
    person, department = int(world.ids["person_id"][0]), int(world.ids["department_id"][0])
    return {
        "name": PWNED,
        "title": PWNED,
        "body": PWNED,
        "message": PWNED,
        "reason": PWNED,
        "note": "電話で確認しました",
        "values": {"safety": "serious", "help": "yes"},
        "via": "app",
        "target": {"mode": "everyone"},
        "member_ids": [person],
        "user_ids": [person],
        "person_ids": [person],
        "notify_user_ids": [person],
        "person_id": person,
        "department_id": department,
        "parent_id": department,
        "last_read_id": 2**31 - 1,
        "talk_available": False,
        "may_download_logs": True,
        "active": False,
        "roles": ["SYSTEM_ADMIN"],
        "language": "en",
        "last_name": PWNED,
        "email": f"{PWNED}@evil.example",
        "address": f"{PWNED}@evil.example",
        "code": PWNED,
        "event": "opened",
        "channel": "push",
        "retention_days": 1,
        "every_days": 1,
        "escalate_after_minutes": 1,
        "enabled": False,
        "drill": True,
        "confirmed": True,
        "endpoint": "https://push.example/qzpwned",
        "keys": {"p256dh": "x", "auth": "y"},
    }


def as_form(body: Mapping[str, Any]) -> dict[str, str]:
    return {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items() if not isinstance(v, (list, dict))
    }


# Tables a refused request may write: the session of the caller's own sign-in.
UNWATCHED_TABLES = {"django_session", "django_migrations"}


def fingerprint() -> dict[str, str]:
    """A digest of every row of every table, in one query (PostgreSQL: a row cast to text)."""
    tables = sorted(set(connection.introspection.table_names()) - UNWATCHED_TABLES)
    digest = "md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
    # The table names come from the database's own catalogue, quoted: nothing from a request is in the query.
    parts = [f"SELECT %s, {digest} FROM {connection.ops.quote_name(t)} x" for t in tables]  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), tables)
        return dict(cursor.fetchall())


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return sorted(t for t in after if before.get(t) != after[t])


# The callers who write: an ordinary member, the administrator with every role (in sudo mode), and the other
# organisation's administrator against the first one's objects. Signing out is not walked (it ends the session).
WRITERS = ("member", "org_admin", "outsider")
NOT_WRITTEN = {"<str:slug>/logout/"}


def test_writes_with_another_organisations_ids_change_nothing() -> None:
    from tests.services import require_postgres

    require_postgres()
    worlds = build_worlds()
    made = clients(worlds)
    before = fingerprint()
    writes: list[str] = []
    tried = 0
    for route in routes():
        if route.route.startswith("admin/") or route.route not in ROUTES or route.route in NOT_WRITTEN:
            continue
        if "slug" not in route.params and not bound(route):
            continue  # a site-level endpoint: no organisation in its URL to get wrong (item 10 and 11 test them)
        form = getattr(route.callback, "view_class", None) is None
        for caller in WRITERS:
            own, foreign = worlds.of(caller), worlds.foreign(caller)
            for variant in ("b", "c") if bound(route) else ("c",):
                if variant == "c" and route.route in BEARER_LINKS:
                    continue  # the other organisation's signed link under its own slug: its holder may answer
                for url in urls(route, variant, own, foreign, every=False):
                    for method in route.unsafe_methods:
                        body = anything(foreign)
                        answer = request(made[caller], method, url, as_form(body) if form else body, form=form)
                        tried += 1
                        after = fingerprint()
                        if answer.kind.startswith("5") or answer.kind == "ok":
                            writes.append(f"({variant}) {caller} {method.upper()} {url}: {answer.status}")
                        if after != before:
                            tables = changed(before, after)
                            writes.append(
                                f"({variant}) {caller} {method.upper()} {url}: {answer.status} changed {tables}"
                            )
                        if PWNED in answer.body or foreign.tag in answer.body:
                            writes.append(f"({variant}) {caller} {method.upper()} {url}: {answer.status} echoes data")
                        before = after
    print(f"[matrix] {tried} writes with another organisation's ids")
    assert not writes, "writes that got through or failed with a 5xx:\n" + "\n".join(writes)
    for caller in WRITERS:  # nobody was signed out on the way
        assert request(made[caller], "get", f"/{worlds.of(caller).slug}/api/me/").kind == "ok", caller

    # The same bodies do write where the caller may: the refusals above were the organisation check's.
    wrote: list[str] = []
    for route in routes():
        if route.route.startswith("admin/") or route.route not in ROUTES or route.route in NOT_WRITTEN:
            continue
        if "slug" not in route.params or expected(route.route, "org_admin") in ("denied", "login"):
            continue
        form = getattr(route.callback, "view_class", None) is None
        [url] = urls(route, "a", worlds.own, worlds.other)
        for method in route.unsafe_methods:
            body = anything(worlds.own)
            request(made["org_admin"], method, url, as_form(body) if form else body, form=form)
            after = fingerprint()
            # A failed password check (sign-in, sudo) is recorded by django-axes: not a write of the route's.
            if any(not table.startswith("axes_") for table in changed(before, after)):
                wrote.append(f"{method.upper()} {route.route}")
            before = after
    print(f"[matrix] {len(wrote)} of the same writes with the own organisation's ids changed rows: {wrote}")
    assert len(wrote) >= 15, wrote


# --- the WebSocket streams -----------------------------------------------------------------------------------
# Each stream of consumers/streams.py, as the caller would name their own organisation's (a) and the other
# organisation's (c): the answer to {"type": "subscribe"} on the caller's own /<slug>/ws/. ok: a snapshot;
# denied: an error "not_found"; closed: the socket was closed before (4401, anonymous).
#          anonymous  member     dept_manager safety_admin talk_admin org_admin operator  outsider
STREAMS: dict[str, tuple[str, ...]] = {
    "org": ("closed", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    "user (their own)": ("closed", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    "user (a colleague's)": ("closed", "denied", "denied", "denied", "denied", "denied", "denied", "denied"),
    "room (everyone's group room)": ("closed", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    "room (the administrator and the member's direct room)": (
        "closed",
        "ok",
        "denied",
        "denied",
        "denied",
        "ok",
        "denied",
        "ok",
    ),
    "room (the SALES department's room)": ("closed", "ok", "ok", "denied", "denied", "denied", "denied", "denied"),
    "room (the incident's instruction room)": ("closed", "ok", "ok", "ok", "ok", "ok", "ok", "ok"),
    "board (the whole incident)": ("closed", "denied", "denied", "ok", "denied", "ok", "denied", "ok"),
    "board (the SALES subtree)": ("closed", "denied", "ok", "ok", "denied", "ok", "denied", "ok"),
    # JMA reports are public data for the people who run the response in any organisation: no (c).
    "jma": ("closed", "denied", "denied", "ok", "denied", "ok", "denied", "ok"),
}


def stream_names(world: OrgWorld, caller: User) -> dict[str, str]:
    incident, sales = world.ids["incident_id"][0], world.ids["department_id"][0]
    group_room, direct_room, department_room, instruction_room = world.ids["room_id"]
    return {
        "org": f"org.{world.org.id}",
        "user (their own)": f"user.{caller.id}" if caller.organization_id == world.org.id else "",
        "user (a colleague's)": f"user.{world.people['colleague'].id}",
        "room (everyone's group room)": f"room.{group_room}",
        "room (the administrator and the member's direct room)": f"room.{direct_room}",
        "room (the SALES department's room)": f"room.{department_room}",
        "room (the incident's instruction room)": f"room.{instruction_room}",
        "board (the whole incident)": f"board.{incident}",
        "board (the SALES subtree)": f"board.{incident}-{sales}",
        "jma": "jma.all",
    }


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    return client.cookies["sessionid"].value


async def open_socket(cookie: str, slug: str) -> tuple[WebsocketCommunicator, str | None]:
    """The live socket of `slug`; returns it with "hello", or None and the close code as text."""
    from config.asgi import application

    headers = [(b"origin", b"http://127.0.0.1:8000")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, f"/{slug}/ws/", headers=headers)
    connected, _ = await communicator.connect(timeout=30)
    assert connected
    first = await communicator.receive_output(timeout=30)
    if first["type"] == "websocket.close":
        return communicator, f"closed {first.get('code')}"
    assert json.loads(first["text"])["type"] == "hello", first
    return communicator, None


async def subscribe_answer(ws: WebsocketCommunicator, stream: str) -> tuple[str, str]:
    """ok (a snapshot) or denied (not_found), with the text of the snapshot."""
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": None})
    while True:
        frame = await ws.receive_json_from(timeout=30)
        if frame.get("stream") != stream:
            continue  # an event of another stream this socket follows
        if frame["type"] == "snapshot":
            await ws.send_json_to({"type": "unsubscribe", "stream": stream})
            return "ok", json.dumps(frame, ensure_ascii=False).lower()
        if frame["type"] == "error":
            assert frame["code"] == "not_found", frame
            return "denied", ""


@pytest.fixture
async def close_thread_connections() -> Any:
    """ORM calls of the consumer run on asgiref's worker thread: close its connection afterwards, so the test
    database can be dropped at the end of the run."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.mark.timeout(300)
async def test_every_stream_answers_every_caller_as_the_table_says(close_thread_connections: Any) -> None:
    worlds = await sync_to_async(build_worlds)()
    mismatches: list[str] = []
    leaks: list[str] = []
    observed: dict[str, list[str]] = defaultdict(list)
    for caller in CALLERS:
        own, foreign = worlds.of(caller), worlds.foreign(caller)
        person = (
            None
            if caller == "anonymous"
            else worlds.other.people["org_admin"]
            if caller == "outsider"
            else own.people[caller]
        )
        cookie = await sync_to_async(session_cookie)(person) if person else ""
        # The other organisation's socket: closed before any stream, for everyone.
        ws, closed = await open_socket(cookie, foreign.slug)
        want_closed = "closed 4401" if person is None else "closed 4404"
        if closed != want_closed:
            leaks.append(f"{caller} /{foreign.slug}/ws/: {closed or 'open'}, not {want_closed}")
        await ws.disconnect()
        ws, closed = await open_socket(cookie, own.slug)
        try:
            for label, stream in stream_names(own, person or own.people["member"]).items():
                if closed:
                    observed[label].append("closed")
                    continue
                kind, text = await subscribe_answer(ws, stream)
                observed[label].append(kind)
                if kind != STREAMS[label][CALLERS.index(caller)]:
                    mismatches.append(
                        f"{caller} {stream} ({label}): {kind}, the table says {STREAMS[label][CALLERS.index(caller)]}"
                    )
                if foreign.tag in text:
                    leaks.append(f"{caller} {stream}: its snapshot shows {foreign.tag}")
            # (c) Every stream of the other organisation, and a board of their own incident with the other
            # organisation's department.
            if not closed:
                theirs = stream_names(foreign, foreign.people["member"])
                theirs["user (their own)"] = f"user.{foreign.people['member'].id}"
                theirs.pop("jma")
                own_incident = own.ids["incident_id"][0]
                theirs["board (own incident, their department)"] = (
                    f"board.{own_incident}-{foreign.ids['department_id'][0]}"
                )
                for label, stream in theirs.items():
                    kind, text = await subscribe_answer(ws, stream)
                    if kind != "denied" or foreign.tag in text:
                        leaks.append(f"{caller} {stream} (the other organisation's {label}): {kind}")
        finally:
            await ws.disconnect()
    if PRINT:
        for label, kinds in observed.items():
            print(f"    {label!r}: {tuple(kinds)!r},")
    assert not leaks, "\n".join(leaks)
    assert not mismatches, "\n".join(mismatches)
