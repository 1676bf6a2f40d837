"""Event streams and event types owned by the directory app.

`org.<id>`: organisation-wide events (notices). `user.<id>`: one person's own events.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from django.http import Http404

from directory.models import Notice, User

NOTICE_POSTED: Literal["notice.posted"] = "notice.posted"


class NoticeData(TypedDict):
    id: int
    title: str
    body: str
    author: str
    created_at: str


def org_group(organization_id: int) -> str:
    return f"org.{organization_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def notice_data(notice: Notice) -> NoticeData:
    return {
        "id": notice.id,
        "title": notice.title,
        "body": notice.body,
        "author": notice.author.display_name if notice.author else "",
        "created_at": notice.created_at.isoformat(),
    }


def org_stream_access(user: User, key: str) -> str:
    if key != str(user.organization_id):
        raise Http404
    return org_group(user.organization_id)


def org_stream_snapshot(user: User, key: str) -> dict[str, object]:
    from directory.selectors import notice_list

    return {"notices": [notice_data(n) for n in notice_list(organization=user.organization, limit=20)]}


def user_stream_access(user: User, key: str) -> str:
    if key != str(user.id):
        raise Http404
    return user_group(user.id)


def user_stream_snapshot(user: User, key: str) -> dict[str, object]:
    return {"display_name": user.display_name, "language": user.language}
