"""The one write path for JMA documents, whatever brought them in (poller, REST push, file command).

A document is keyed by its URL: the second arrival of a URL returns the stored row and publishes nothing.
It is parsed before anything is written, and a document that fails to parse is not stored at all (so it
never shows up as a report, and a poller fetches it again next time). The bytes are stored as received.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction

from config.errors import ApplicationError
from consumers.publisher import publish_on_commit
from safety.autodispatch import jma_autodispatch_after_commit
from safety.events import JMA_GROUP, JMA_REPORT, report_data
from safety.jma.parser import Report, parse_report
from safety.models import JmaDocument, JmaSource

JST = ZoneInfo("Asia/Tokyo")


class JmaDocumentTooLarge(ApplicationError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"The document is {size} bytes; the limit is {limit} bytes.", code="jma_too_large", status=413)


@dataclass(frozen=True)
class IngestResult:
    document: JmaDocument
    created: bool


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(v) for v in value]
    return value


def _aware(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        return value
    return value.replace(tzinfo=JST)  # JMA times without an offset are Japan time


def report_summary(report: Report, url: str) -> dict[str, Any]:
    """The parsed summary kept next to the raw bytes: inspect_dict() plus epicentre, magnitude, origin time."""
    summary: dict[str, Any] = dict(report.inspect_dict(url))
    summary.pop("file", None)
    summary["epicenter_name"] = report.epicenter_name
    summary["magnitude"] = report.magnitude
    summary["origin_time"] = report.origin_time
    return {str(k): _json_value(v) for k, v in summary.items()}


def jma_document_ingest_result(*, url: str, raw: bytes, source: str) -> IngestResult:
    """Store one JMA document under `url` unless it is already stored, and publish it after commit.

    Raises JmaParseError (nothing stored) when it does not parse, JmaDocumentTooLarge over JMA_MAX_DOCUMENT_BYTES."""
    existing = JmaDocument.objects.filter(url=url).defer("raw").first()
    if existing is not None:
        return IngestResult(existing, False)
    limit = settings.JMA_MAX_DOCUMENT_BYTES
    if len(raw) > limit:
        raise JmaDocumentTooLarge(len(raw), limit)
    JmaSource(source)  # ValueError for an unknown source
    report = parse_report(raw)
    try:
        with transaction.atomic():
            doc = JmaDocument.objects.create(
                url=url,
                source=source,
                raw=bytes(raw),
                sha256=hashlib.sha256(raw).hexdigest(),
                title=report.title,
                status=report.status,
                info_type=report.info_type,
                kind=report.kind,
                type_code=report.type_code or "",
                event_ids=list(report.event_ids),
                serial=report.serial,
                report_datetime=_aware(report.report_datetime),
                headline=report.headline or "",
                summary=report_summary(report, url),
            )
            publish_on_commit(JMA_GROUP, JMA_REPORT, report_data(doc))
            document_id = doc.id
            # Automatic dispatch decides it after commit; the safety scan decides it if this is lost.
            transaction.on_commit(lambda: jma_autodispatch_after_commit(document_id), robust=True)
    except IntegrityError:
        # Another process stored the same URL between our check and our insert: theirs is the one.
        existing = JmaDocument.objects.filter(url=url).defer("raw").first()
        if existing is None:
            raise
        return IngestResult(existing, False)
    return IngestResult(doc, True)


def jma_document_ingest(*, url: str, raw: bytes, source: str) -> JmaDocument:
    """Store and publish one JMA document, idempotent by `url` (see jma_document_ingest_result)."""
    return jma_document_ingest_result(url=url, raw=raw, source=source).document
