"""Issue 10, fault 6: a board that goes offline for 30 s while 500 answers arrive catches up to the exact counts.

The real board page (frontend/static/frontend/board.js over app.js's live connection) runs in headless Chromium
against a real daphne, PostgreSQL and Redis. A crisis manager has the board of an incident sent to 500 people
open on a laptop. The laptop's network goes away, and during the next 30 s all 500 people answer through their
signed links. Going away is two things: Chromium's network emulation (`set_offline`: every new request and
reconnect fails) and a TCP proxy between the laptop and daphne that resets its open connections. The emulation
alone leaves an already open WebSocket open (tried: the page's socket did not close within 15 s), so the proxy
cuts it, as a network that drops does. While offline the board must not move. When the network comes back, the page
reconnects (with its own back-off) and re-subscribes from its last sequence number; the server answers with a
snapshot, and every number on the board equals the database: answered, total, each status, needs help.

Screenshots: test-artifacts/screenshots/board-offline-reconnecting.png (offline: the board says it is reconnecting)
and board-offline-caught-up.png (back online, caught up)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from bench._answers_data import departments_create, incident_open, people_create, recipients_create
from directory.models import Organization, Role
from safety.tokens import answer_token
from tests import factories
from tests.browser.test_pwa import Tab, chromium
from tests.resilience.test_connection_storm import signed_in_sessions
from tests.resilience.test_redis_restart import Posted, answer_burst, database_totals, lost_answers
from tests.services import DAPHNE_ARGS, daphne, free_port, require_postgres, require_redis, subprocess_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SLUG = "acme"
PEOPLE = 500
OFFLINE_SECONDS = 30
PHONES = 10
PAUSE = 0.3  # 500 answers from 10 phones take about 20 s of the 30 s offline on an idle machine
CATCH_UP_SECONDS = 90  # app.js backs off up to ~30 s after a long outage; then the snapshot
# Functions, not expressions: Playwright polls an expression with eval(), which the page's CSP refuses.
BOARD_LIVE = "() => document.getElementById('board')?.dataset.liveState === 'live'"
SOCKET_CLOSED = "() => document.body.dataset.live === 'closed'"
STATUSES = ("safe", "minor", "serious", "answered", "none")
READ_BOARD = """(statuses) => {
  const top = (sel) => [...document.querySelectorAll(sel)].find((el) => !el.closest('#board-departments'));
  const number = (sel) => { const el = top(sel); return el ? Number(el.textContent.replace(/[^0-9]/g, '')) : null; };
  const counts = {};
  for (const s of statuses) counts[s] = number(`[data-count="${s}"]`);
  return {
    total: number('[data-board="total"]'),
    answered: number('[data-board="answered"]'),
    needs_help: number('[data-board="needs_help"]'),
    counts,
    seq: Number(document.getElementById('board').dataset.seq),
  };
}"""


class CuttableProxy:
    """A TCP proxy to `target` on its own port and event loop (a thread): `cut()` resets every open connection
    and refuses new ones until `restore()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.offline = False
        self.loop = asyncio.new_event_loop()
        self.transports: set[asyncio.WriteTransport] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cuttable-proxy", daemon=True)
        self.server: asyncio.base_events.Server | None = None

    def start(self) -> None:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop
        ).result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            for transport in list(self.transports):
                transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def cut(self) -> int:
        """Go offline: reset the open connections (returns how many) and refuse new ones."""

        async def abort() -> int:
            self.offline = True
            open_now = list(self.transports)
            for transport in open_now:
                transport.abort()
            return len(open_now)

        return asyncio.run_coroutine_threadsafe(abort(), self.loop).result(timeout=10)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "offline", False)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.offline:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer.transport, up_writer.transport)
        self.transports.update(pair)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                if self.offline:
                    sink.transport.abort()
                else:
                    sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.transports.difference_update(pair)


def read_board(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(READ_BOARD, list(STATUSES)))


def equal_to(shown: dict[str, Any], direct: dict[str, Any]) -> bool:
    return all(shown[k] == direct[k] for k in ("total", "answered", "needs_help")) and all(
        shown["counts"][s] == direct["counts"][s] for s in STATUSES
    )


def test_a_board_offline_for_30_seconds_while_500_answers_arrive_catches_up_to_the_exact_counts() -> None:
    require_postgres()
    require_redis()
    org = Organization.objects.create(slug=SLUG, name="ACME株式会社")
    ids = people_create(org, PEOPLE, departments_create(org, 12))
    incident = incident_open(org, "【地震】震度6強 安否確認")
    incident_id = incident.id
    recipients_create(incident, ids)
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    session_key = signed_in_sessions([crisis])[0]
    tokens = {pid: answer_token(organization_id=org.id, incident_id=incident_id, person_id=pid) for pid in ids}

    env = subprocess_env(CELERY_TASK_ALWAYS_EAGER="true")
    with (
        daphne(env, args=(*DAPHNE_ARGS, "--access-log", os.devnull)) as server,
        chromium() as browser,
    ):
        proxy = CuttableProxy(int(server.rsplit(":", 1)[1]))
        proxy.start()
        try:
            _offline_board(browser, server, f"http://127.0.0.1:{proxy.port}", proxy, incident_id, session_key, tokens)
        finally:
            proxy.stop()


def _offline_board(
    browser: Browser,
    server: str,
    base: str,
    proxy: CuttableProxy,
    incident_id: int,
    session_key: str,
    tokens: dict[int, str],
) -> None:
    _, before = database_totals(incident_id)
    assert before["answered"] == 0
    context = browser.new_context(base_url=base, locale="ja-JP", viewport={"width": 1366, "height": 768})
    context.set_default_timeout(30_000)
    context.add_cookies(
        [
            {"name": "sessionid", "value": session_key, "url": base},
            {"name": "django_language", "value": "ja", "url": base},
        ]
    )
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    page = tab.page
    response = page.goto(f"/{SLUG}/safety/incidents/{incident_id}/board/")
    assert response is not None and response.status == 200, response and response.status
    page.wait_for_function(BOARD_LIVE)
    assert equal_to(read_board(page), before), (read_board(page), before)
    page.evaluate("() => { window.notReloaded = true; }")

    # Offline: the socket drops and the board says it is reconnecting.
    context.set_offline(True)
    offline_at = time.monotonic()
    cut = proxy.cut()
    assert cut >= 2, f"the proxy had {cut} connections open: the page's socket should be one of them"
    page.wait_for_function(SOCKET_CLOSED, timeout=15_000)
    assert page.evaluate("() => document.getElementById('board').dataset.liveState") == "reconnecting"
    tab.shot("board-offline-reconnecting")

    # 500 people answer while the board is offline (from another thread: Playwright's loop runs in this one).
    results: list[Posted] = []
    burst = threading.Thread(
        target=lambda: results.extend(
            asyncio.run(answer_burst(server, tokens, phones=PHONES, pause=PAUSE, on_count={}))
        ),
        daemon=True,
    )
    burst.start()
    burst.join(timeout=240)
    assert not burst.is_alive(), "the answers did not finish within 240 s"
    posted_in = time.monotonic() - offline_at
    page.wait_for_timeout(max(0.0, OFFLINE_SECONDS - (time.monotonic() - offline_at)) * 1000)
    stale = read_board(page)
    assert stale["answered"] == 0, f"the board moved while offline: {stale}"
    offline_for = time.monotonic() - offline_at

    # Back online: the page reconnects by itself and catches up.
    proxy.restore()
    context.set_offline(False)
    online_at = time.monotonic()
    _, direct = database_totals(incident_id)
    deadline = online_at + CATCH_UP_SECONDS
    shown = read_board(page)
    while not (equal_to(shown, direct) and page.evaluate(BOARD_LIVE)) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        shown = read_board(page)
    caught_up_after = time.monotonic() - online_at
    tab.shot("board-offline-caught-up")
    print(
        f"\noffline {offline_for:.1f}s, 500 answers posted in {posted_in:.1f}s,"
        f" caught up {caught_up_after:.1f}s after coming back online; board {shown}; database {direct}"
    )

    statuses = sorted({r.status for r in results})
    assert len(results) == PEOPLE and statuses == [200], f"answer statuses: {statuses}"
    assert lost_answers(results, incident_id) == []
    assert direct["answered"] == PEOPLE
    assert equal_to(shown, direct), f"the board did not catch up within {CATCH_UP_SECONDS}s: {shown} != {direct}"
    assert page.evaluate(BOARD_LIVE)
    assert page.evaluate("() => window.notReloaded") is True, "the page reloaded instead of catching up"
    text = page.locator("#board-live-text").inner_text()
    assert not re.search(r"再接続|reconnect", text, re.IGNORECASE), text
    assert tab.errors == [], tab.errors
