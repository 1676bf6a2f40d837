"""The coalescing ticker (consumers/ticker.py), step by step on a clock the test moves.

The spec is a fake with in-memory state: `mark()` changes a stream's state and sets the dirty flag, `tick` returns
a frame for each stream whose digest differs from what the ticker last sent and counts its calls. The layer
records group_send. The lease is the real Django cache of the test settings."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.cache import cache

from consumers.ticker import Ticker, TickerSpec

KEY = "7"
STREAMS = ("board.7", "board.7-3")


@pytest.fixture(autouse=True)
def board_settings(settings: Any) -> Any:
    """The production defaults, pinned so the arithmetic below holds whatever the environment sets."""
    settings.BOARD_POLL_MS = 250
    settings.BOARD_FRAME_MS = 500
    settings.BOARD_REFRESH_SECONDS = 5
    settings.BOARD_LEASE_SECONDS = 5
    cache.clear()
    yield settings
    cache.clear()


@dataclass(frozen=True)
class FakeFrame:
    stream: str
    seq: int
    text: str
    digest: str


@dataclass
class FakeSpec:
    """In-memory boards: stream -> a version number that `mark` moves on."""

    state: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    dirty: bool = False
    reads: int = 0
    seqs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    fail_next: bool = False

    def mark(self, *streams: str) -> None:
        for stream in streams or STREAMS[:1]:
            self.state[stream] += 1
        self.dirty = True

    def take_dirty(self, key: str) -> bool:
        assert key == KEY
        dirty, self.dirty = self.dirty, False
        return dirty

    def tick(self, key: str, sent: MutableMapping[str, str]) -> list[FakeFrame]:
        assert key == KEY
        self.reads += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away")
        frames = []
        for stream, version in self.state.items():
            digest = f"v{version}"
            if sent.get(stream) != digest:
                self.seqs[stream] += 1
                frames.append(FakeFrame(stream, self.seqs[stream], f"{stream}@{version}", digest))
        return frames

    def spec(self) -> TickerSpec:
        return TickerSpec(name="test", key=lambda stream: KEY, tick=self.tick, take_dirty=self.take_dirty)


@dataclass
class Clock:
    ms: int = 0

    def __call__(self) -> float:
        return self.ms / 1000  # from whole milliseconds, so no rounding drifts across thousands of steps


@dataclass
class Sent:
    at: float
    stream: str
    seq: int
    text: str


@dataclass
class FakeLayer:
    clock: Clock
    sent: list[Sent] = field(default_factory=list)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert message["type"] == "stream.event" and message["stream"] == group
        self.sent.append(Sent(self.clock(), group, message["seq"], message["text"]))

    def on(self, stream: str) -> list[Sent]:
        return [s for s in self.sent if s.stream == stream]


def direct(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any) -> Any:
        return fn(*args)

    return call


async def no_sleep(seconds: float) -> None:
    raise AssertionError("step() must not sleep")


def make(spec: FakeSpec, clock: Clock, layer: FakeLayer | None = None, owner: str = "web-1") -> Ticker:
    return Ticker(
        spec.spec(),
        KEY,
        layer=layer if layer is not None else FakeLayer(clock),
        owner=owner,
        clock=clock,
        sleep=no_sleep,
        run_sync=direct,
    )


async def first_look(ticker: Ticker, spec: FakeSpec) -> None:
    """The first look of a new holder reads at once and sends every stream."""
    assert await ticker.step() == len(STREAMS)
    assert spec.reads == 1


# --- (a) coalescing -----------------------------------------------------------------------------------------------


async def test_a_thousand_marks_between_two_looks_cost_one_read_and_one_frame():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    await first_look(ticker, spec)
    clock.ms += 1000
    for _ in range(1000):
        spec.mark("board.7")
    assert await ticker.step() == 1
    assert spec.reads == 2
    last = layer.on("board.7")[-1]
    assert (last.seq, last.text) == (2, "board.7@1000")
    assert len(layer.on("board.7-3")) == 1  # unchanged: not sent again
    assert await ticker.step() == 0 and spec.reads == 2  # the mark was taken


# --- (b) never closer than `gap`, and the last change always goes out ---------------------------------------------


async def test_frames_on_a_stream_are_at_least_gap_apart_and_the_last_change_is_sent():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    # 10 s: a mark every 10 ms, a look every 50 ms (faster than the configured poll, to press on the gap).
    for ms in range(0, 10_000, 10):
        clock.ms = ms
        spec.mark("board.7")
        if ms % 50 == 0:
            await ticker.step()
    frames = layer.on("board.7")
    times = [f.at for f in frames]
    assert all(b - a >= ticker.gap - 1e-9 for a, b in itertools.pairwise(times)), times
    assert len(frames) <= 2 * 10 + 1  # ≤ 2 frames per second, plus the first look
    assert len(frames) >= 19  # and it did keep sending while marks came in
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    # The marks stop; the next look after the gap sends the final state: no trailing update is lost.
    final = spec.state["board.7"]
    for _ in range(20):
        clock.ms += 50
        await ticker.step()
    assert layer.on("board.7")[-1].text == f"board.7@{final}"
    assert layer.on("board.7")[-1].at - times[-1] >= ticker.gap - 1e-9
    count = len(layer.on("board.7"))
    clock.ms += 60_000
    await ticker.step()  # a refresh: nothing changed, nothing sent
    assert len(layer.on("board.7")) == count


async def test_frames_sent_counts_every_frame():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    await first_look(ticker, spec)
    clock.ms += 500
    spec.mark(*STREAMS)
    assert await ticker.step() == 2
    assert ticker.frames_sent == len(layer.sent) == 4


# --- (c) no mark: one read per refresh ----------------------------------------------------------------------------


async def test_without_a_mark_nothing_is_read_until_refresh_then_one_read_and_no_frame():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    await first_look(ticker, spec)
    refresh_ms = int(ticker.refresh * 1000)
    for ms in range(250, refresh_ms, 250):
        clock.ms = ms
        assert await ticker.step() == 0
    assert spec.reads == 1
    clock.ms = refresh_ms
    assert await ticker.step() == 0
    assert spec.reads == 2  # read once; nothing changed, so no frame
    assert len(layer.sent) == len(STREAMS)
    clock.ms += 250
    await ticker.step()
    assert spec.reads == 2  # the refresh timer starts again


async def test_a_change_without_a_mark_is_sent_on_the_refresh():
    """A lost mark (the cache flushed) costs `refresh` seconds, never correctness."""
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    await first_look(ticker, spec)
    spec.state["board.7-3"] += 1  # changed, but the mark was lost
    clock.ms = int(ticker.refresh * 1000) - 1
    assert await ticker.step() == 0
    clock.ms += 1
    assert await ticker.step() == 1
    assert layer.sent[-1].text == "board.7-3@1"


# --- (d) a mark during the gap is kept ----------------------------------------------------------------------------


async def test_a_mark_during_the_gap_is_kept_and_sent_at_the_first_look_after_it():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    await first_look(ticker, spec)  # frames at 0 ms: the gap runs to 500 ms
    poll_ms, gap_ms = int(ticker.poll * 1000), int(ticker.gap * 1000)
    clock.ms = 10
    spec.mark("board.7")
    for ms in range(poll_ms, gap_ms, poll_ms):
        clock.ms = ms
        assert await ticker.step() == 0
    assert spec.dirty  # kept, not taken, during the gap
    assert spec.reads == 1
    clock.ms = gap_ms
    assert await ticker.step() == 1
    assert layer.sent[-1].text == "board.7@1"


@pytest.mark.parametrize(("poll_ms", "gap_ms"), [(250, 500), (300, 500), (50, 100), (400, 500)])
async def test_latency_from_mark_to_frame_is_at_most_gap_plus_poll(settings, poll_ms, gap_ms):
    settings.BOARD_POLL_MS, settings.BOARD_FRAME_MS = poll_ms, gap_ms
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    ticker = make(spec, clock, layer)
    assert (ticker.poll, ticker.gap) == (poll_ms / 1000, gap_ms / 1000)
    worst = 0
    # Looks every poll; a mark at every offset within a window, each after the previous one was sent.
    ms = 0
    await first_look(ticker, spec)
    for offset in range(0, 2 * gap_ms, 7):
        mark_at = ms + offset
        looks_at = (mark_at // poll_ms + 1) * poll_ms
        clock.ms = mark_at
        spec.mark("board.7")
        version = spec.state["board.7"]
        while True:
            clock.ms = looks_at
            await ticker.step()
            if layer.sent[-1].text == f"board.7@{version}":
                break
            looks_at += poll_ms
            assert looks_at - mark_at <= gap_ms + poll_ms, offset
        worst = max(worst, looks_at - mark_at)
        ms = looks_at
    assert worst <= gap_ms + poll_ms
    assert worst >= gap_ms  # a mark just after a frame waits for the gap


# --- (e) the lease ------------------------------------------------------------------------------------------------


async def test_only_the_lease_holder_ticks_and_the_other_takes_over_after_release():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    a = make(spec, clock, layer, owner="web-a")
    b = make(spec, clock, layer, owner="web-b")
    await first_look(a, spec)
    assert cache.get(a.lease_name) == "web-a"
    for _ in range(10):
        clock.ms += 500
        spec.mark("board.7")
        await a.step()
        assert await b.step() == 0
    assert spec.reads == 11 and not b.holding
    assert {s.text for s in layer.sent} >= {"board.7@10"}
    # The holder goes (its last socket left): the other one's next look holds the lease and sends every stream.
    await a.release()
    assert cache.get(a.lease_name) is None
    before = len(layer.sent)
    clock.ms += 250
    assert await b.step() == len(STREAMS)
    assert b.holding and cache.get(b.lease_name) == "web-b"
    assert [s.text for s in layer.sent[before:]] == ["board.7@10", "board.7-3@0"]
    clock.ms += 500
    assert await a.step() == 0  # the old holder is now the one waiting


async def test_a_returning_holder_sends_every_stream_again_even_if_it_sent_them_before():
    """Another process may have sent frames meanwhile (with later seqs): a holder's `sent` is stale on return."""
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    a = make(spec, clock, layer, owner="web-a")
    b = make(spec, clock, layer, owner="web-b")
    await first_look(a, spec)
    assert a.sent == {"board.7": "v0", "board.7-3": "v0"}
    # a's lease lapses (a stalled process); b holds it for a while and a sees that when it re-checks its lease.
    cache.delete(a.lease_name)
    clock.ms += 250
    assert await b.step() == len(STREAMS)
    clock.ms += int(a.lease / 3 * 1000)
    assert await a.step() == 0 and not a.holding
    await b.release()
    reads, before = spec.reads, len(layer.sent)
    clock.ms += 250
    assert await a.step() == len(STREAMS)  # nothing changed, yet both are sent again
    assert spec.reads == reads + 1
    assert [s.text for s in layer.sent[before:]] == ["board.7@0", "board.7-3@0"]


