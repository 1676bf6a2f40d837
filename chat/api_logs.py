"""REST endpoints of talk logs under /<slug>/api/talk/logs/: the month's archived files and the latest talk
log (what is not archived yet), for talk administrators and the people they allowed to download logs."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from chat.logs import talk_log_get, talk_log_latest, talk_log_open, talk_log_pending_count, talk_logs_of_month
from chat.models import TalkLogFile
from chat.selectors import may_download_talk_logs
from directory.api import OrgAPIView
from directory.permissions import PasswordChanged

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


class MayDownloadTalkLogs(BasePermission):
    """Talk administrators, and the people a talk administrator allowed to download talk logs."""

    message = gettext_lazy("You are not allowed to download talk logs.")
    code = "talk_logs_forbidden"

    def has_permission(self, request: Any, view: Any) -> bool:
        return may_download_talk_logs(request.user)


class TalkLogsAPIView(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, MayDownloadTalkLogs]


def log_url(slug: str, log_id: int) -> str:
    return f"/{slug}/api/talk/logs/{log_id}/"


def latest_log_url(slug: str) -> str:
    return f"/{slug}/api/talk/logs/latest/"


def log_data(log: TalkLogFile, *, slug: str) -> dict[str, Any]:
    return {
        "id": log.id,
        "name": log.filename,
        "day": log.day.isoformat(),
        "part": log.part,
        "message_count": log.message_count,
        "size": log.size,
        "url": log_url(slug, log.id),
    }


def _as_download(response: HttpResponseBase, filename: str) -> HttpResponseBase:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


class TalkLogsApi(TalkLogsAPIView):
    """This month's log files and the latest talk log."""

    def get(self, request: Request, slug: str) -> Response:
        files = talk_logs_of_month(organization=self.organization, today=timezone.localdate())
        return Response(
            {
                "files": [log_data(log, slug=slug) for log in files],
                "latest": {
                    "message_count": talk_log_pending_count(organization=self.organization),
                    "url": latest_log_url(slug),
                },
            }
        )


class TalkLogApi(TalkLogsAPIView):
    """One archived log file, as much of it as committed."""

    def get(self, request: Request, slug: str, log_id: int) -> HttpResponseBase:
        log = talk_log_get(organization=self.organization, log_id=log_id)
        try:
            content = talk_log_open(log=log)
        except (OSError, ValueError):
            raise Http404 from None
        response = StreamingHttpResponse(content, content_type=CSV_CONTENT_TYPE)
        response["Content-Length"] = str(log.size)
        return _as_download(response, log.filename)


class TalkLogLatestApi(TalkLogsAPIView):
    """The latest talk log: every message not archived yet, as it is now."""

    def get(self, request: Request, slug: str) -> HttpResponseBase:
        content = talk_log_latest(organization=self.organization)
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
        return _as_download(HttpResponse(content, content_type=CSV_CONTENT_TYPE), f"talk-log-latest-{stamp}.csv")
