"""Talk pages under /<slug>/talk/: the room list with one room open beside it (or full screen on a phone),
the talk administrator's page and the talk logs page.

The views only read and render. The first screen comes with the page (the person's rooms, and the open room's
newest messages and read positions) in the REST API's shapes, each with the sequence number of its stream
read *before* the data, so the script follows the streams from there and a change made in between arrives
as an event (deduplicated by message id). Every write goes from frontend/static/frontend/talk.js to the talk
REST API (/<slug>/api/talk/), which calls the services. People who do not use talk get the 404 page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from chat import selectors, services
from chat.api import room_detail_data, summary_data
from chat.events import message_data, room_group
from chat.models import FilePolicy
from config.errors import ApplicationError
from consumers.models import Stream
from directory.auth import request_person
from directory.models import Organization, Role, User
from directory.selectors import access_person, licence_usage
from frontend.views import _page, org_page

# The room list follows this many rooms live (most recent first); a socket holds at most 100 streams.
LIVE_ROOMS = 60


def _talk_user(request: HttpRequest) -> User:
    person = request_person(request)
    if not person.talk_available:
        raise Http404
    return person


def _stream_seqs(streams: list[str]) -> dict[str, int]:
    """Each stream's current sequence number (0 for a stream that has had no event yet)."""
    found = dict(Stream.objects.filter(key__in=streams).values_list("key", "last_seq"))
    return {s: found.get(s, 0) for s in streams}


def _texts(person: User) -> dict[str, Any]:
    """Texts the script shows, translated here (the script carries no language of its own)."""
    return {
        "sending": _("Sending…"),
        "not_sent": _("Not sent."),
        "retry": _("Send again"),
        "discard": _("Discard"),
        "edited": _("edited"),
        "deleted": _("This message was deleted"),
        "read": _("Read"),
        "read_by": _("Read by %(n)s"),
        "typing_one": _("%(name)s is typing…"),
        "typing_many": _("%(n)s people are typing…"),
        "online": _("Online"),
        "offline": _("Offline"),
        "n_online": _("%(n)s online"),
        "members": _("%(n)s members"),
        "admin": _("Room administrator"),
        "you": _("(you)"),
        "edit": _("Edit"),
        "delete": _("Delete"),
        "save": _("Save"),
        "cancel": _("Cancel"),
        "actions": _("Actions for this message"),
        "confirm_delete": _("Delete this message? Everyone in the room will see that it was deleted."),
        "unread": _("unread"),
        "no_messages": _("No messages yet. Write the first one."),
        "no_rooms": _("No conversations yet. Start one with “New 1:1” or “New group”."),
        "loading_older": _("Loading earlier messages…"),
        "beginning": _("This is the beginning of the conversation."),
        "older_failed": _("Earlier messages could not be loaded. Scroll up to try again."),
        "new_below": _("New messages below"),
        "new_in_room": _("New message in %(room)s"),
        "file_too_large": _("Files larger than %(mb)s MB cannot be sent."),
        "file_chosen": _("File to send: %(name)s (%(size)s)"),
        "network": _("The server could not be reached. Check the connection and try again."),
        "failed": _("That did not work: %(message)s"),
        "nobody": _("Nobody found."),
        "search_failed": _("The search failed. Check the connection and try again."),
        "choose_people": _("Choose at least one person."),
        "selected": _("%(n)s chosen"),
        "remove": pgettext("talk member", "Remove"),
        "confirm_remove": _("Remove %(name)s from this room?"),
        "confirm_leave": _("Leave this room? You will no longer see its messages."),
        "removed_from_room": _("You are no longer a member of this room."),
        "saved": _("Saved."),
        "added": _("Added."),
        "attachment": _("File"),
        "image_failed": _("The image could not be shown. Download it instead."),
        "bytes": _("%(n)s bytes"),
        "kb": _("%(n)s KB"),
        "mb": _("%(n)s MB"),
        "you_said": _("You: %(text)s"),
        "me": person.display_name,
    }


def _room_detail(person: User, room_id: int, slug: str) -> dict[str, Any]:
    """The open room as GET /api/talk/rooms/<id>/ answers it, with its newest page of messages."""
    room = selectors.access_room(person, room_id)
    data = room_detail_data(person, room, slug=slug)
    newest, has_more = selectors.message_page(room=room)
    data["messages"] = [message_data(m, slug=slug) for m in newest]
    data["has_more"] = has_more
    return data


