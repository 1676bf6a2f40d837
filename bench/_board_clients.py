"""The board sockets of `bench.board`, in a process of their own so that the answer load of the benchmark's
process never delays the moment a frame is seen.

Each board is a signed-in WebSocket (its session cookie) on `/<slug>/ws/` that subscribes to one board stream
with `last_seq` null, as the board page does, and then records every frame: its arrival (`time.time()`, the
clock the database's answer times come from), type, seq, and the board's `total` (answered, counts, needs
help). The last frame's department rows are kept for the final check.

Run as `python -m bench._board_clients`, driven over stdin/stdout with one JSON object per line:

    parent -> {"boards": [{"name", "cookie", "stream", "url", "origin"}], "timeout"}
    client -> {"ready": {"connected", "failed", "errors", "seconds"}}
    parent -> {"cmd": "peek"}        client -> {"peek": {name: answered on the newest frame}}
    parent -> {"cmd": "stop"}        (or stdin closes: the parent is gone)
    client -> {"result": {name: {"frames": [[arrival, type, seq, answered], ...], "last": {...},
                                 "totals": [total of each frame], "problems": [...]}}}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


@dataclass
class Board:
    name: str
    cookie: str
    stream: str
    frames: list[list[Any]] = field(default_factory=list)  # [arrival, "snapshot" | "event", seq, answered]
    totals: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)  # total and departments of the newest frame
    problems: list[str] = field(default_factory=list)
    last_seq: int | None = None

    def record(self, arrival: float, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "subscribed" or kind == "pong":
            return
        if kind not in ("snapshot", "event") or frame.get("stream") != self.stream:
            self.problems.append(f"unexpected frame: {json.dumps(frame)[:200]}")
            return
        if kind == "event" and frame.get("event") != "board.tally":
            return  # an instruction: none are posted during the benchmark
        seq = frame.get("seq")
        if kind == "event" and self.last_seq is not None and seq != self.last_seq + 1:
            self.problems.append(f"seq {seq} after {self.last_seq}")
        self.last_seq = seq
        data = frame["data"]
        total = data["total"]
        self.frames.append([arrival, kind, seq, total["answered"]])
        self.totals.append(total)
        self.last = {
            "seq": seq,
            "total": total,
            "departments": [
                {k: d[k] for k in ("id", "total", "answered", "counts", "needs_help")} for d in data["departments"]
            ],
        }


async def _open(url: str, origin: str, board: Board, limit: float) -> ClientConnection:
    ws = await connect(
        url,
        additional_headers={"Origin": origin, "Cookie": board.cookie},
        compression=None,
        max_size=2**24,
        open_timeout=limit,
    )
    hello = json.loads(await asyncio.wait_for(ws.recv(), limit))
    if hello.get("type") != "hello":
        raise RuntimeError(f"{board.name}: expected hello, got {str(hello)[:200]}")
    await ws.send(json.dumps({"type": "subscribe", "stream": board.stream, "last_seq": None}))
    while True:  # the snapshot, then "subscribed"
        text = await asyncio.wait_for(ws.recv(), limit)
        arrival = time.time()
        frame = json.loads(text)
        if frame.get("type") == "error":
            raise RuntimeError(f"{board.name}: {board.stream} refused: {str(frame)[:200]}")
        board.record(arrival, frame)
        if frame.get("type") == "subscribed":
            return ws


async def _read(ws: ClientConnection, board: Board) -> None:
    try:
        async for text in ws:
            arrival = time.time()
            board.record(arrival, json.loads(text))
    except ConnectionClosed as exc:
        board.problems.append(f"closed: {exc}")


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    config = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    boards = [Board(b["name"], b["cookie"], b["stream"]) for b in config["boards"]]
    started = time.monotonic()
    opened = await asyncio.gather(
        *(_open(c["url"], c["origin"], b, config["timeout"]) for c, b in zip(config["boards"], boards, strict=True)),
        return_exceptions=True,
    )
    sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
    errors = [f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException)]
    readers = [
        asyncio.ensure_future(_read(ws, b))
        for ws, b in zip(opened, boards, strict=True)
        if not isinstance(ws, BaseException)
    ]
    _emit(
        {
            "ready": {
                "connected": len(sockets),
                "failed": len(errors),
                "errors": errors[:3],
                "seconds": time.monotonic() - started,
            }
        }
    )
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or json.loads(line).get("cmd") != "peek":
            break  # "stop", or EOF when the parent is gone
        _emit({"peek": {b.name: b.last.get("total", {}).get("answered") for b in boards}})
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    _emit(
        {
            "result": {
                b.name: {"frames": b.frames, "totals": b.totals, "last": b.last, "problems": b.problems} for b in boards
            }
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
