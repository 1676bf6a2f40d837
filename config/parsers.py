"""Request parsers for the REST API: DRF's, with the two failures it lets through answered as client errors.

DRF's JSONParser turns only a ValueError into a 400: JSON nested too deeply for the parser (RecursionError) would
be a 500, and a body over DATA_UPLOAD_MAX_MEMORY_SIZE Django's HTML 400 page instead of our JSON error."""

from __future__ import annotations

from typing import IO, Any

from django.core.exceptions import RequestDataTooBig
from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_("The JSON is nested too deeply.")) from None
        except RequestDataTooBig:
            from config.errors import ApplicationError  # config.errors imports DRF's views, which import this

            raise ApplicationError(_("The request is too large."), code="too_large", status=413) from None
