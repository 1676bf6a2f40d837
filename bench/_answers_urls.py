"""URLconf of `bench.answers`' daphne: the project's URLs, and in front of them the baseline, a bare Django view
that stores an answer with one INSERT into a minimal table (`bench_bare_answer`, which the benchmark creates in
its throwaway database). It reads the same JSON body as the answer endpoint and answers with a small JSON body."""

from __future__ import annotations

import json
from typing import cast

from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.csrf import csrf_exempt

from config import urls as project_urls

BARE_TABLE = "bench_bare_answer"
BARE_TABLE_SQL = (
    f"CREATE TABLE {BARE_TABLE} (id bigserial PRIMARY KEY, token varchar(300) NOT NULL,"
    " status varchar(10) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
)


@csrf_exempt
def bare_answer(request: HttpRequest, token: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    status = str(json.loads(request.body)["values"]["safety"])[:10]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {BARE_TABLE} (token, status) VALUES (%s, %s)", [token, status])  # noqa: S608
    return JsonResponse({"ok": True})


urlpatterns: list[URLPattern | URLResolver] = [
    path("bench/bare-answer/<str:token>/", bare_answer, name="bench-bare-answer"),
    *cast(list[URLPattern | URLResolver], project_urls.urlpatterns),
]
handler404 = project_urls.handler404