@never_cache
@require_GET
@org_page()
def talk_page(request: HttpRequest, organization: Organization, room_id: int | None = None) -> HttpResponse:
    """The room list; with a room id, that room open beside it (full screen on a phone)."""
    person = _talk_user(request)
    if room_id is not None:
        selectors.access_room(person, room_id)  # 404 before anything else is read
    if person.department_id:
        services.department_room_ensure(department=person.department)  # type: ignore[arg-type]
    room_ids = list(selectors.rooms_of(person).values_list("id", flat=True))
    # Sequence numbers first, data second: anything that happens in between is replayed, never lost.
    seqs = _stream_seqs([room_group(rid) for rid in room_ids])
    summaries = [summary_data(s, slug=organization.slug) for s in selectors.room_summaries(user=person)]
    room = _room_detail(person, room_id, organization.slug) if room_id is not None else None
    policy = selectors.talk_settings_get(organization=organization).file_policy
    talk = {
        "me": {"id": person.id, "name": person.display_name},
        "rooms": summaries,
        "seqs": seqs,
        "live_rooms": LIVE_ROOMS,
        "room": room,
        "file_policy": policy,
        "max_file_mb": settings.TALK_FILE_MAX_BYTES // 2**20,
    }
    return _page(
        request,
        "frontend/talk/talk.html",
        organization,
        talk=talk,
        room=room,
        texts=_texts(person),
        files_allowed=policy != FilePolicy.DISABLED,
        images_only=policy == FilePolicy.IMAGES_ONLY,
        may_download_logs=selectors.may_download_talk_logs(person),
    )


@require_POST
@org_page()
def talk_with(request: HttpRequest, organization: Organization, person_id: int) -> HttpResponseBase:
    """The "Talk" button of a directory card: open (or create) the 1:1 room with that person."""
    person = _talk_user(request)
    other = access_person(person, person_id)
    try:
        room = services.room_direct_open(user=person, other=other)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("directory-person", slug=organization.slug, person_id=other.id)
    return redirect("talk-room", slug=organization.slug, room_id=room.id)


@never_cache
@require_GET
@org_page()
def talk_admin(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Talk administrators: the file policy, how long messages are kept, who uses talk and who may download
    talk logs. The page reads and writes through the talk settings and access APIs."""
    person = request_person(request)
    if not person.has_role(Role.ADMIN_GOTALK):
        raise Http404
    row = selectors.talk_settings_get(organization=organization)
    initial = {
        "file_policy": row.file_policy,
        "file_policies": [{"value": v, "label": str(label)} for v, label in FilePolicy.choices],
        "retention_days": row.retention_days,
        "max_file_mb": settings.TALK_FILE_MAX_BYTES // 2**20,
    }
    texts = {
        "saved": _("Saved."),
        "failed": _("That did not work: %(message)s"),
        "network": _("The server could not be reached. Check the connection and try again."),
        "nobody": _("Nobody found."),
        "uses_talk": _("Uses talk"),
        "may_download": _("May download talk logs"),
        "licence": _("%(used)s of %(limit)s talk licences in use"),
        "more": _("Show more"),
        "retention_days": _("Enter a number of days from 1 to 3650."),
        "on": _("On"),
        "off": _("Off"),
    }
    return _page(
        request,
        "frontend/talk/admin.html",
        organization,
        settings_data=initial,
        licence=licence_usage(organization=organization),
        texts=texts,
        may_download_logs=True,
    )


@never_cache
@require_GET
@org_page()
def talk_logs(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Talk logs to download: this month's archived files and the latest (not yet archived) messages."""
    person = request_person(request)
    if not selectors.may_download_talk_logs(person):
        raise Http404
    texts = {
        "none": _("No archived talk logs this month yet."),
        "failed": _("The list of talk logs could not be loaded. Reload the page to try again."),
        "messages": _("%(n)s messages"),
        "part": _("part %(n)s"),
        "bytes": _("%(n)s bytes"),
        "kb": _("%(n)s KB"),
        "mb": _("%(n)s MB"),
        "download": _("Download"),
    }
    return _page(request, "frontend/talk/logs.html", organization, texts=texts)
