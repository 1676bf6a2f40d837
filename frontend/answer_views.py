"""Answer pages (placeholder until built)."""

from django.http import Http404, HttpRequest, HttpResponse


def link_answer_page(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    raise Http404
