"""Polling JMA's PULL feeds (Atom): conditional GET, then fetch each listed document we have not stored.

A document is fetched once: it is keyed by its URL, and the stored URLs are looked up in one query per feed.
A document that fails (HTTP error, timeout, too large, parse error) is not stored, so the next poll fetches
it again for as long as the feed lists it; that is also how an outage is caught up. While any document of a
feed failed we keep no validator (ETag / Last-Modified) for it, so the next poll gets the whole feed back
instead of a 304. Only http(s) links are fetched, with a timeout and a size cap on every body.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import IO
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from safety.jma.ingest import jma_document_ingest_result
from safety.jma.parser import FeedEntry, JmaParseError, parse_feed
from safety.models import JmaDocument, JmaFeed, JmaSource

logger = logging.getLogger(__name__)

USER_AGENT = "tsunagu-jma-poller/1"
# Feed entry titles of the messages we parse; the feeds also list ash-fall, heat, typhoon and other reports.
RELEVANT_TITLE_PREFIXES = (
    "震度速報",
    "震源に関する情報",
    "震源・震度に関する情報",
    "緊急地震速報",
    "津波",
    "沖合の津波",
    "気象特別警報",
    "気象警報・注意報",
)


class FetchError(Exception):
    pass


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (the default handler would also follow ftp:)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme not in ("http", "https"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def build_session() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HttpOnlyRedirects)


@dataclass
class PollResult:
    feed_url: str
    not_modified: bool = False
    error: str = ""
    listed: int = 0
    fetched: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and not self.failed


def is_relevant(entry: FeedEntry) -> bool:
    return entry.title.strip().startswith(RELEVANT_TITLE_PREFIXES)


def _fetch(
    opener: urllib.request.OpenerDirector, url: str, *, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """GET `url`: (status, body, headers). 304 is returned, not raised; any other non-2xx raises FetchError."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"not an http(s) URL: {url[:200]}")
    limit = settings.JMA_MAX_DOCUMENT_BYTES
    # S310: the scheme is checked just above; redirects are only followed to http(s).
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})  # noqa: S310
    try:
        with opener.open(request, timeout=settings.JMA_HTTP_TIMEOUT) as response:
            body = response.read(limit + 1)
            if len(body) > limit:
                raise FetchError(f"body over {limit} bytes")
            return response.status, body, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return 304, b"", {k.lower(): v for k, v in exc.headers.items()}
        raise FetchError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(str(getattr(exc, "reason", exc)) or exc.__class__.__name__) from None


def feed_poll(
    feed_url: str,
    *,
    session: urllib.request.OpenerDirector | None = None,
    attempted: set[str] | None = None,
) -> PollResult:
    """Poll one feed and ingest every relevant listed document not yet stored (source "pull").

    `attempted` is shared across the feeds of one round, so a document listed in two feeds is fetched once."""
    opener = session or build_session()
    attempted = set() if attempted is None else attempted
    result = PollResult(feed_url)
    feed, _ = JmaFeed.objects.get_or_create(url=feed_url)
    conditional: dict[str, str] = {}
    if feed.etag:
        conditional["If-None-Match"] = feed.etag
    if feed.last_modified:
        conditional["If-Modified-Since"] = feed.last_modified
    feed.last_polled_at = timezone.now()
    try:
        status, body, headers = _fetch(opener, feed_url, headers=conditional)
        if status == 304:
            result.not_modified = True
            feed.last_error = ""
            feed.save(update_fields=["last_polled_at", "last_error"])
            return result
        entries = parse_feed(body)
    except (FetchError, JmaParseError) as exc:
        result.error = f"feed: {exc}"
        feed.last_error = result.error[:2000]
        feed.save(update_fields=["last_polled_at", "last_error"])
        logger.warning("JMA feed %s: %s", feed_url, exc)
        return result

    links = _unique(entry.link.strip() for entry in entries if entry.link and is_relevant(entry))
    result.listed = len(links)
    stored = set(JmaDocument.objects.filter(url__in=links).values_list("url", flat=True))
    for link in links:
        if link in stored or link in attempted:
            continue
        attempted.add(link)
        result.fetched.append(link)
        try:
            _, raw, _ = _fetch(opener, link)
            if jma_document_ingest_result(url=link, raw=raw, source=JmaSource.PULL).created:
                result.stored.append(link)
        except Exception as exc:  # one bad document must not stop the others
            result.failed[link] = f"{exc.__class__.__name__}: {exc}"[:500]
            logger.warning("JMA document %s: %s", link, result.failed[link])

    # Keep the validators only when everything listed is stored; otherwise a 304 would hide the failures.
    feed.etag = headers.get("etag", "")[:500] if not result.failed else ""
    feed.last_modified = headers.get("last-modified", "")[:100] if not result.failed else ""
    feed.last_error = (
        (f"{len(result.failed)} document(s) failed: " + "; ".join(f"{u} {e}" for u, e in result.failed.items()))[:2000]
        if result.failed
        else ""
    )
    feed.save(update_fields=["etag", "last_modified", "last_polled_at", "last_error"])
    return result


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def poll_all(*, session: urllib.request.OpenerDirector | None = None) -> list[PollResult]:
    """Poll every feed in settings.JMA_FEED_URLS (an empty list disables polling)."""
    attempted: set[str] = set()
    session = session or build_session()
    return [feed_poll(url, session=session, attempted=attempted) for url in settings.JMA_FEED_URLS]
