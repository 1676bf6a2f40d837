"""The JMA PULL-feed poller against a local HTTP server serving the fixture feeds and documents.

The feeds are the real fixture feeds cut down to a few entries, their links rewritten to the local server;
each link serves a real fixture document."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from safety.jma.poller import feed_poll, poll_all
from safety.models import JmaDocument, JmaFeed
from tests.services import free_port, shared_fixtures

ENTRY = re.compile(rb"<entry>.*?</entry>", re.S)
ENTRY_TITLE = re.compile(rb"<title>(.*?)</title>", re.S)
LAST_MODIFIED = formatdate(1704109403, usegmt=True)


def fixtures() -> Path:
    return shared_fixtures("jma")


@dataclass
class JmaServer:
    """Serves /feed/<name>.xml (with ETag and Last-Modified, 304 on a match) and /data/<name>.xml."""

    port: int
    feeds: dict[str, bytes] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # paths answered with 500
    outage: bool = False  # every path answered with 500
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def etag(self, path: str) -> str:
        return f'"{hash(self.feeds[path]) & 0xFFFFFFFF:x}"'

    def gets(self, prefix: str = "") -> list[str]:
        return [path for path, _ in self.requests if path.startswith(prefix)]

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if server.outage or self.path in server.failing:
                    return self._send(500, b"oops")
                if self.path in server.feeds:
                    etag = server.etag(self.path)
                    if self.headers.get("If-None-Match") == etag:
                        return self._send(304, b"", {"ETag": etag})
                    headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
                    return self._send(200, server.feeds[self.path], headers)
                if self.path in server.redirects:
                    return self._send(302, b"", {"Location": server.redirects[self.path]})
                if self.path in server.documents:
                    return self._send(200, server.documents[self.path])
                return self._send(404, b"not found")

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if status != 304:
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@pytest.fixture
def jma_server(settings) -> Iterator[JmaServer]:
    settings.JMA_HTTP_TIMEOUT = 5
    server = JmaServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fixture_entries(feed_file: str, title: str, count: int) -> list[bytes]:
    feed = next((fixtures() / "feeds").glob(f"*{feed_file}*")).read_bytes()
    entries = [e for e in ENTRY.findall(feed) if ENTRY_TITLE.search(e).group(1).decode() == title]
    assert len(entries) >= count, (feed_file, title)
    return entries[:count]


def relink(entry: bytes, url: str) -> bytes:
    entry = re.sub(rb'href="[^"]*"', b'href="' + url.encode() + b'"', entry)
    return re.sub(rb"<id>[^<]*</id>", b"<id>" + url.encode() + b"</id>", entry)


def atom(entries: list[bytes]) -> bytes:
    return (
        b'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" lang="ja">\n'
        b"<title>test</title><updated>2024-01-01T20:53:23+09:00</updated><id>urn:test</id>\n"
        + b"\n".join(entries)
        + b"\n</feed>\n"
    )


@dataclass
class Feeds:
    """Which fixture document each listed link serves, per feed."""

    server: JmaServer
    eqvol: list[tuple[bytes, str]] = field(default_factory=list)  # (entry template, fixture document)
    extra: list[tuple[bytes, str]] = field(default_factory=list)

    def link(self, document: str) -> str:
        return self.server.url("/data/" + Path(document).name)

    def publish(self) -> None:
        for name, listed in (("eqvol", self.eqvol), ("extra", self.extra)):
            entries = []
            for template, document in listed:
                self.server.documents["/data/" + Path(document).name] = (fixtures() / document).read_bytes()
                entries.append(relink(template, self.link(document)))
            self.server.feeds[f"/feed/{name}.xml"] = atom(entries)

    @property
    def urls(self) -> list[str]:
        return [self.server.url("/feed/eqvol.xml"), self.server.url("/feed/extra.xml")]


EQ = [
    "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml",
    "earthquake/REAL_2024-01-06_noto_vxse52__EpicenterInfo.xml",
    "earthquake/iwatemiyagi2008_vxse53_serial1_max6plus_19prefs__32-35_06_03_240613_VXSE53.xml",
    "earthquake/tohoku2011_vxse53_MAXINT7_41prefs__32-39_11_05_240613_VXSE53.xml",
    "earthquake/osumi2010_vxse53_serial1_max4__32-35_04_04_240613_VXSE53.xml",
]
TSUNAMI = "tsunami/REAL_2024-01-01_noto_vtse51_observation__TsunamiInfo.xml"
WEATHER = [
    "weather/hyogo2013_vpww53_SPECIAL_4kinds__15_10_03_160628_VPWW53.xml",
    "weather/nara2011_vpww53_SPECIAL_heavyrain_issued__15_08_01_130412_VPWW53.xml",
    "weather/tokyo2016_vpww54_SPECIAL_4kinds__15_13_01_161226_VPWW54.xml",
]


@pytest.fixture
def feeds(jma_server, settings) -> Feeds:
    quake = fixture_entries("eqvol", "震源・震度に関する情報", 5)
    tsunami = fixture_entries("eqvol", "津波情報a", 1)
    warning = fixture_entries("extra", "気象特別警報・警報・注意報", 2)
    h27 = fixture_entries("extra", "気象警報・注意報（Ｈ２７）", 1)
    result = Feeds(jma_server)
    result.eqvol = [(quake[0], EQ[0]), (quake[1], EQ[1]), (tsunami[0], TSUNAMI)]
    # WEATHER[0] is listed in both feeds (as the real feeds do with some messages).
    result.extra = [(warning[0], WEATHER[0]), (warning[1], WEATHER[1]), (h27[0], WEATHER[2]), (tsunami[0], TSUNAMI)]
    result.publish()
    settings.JMA_FEED_URLS = result.urls
    return result


def stored_urls() -> set[str]:
    return set(JmaDocument.objects.values_list("url", flat=True))


def test_first_poll_fetches_every_listed_document_once(db, jma_server, feeds):
    results = poll_all()

    listed = {feeds.link(d) for _, d in feeds.eqvol + feeds.extra}
    assert stored_urls() == listed
    assert all(r.ok for r in results), results
    documents = jma_server.gets("/data/")
    assert sorted(documents) == sorted({"/data/" + Path(d).name for _, d in feeds.eqvol + feeds.extra})
    # Listed in both feeds, fetched and stored once.
    assert documents.count("/data/" + Path(TSUNAMI).name) == 1
    assert set(JmaDocument.objects.values_list("source", flat=True)) == {"pull"}
    kinds = dict(JmaDocument.objects.values_list("url", "kind"))
    assert kinds[feeds.link(TSUNAMI)] == "tsunami" and kinds[feeds.link(WEATHER[0])] == "weather"


def test_entries_of_other_message_types_are_not_fetched(db, jma_server, feeds):
    ash = fixture_entries("eqvol", "降灰予報（定時）", 1)[0]
    feeds.eqvol.append((ash, "earthquake/vxse51_CANCEL_2022__32-35_10_01_220510_VXSE51.xml"))
    feeds.publish()
    poll_all()
    assert "/data/vxse51_CANCEL_2022__32-35_10_01_220510_VXSE51.xml" not in jma_server.gets("/data/")


def test_repoll_with_nothing_new_is_a_conditional_get_and_fetches_nothing(db, jma_server, feeds):
    poll_all()
    jma_server.requests.clear()

    results = poll_all()

    assert [r.not_modified for r in results] == [True, True]
    assert jma_server.gets("/data/") == []
    for path, headers in jma_server.requests:
        assert headers["if-none-match"] == jma_server.etag(path)
        assert headers["if-modified-since"] == LAST_MODIFIED


def test_changed_feed_fetches_only_the_new_documents(db, jma_server, feeds):
    poll_all()
    jma_server.requests.clear()
    quake = fixture_entries("eqvol", "震源・震度に関する情報", 3)[2]
    feeds.eqvol.insert(0, (quake, EQ[2]))
    feeds.publish()

    poll_all()

    assert jma_server.gets("/data/") == ["/data/" + Path(EQ[2]).name]
    assert feeds.link(EQ[2]) in stored_urls()


def test_after_an_outage_the_poller_catches_up_on_what_the_feed_still_lists(db, jma_server, feeds):
    poll_all()
    before = stored_urls()
    quake = fixture_entries("eqvol", "震源・震度に関する情報", 5)
    # During the outage two more reports are published.
    feeds.eqvol[:0] = [(quake[3], EQ[3]), (quake[4], EQ[4])]
    feeds.publish()

    jma_server.outage = True
    results = poll_all()
    assert all(r.error == "feed: HTTP 500" for r in results)
    assert JmaFeed.objects.get(url=feeds.urls[0]).last_error == "feed: HTTP 500"

    jma_server.stop()  # and then the server is down altogether
    results = poll_all()
    assert all(r.error.startswith("feed: ") for r in results)
    assert stored_urls() == before

    jma_server.outage = False
    jma_server.requests.clear()
    jma_server.start()
    results = poll_all()

    assert all(r.ok for r in results), results
    assert stored_urls() == before | {feeds.link(EQ[3]), feeds.link(EQ[4])}
    assert sorted(jma_server.gets("/data/")) == sorted("/data/" + Path(d).name for d in EQ[3:5])
    assert JmaFeed.objects.get(url=feeds.urls[0]).last_error == ""


def test_a_broken_document_does_not_stop_the_others_and_is_retried(db, jma_server, feeds):
    broken = "/data/" + Path(EQ[1]).name
    failing = "/data/" + Path(WEATHER[1]).name
    jma_server.documents[broken] = b"<?xml version='1.0'?><Report><Control><Title>"
    jma_server.failing.add(failing)

    results = poll_all()

    listed = {feeds.link(d) for _, d in feeds.eqvol + feeds.extra}
    assert stored_urls() == listed - {jma_server.url(broken), jma_server.url(failing)}
    failed = {url: reason for r in results for url, reason in r.failed.items()}
    assert set(failed) == {jma_server.url(broken), jma_server.url(failing)}
    assert "JmaParseError" in failed[jma_server.url(broken)]
    assert "HTTP 500" in failed[jma_server.url(failing)]
    assert "1 document(s) failed" in JmaFeed.objects.get(url=feeds.urls[0]).last_error

    # Fixed upstream: the next poll fetches just those two again (no 304 while something is missing).
    jma_server.documents[broken] = (fixtures() / EQ[1]).read_bytes()
    jma_server.failing.clear()
    jma_server.requests.clear()
    results = poll_all()
    assert stored_urls() == listed
    assert sorted(jma_server.gets("/data/")) == sorted([broken, failing])
    assert all(r.ok for r in results)


def test_document_over_the_size_limit_is_refused(db, jma_server, feeds, settings):
    settings.JMA_MAX_DOCUMENT_BYTES = 64 * 1024
    big = "/data/" + Path(EQ[0]).name
    jma_server.documents[big] = b"<Report>" + b" " * (64 * 1024) + b"</Report>"
    result = feed_poll(feeds.urls[0])
    assert "over 65536 bytes" in result.failed[jma_server.url(big)]
    assert jma_server.url(big) not in stored_urls()


def test_empty_feed_list_polls_nothing(db, jma_server, settings):
    settings.JMA_FEED_URLS = []
    assert poll_all() == []
    assert jma_server.requests == []


def test_links_that_are_not_http_are_never_fetched(db, jma_server, settings):
    jma_server.feeds["/feed/evil.xml"] = atom(
        [
            b"<entry><title>\xe9\x9c\x87\xe5\xba\xa6\xe9\x80\x9f\xe5\xa0\xb1</title><id>x</id>"
            b"<updated>2024-01-01T11:37:10Z</updated><author><name>a</name></author>"
            b'<link type="application/xml" href="file:///etc/passwd"/><content type="text">x</content></entry>'
        ]
    )
    result = feed_poll(jma_server.url("/feed/evil.xml"))
    assert "not an http(s) URL" in result.failed["file:///etc/passwd"]
    assert not JmaDocument.objects.exists()


def test_redirects_are_followed_to_http_only(db, jma_server, feeds):
    moved, elsewhere = "/data/" + Path(EQ[0]).name, "/data/" + Path(EQ[1]).name
    jma_server.redirects[moved] = "ftp://127.0.0.1/x.xml"
    jma_server.redirects[elsewhere] = jma_server.url("/moved/epicenter.xml")
    jma_server.documents["/moved/epicenter.xml"] = (fixtures() / EQ[1]).read_bytes()
    result = feed_poll(feeds.urls[0])
    assert "HTTP 302" in result.failed[jma_server.url(moved)]
    assert jma_server.url(elsewhere) in stored_urls()  # stored under the listed URL