async def test_an_expired_lease_is_taken_over_with_real_time(settings):
    settings.BOARD_LEASE_SECONDS = 1  # below the environment's minimum, for a short real wait
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    a = make(spec, clock, layer, owner="web-a")
    b = make(spec, clock, layer, owner="web-b")
    await first_look(a, spec)
    assert await b.step() == 0
    # a dies without releasing: after the TTL the cache forgets the lease and b takes over.
    deadline = asyncio.get_running_loop().time() + 5
    while cache.get(a.lease_name) is not None:
        assert asyncio.get_running_loop().time() < deadline, "the lease never expired"
        await asyncio.sleep(0.05)
    clock.ms += 250
    assert await b.step() == len(STREAMS)
    assert cache.get(b.lease_name) == "web-b"


async def test_the_holder_renews_its_lease_while_it_runs(monkeypatch):
    spec, clock = FakeSpec(), Clock()
    a = make(spec, clock, owner="web-a")
    await first_look(a, spec)
    renewals = []
    real_touch = cache.touch

    def touch(key: str, timeout: Any = None, version: Any = None) -> bool:
        renewals.append((key, timeout))
        return real_touch(key, timeout=timeout, version=version)

    monkeypatch.setattr(cache, "touch", touch)
    for _ in range(int(a.lease * 1000 / 250) * 3):
        clock.ms += 250
        await a.step()
    assert renewals and all(r == (a.lease_name, a.lease) for r in renewals)
    # Renewed about every lease/3 of the ticker's clock, never per look.
    assert 6 <= len(renewals) <= 10, renewals
    assert cache.get(a.lease_name) == "web-a"


