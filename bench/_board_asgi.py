"""ASGI application of `bench.board --trace`: the project's own (config.asgi), with the board ticker timed from
inside daphne. Each line of the file named by BENCH_BOARD_TRACE is one JSON object (times are time.time()):

    {"ev": "touch", "t"}                                 an answer's board_touch after its commit
    {"ev": "dirty", "t0", "t1", "dirty"}                  board_take_dirty (in its worker thread)
    {"ev": "tick", "t0", "t1", "connect", "cpu", "frames"} board_tick (in the ticker's read thread): the wait
                                                          for a database connection, the thread's CPU time
    {"ev": "step", "t0", "t1", "frames", "lag"}           one Ticker.step; lag = how late the loop woke it
    {"ev": "answer", "t0", "wall", "cpu", "parts"}        LinkAnswerApi.post: its wall and thread CPU time,
                                                          and {part: [wall, cpu]} of the calls inside it

Nothing else changes: the production run of the benchmark serves config.asgi:application itself."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

from django.db import connection

from config.asgi import application
from consumers import streams
from consumers.ticker import Frame, Ticker
from safety import api_safety, board, services

_out = open(os.environ["BENCH_BOARD_TRACE"], "a", buffering=1)  # noqa: SIM115 -- open for the process's life
_lock = threading.Lock()


def _write(**record: Any) -> None:
    with _lock:
        _out.write(json.dumps(record) + "\n")


def _touch(incident_id: int) -> None:
    board.board_touch(incident_id)
    _write(ev="touch", t=time.time())


def _take_dirty(key: str) -> bool:
    t0 = time.time()
    dirty = board.board_take_dirty(key)
    _write(ev="dirty", t0=t0, t1=time.time(), dirty=dirty)
    return dirty


def _tick(key: str, sent: MutableMapping[str, str]) -> Sequence[Frame]:
    t0, cpu = time.time(), time.thread_time()
    connection.ensure_connection()  # what the first query would do: from the pool, waiting if it is empty
    connected = time.time()
    frames = board.board_tick(key, sent)
    t1 = time.time()
    _write(ev="tick", t0=t0, t1=t1, connect=connected - t0, cpu=time.thread_time() - cpu, frames=len(frames))
    return frames


_step = Ticker.step
_woken: dict[int, float] = {}


async def _timed_step(self: Ticker) -> int:
    t0 = time.time()
    planned = _woken.get(id(self))
    frames = await _step(self)
    t1 = time.time()
    _woken[id(self)] = t1 + self.poll
    _write(ev="step", t0=t0, t1=t1, frames=frames, lag=None if planned is None else t0 - planned)
    return frames


_parts = threading.local()


def _timed(name: str, fn: Any) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            parts = getattr(_parts, "parts", None)
            if parts is not None:
                spent = parts.setdefault(name, [0.0, 0.0])
                spent[0] += time.perf_counter() - wall
                spent[1] += time.thread_time() - cpu

    return timed


_post = api_safety.LinkAnswerApi.post


def _timed_post(self: Any, request: Any, slug: str, token: str) -> Any:
    _parts.parts = {}
    t0, wall, cpu = time.time(), time.perf_counter(), time.thread_time()
    try:
        return _post(self, request, slug, token)
    finally:
        _write(
            ev="answer",
            t0=t0,
            wall=time.perf_counter() - wall,
            cpu=time.thread_time() - cpu,
            parts=_parts.parts,
        )
        _parts.parts = None


api_safety.throttle_allow = _timed("throttle", api_safety.throttle_allow)  # type: ignore[attr-defined]
_link_recipient = _timed("link_recipient", api_safety.link_recipient)
_connect = _timed("connect", connection.ensure_connection)


def _connected_link_recipient(*args: Any, **kwargs: Any) -> Any:
    _connect()  # the request's first query takes a connection from the pool, waiting while it is empty
    return _link_recipient(*args, **kwargs)


api_safety.link_recipient = _connected_link_recipient
api_safety.request_data = _timed("request_data", api_safety.request_data)
services.answer_submit = _timed("answer_submit", services.answer_submit)
services._answer_write = _timed("answer_write", services._answer_write)
services.publish_now = _timed("publish_now", services.publish_now)  # type: ignore[attr-defined]
api_safety.LinkAnswerApi.post = _timed_post  # type: ignore[method-assign]
_touch = _timed("board_touch", _touch)
services.board_touch = _touch  # type: ignore[attr-defined]  # answer_submit's on-commit call
_kind = streams.STREAM_KINDS["board"]
assert _kind.ticker is not None
streams.STREAM_KINDS["board"] = dataclasses.replace(
    _kind, ticker=dataclasses.replace(_kind.ticker, tick=_tick, take_dirty=_take_dirty)
)
Ticker.step = _timed_step  # type: ignore[method-assign]

__all__ = ["application"]
