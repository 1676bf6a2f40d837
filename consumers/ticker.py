"""Tickers: one coalescing loop per key (an incident's boards), run by whichever web process holds its lease.

A stream kind with a ticker (consumers/streams.py) sends frames of absolute state instead of one event per
change. Writers only mark the key dirty. The ticker looks every `poll` seconds; when the key is dirty (or
`refresh` seconds have passed, so a lost mark costs seconds, never correctness) it reads the state and sends a
frame on each stream whose state changed, and never more than one frame per stream per `gap` seconds.

Every web process whose sockets follow one of the key's streams runs a ticker for it, but only the holder of
the lease (a cache key with a TTL) ticks: the others wait, and take over within `lease` seconds if the holder
dies. Frames go through the channel layer to every process's hub, like any other event, and carry sequence
numbers from the stream's counter, so a socket that sees a gap asks for a snapshot.

The clock and the sleep are parameters, so the coalescing can be tested step by step.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)


class Frame(Protocol):
    @property
    def stream(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def digest(self) -> str: ...


@dataclass(frozen=True)
class TickerSpec:
    name: str
    # The ticker key of a stream (all streams of one incident share one ticker).
    key: Callable[[str], str]
    # Reads the state and returns frames for the streams whose digest differs from `sent` (sync: it queries).
    tick: Callable[[str, MutableMapping[str, str]], Sequence[Frame]]
    # Whether the key was marked changed since the last call, clearing the mark (sync).
    take_dirty: Callable[[str], bool]
    # Marks the streams this process's sockets follow, for `lease` × 2 seconds, so the holder's `tick` reads only
    # streams someone still follows (sync; called by every process's ticker, holder or not).
    follow: Callable[[Sequence[str], int], None] | None = None


# The tickers' reads run in one thread of their own that keeps its database connection from one read to the
# next (until a ticker stops). Taken from the pool on every read, as the request cycle does, each read would
# queue behind every request waiting for the pool: in a burst of answers the boards would stand still for as
# long as that queue is.
_reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticker-read")


def _keeping(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        connection.close()  # it may be broken: the next read takes a fresh one
        raise


def _close() -> None:
    connection.close()  # in the read thread: `connection` is that thread's


def _read(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(_reads, partial(_keeping, fn, *args))

    return call


def _lease_hold(name: str, owner: str, seconds: int) -> bool:
    if cache.add(name, owner, timeout=seconds):
        return True
    if cache.get(name) == owner:
        cache.touch(name, timeout=seconds)
        return True
    return False


def _lease_release(name: str, owner: str) -> None:
    if cache.get(name) == owner:
        cache.delete(name)


class Ticker:
    def __init__(
        self,
        spec: TickerSpec,
        key: str,
        *,
        layer: Any,
        owner: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        run_sync: Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]] | None = None,
        streams: set[str] | None = None,
    ) -> None:
        self.spec = spec
        self.key = key
        self.layer = layer
        self.owner = owner
        self.clock = clock
        self.sleep = sleep
        # Tests pass a run_sync that calls straight through. By default both run in worker threads of their own,
        # not the one thread that serves the process's sync views and consumers, so a read of the numbers never
        # holds up the answers being posted; the reads keep their connection (see _reads).
        self.run_cache = run_sync or (lambda fn: sync_to_async(fn, thread_sensitive=False))
        self.run_db = run_sync or _read
        self.poll = settings.BOARD_POLL_MS / 1000
        self.gap = settings.BOARD_FRAME_MS / 1000
        self.refresh = float(settings.BOARD_REFRESH_SECONDS)
        self.lease = settings.BOARD_LEASE_SECONDS
        self.lease_name = f"ticker:{spec.name}:{key}"
        # stream -> digest of the last frame sent on it
        self.sent: dict[str, str] = {}
        self.last_frame_at = -math.inf
        self.last_read_at = -math.inf
        self.last_lease_at = -math.inf
        self.holding = False
        self.frames_sent = 0
        # The streams of this key that this process's sockets follow (the hub's set, updated as they come and go).
        self.streams: set[str] = streams if streams is not None else set()
        self.follow_due = True
        self.last_follow_at = -math.inf

    async def _hold(self, now: float) -> bool:
        if self.holding and now - self.last_lease_at < self.lease / 3:
            return True
        holding = bool(await self.run_cache(_lease_hold)(self.lease_name, self.owner, self.lease))
        if holding and not self.holding:
            # Another process may have sent frames meanwhile: send every board again on the first read.
            self.sent.clear()
            self.last_read_at = -math.inf
        self.holding = holding
        if holding:
            self.last_lease_at = now
        return holding

    async def step(self) -> int:
        """One look: returns how many frames it sent."""
        now = self.clock()
        if (
            self.spec.follow is not None
            and self.streams
            and (self.follow_due or now - self.last_follow_at >= self.lease / 3)
        ):
            await self.run_cache(self.spec.follow)(sorted(self.streams), self.lease)
            self.follow_due, self.last_follow_at = False, now
        if not await self._hold(now):
            return 0
        if now - self.last_frame_at < self.gap:
            return 0  # too soon after the last frame; the dirty mark stays for the next look
        dirty = await self.run_cache(self.spec.take_dirty)(self.key)
        if not dirty and now - self.last_read_at < self.refresh:
            return 0
        self.last_read_at = now
        frames = await self.run_db(self.spec.tick)(self.key, dict(self.sent))
        for frame in frames:
            await self.layer.group_send(
                frame.stream, {"type": "stream.event", "stream": frame.stream, "seq": frame.seq, "text": frame.text}
            )
            self.sent[frame.stream] = frame.digest
        if frames:
            # The gap runs from when the frames went out, not from when this look began: a slow read or send
            # must not bring the next frame closer (boards would see three frames within one second).
            self.last_frame_at = self.clock()
            self.frames_sent += len(frames)
        return len(frames)

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database or Redis being away must not end the loop: the next look tries again.
                logger.warning("ticker %s failed; retrying", self.lease_name, exc_info=True)
                self.holding = False
            await self.sleep(self.poll)

    async def release(self) -> None:
        if self.run_db is _read:
            # Give the read thread's connection back; a ticker still running takes one again on its next read.
            await asyncio.get_running_loop().run_in_executor(_reads, _close)
        if self.holding:
            self.holding = False
            try:
                await self.run_cache(_lease_release)(self.lease_name, self.owner)
            except Exception:
                logger.warning("releasing %s failed", self.lease_name, exc_info=True)