# --- (f) errors do not stop the loop ------------------------------------------------------------------------------


async def test_a_failing_tick_is_logged_and_run_keeps_going(caplog):
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.ms += round(seconds * 1000)
        if len(sleeps) == 3:
            spec.mark("board.7")
            spec.fail_next = True  # the read after this mark fails
        if len(sleeps) >= 12:
            raise asyncio.CancelledError

    ticker = Ticker(spec.spec(), KEY, layer=layer, owner="web-1", clock=clock, sleep=sleep, run_sync=direct)
    with caplog.at_level(logging.WARNING, logger="consumers.ticker"), pytest.raises(asyncio.CancelledError):
        await ticker.run()
    assert len(sleeps) == 12 and set(sleeps) == {ticker.poll}
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert "the database went away" in str(failures[0].exc_info[1])
    # The mark taken by the failed read is not lost: the next look re-reads and sends the change.
    assert layer.on("board.7")[-1].text == "board.7@1"
    assert spec.reads >= 3


async def test_a_failing_cache_is_logged_and_run_keeps_going(caplog):
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)
    calls = {"n": 0}
    real_take = spec.take_dirty

    def take_dirty(key: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("redis is away")
        return real_take(key)

    spec_obj = TickerSpec(name="test", key=lambda s: KEY, tick=spec.tick, take_dirty=take_dirty)
    stops = {"n": 0}

    async def sleep(seconds: float) -> None:
        stops["n"] += 1
        clock.ms += 250
        if stops["n"] == 1:
            spec.mark("board.7")
        if stops["n"] >= 6:
            raise asyncio.CancelledError

    ticker = Ticker(spec_obj, KEY, layer=layer, owner="web-1", clock=clock, sleep=sleep, run_sync=direct)
    with caplog.at_level(logging.WARNING, logger="consumers.ticker"), pytest.raises(asyncio.CancelledError):
        await ticker.run()
    assert any("redis is away" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert layer.on("board.7")[-1].text == "board.7@1"


async def test_cancelling_run_propagates_and_release_frees_the_lease():
    spec, clock = FakeSpec(), Clock()
    layer = FakeLayer(clock)

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    ticker = Ticker(spec.spec(), KEY, layer=layer, owner="web-1", clock=clock, sleep=sleep, run_sync=direct)
    task = asyncio.ensure_future(ticker.run())
    while not layer.sent:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache.get(ticker.lease_name) == "web-1"
    await ticker.release()
    assert cache.get(ticker.lease_name) is None
    await ticker.release()  # twice is harmless
