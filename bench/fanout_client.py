"""The client side of `bench.chat_fanout`: many WebSocket clients in one process, cheap enough not to be the
bottleneck.

Each client is a bare `asyncio.Protocol` that writes the HTTP Upgrade request itself and parses the server's
(unmasked) frames from the raw stream; it answers pings and nothing else (its subscribe frame is masked, as
the protocol requires of clients). While a burst is on, a frame costs one slice and one append; the JSON is
read after the burst.

Run by the benchmark as `python -m bench.fanout_client`, driven over stdin/stdout with one JSON object per
line:

    parent -> {"host", "port", "path", "origin", "cookies": [..] | null, "count", "batch", "mode",
               "subscribe": {...} | null, "stream": str | null, "connect_timeout"}
    client -> {"ready": true, "connected", "failed", "errors", "seconds"}
    parent -> {"cmd": "round", "lo", "hi", "timeout"}       client -> {"armed": true}
              (the parent now sends messages lo..hi-1)       client -> {"result": {...}}
    parent -> {"cmd": "quit"}

Modes: "ours" reads our event frames (`seq` per stream, message number and send time in `data.body` as
"<i> <time>"); "plain" reads `{"seq": i, "t": time, ...}`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

GRACE_SECONDS = 0.3  # after the last expected frame, to catch duplicates


class Shared:
    """State all clients of the process share during a burst."""

    def __init__(self) -> None:
        self.counting = False
        self.marker = b'"seq"'
        self.count = 0
        self.expected = 0
        self.done: asyncio.Future[float] | None = None


def _mask(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return header + key + masked


class Client(asyncio.Protocol):
    def __init__(self, shared: Shared, request: bytes) -> None:
        self.shared = shared
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.rest = b""
        self.fragments: list[bytes] = []
        # During set-up: parsed control frames go here; during a burst: (arrival, payload) pairs.
        self.setup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames: list[tuple[float, bytes]] = []
        self.collecting = False
        self.closed: str | None = None
        self.last_seq: int | None = None  # ours: the stream's seq this socket has reached
        self.setup_bytes = 0  # the largest frame before the bursts (our snapshot)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = f"connection lost ({exc or 'closed by server'})"
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(self.closed))
        self.setup.put_nowait({"type": "_closed", "reason": self.closed})

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(_mask(0x1, text.encode()))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.upgraded:
            data = self.rest + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.rest = data
                return
            status = data[: data.find(b"\r\n")]
            if not status.startswith(b"HTTP/1.1 101"):
                self.closed = f"handshake refused: {status.decode(errors='replace')}"
                if not self.handshake.done():
                    self.handshake.set_exception(ConnectionError(self.closed))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            self.rest = b""
            data = data[end + 4 :]
            self.handshake.set_result(None)
            if not data:
                return
        if self.rest:
            data = self.rest + data
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0, length = data[pos], data[pos + 1]
            if length & 0x80:
                self._fail("server sent a masked frame")
                return
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                head = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = pos + 10
            end = head + length
            if end > n:
                break
            payload = data[head:end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                if b0 & 0x80:
                    self._message(payload, now)
                else:
                    self.fragments = [payload]
            elif opcode == 0x0:
                self.fragments.append(payload)
                if b0 & 0x80:
                    self._message(b"".join(self.fragments), now)
                    self.fragments = []
            elif opcode == 0x9:  # ping
                assert self.transport is not None
                self.transport.write(_mask(0xA, payload))
            elif opcode == 0x8:  # close
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closed = f"closed by server with code {code} {payload[2:].decode(errors='replace')}".strip()
                assert self.transport is not None
                self.transport.close()
                return
        self.rest = data[pos:] if pos < n else b""

    def _message(self, payload: bytes, now: float) -> None:
        if self.collecting:
            self.frames.append((now, payload))
            shared = self.shared
            if shared.counting and shared.marker in payload:
                shared.count += 1
                if shared.count >= shared.expected and shared.done is not None and not shared.done.done():
                    shared.done.set_result(now)
            return
        self.setup_bytes = max(self.setup_bytes, len(payload))
        try:
            self.setup.put_nowait(json.loads(payload))
        except ValueError:
            self.setup.put_nowait({"type": "_bad", "text": payload[:200].decode(errors="replace")})

    def _fail(self, reason: str) -> None:
        self.closed = reason
        if self.transport is not None:
            self.transport.close()


async def _next_frame(client: Client, want: str, wait: float) -> dict[str, Any]:
    """The next set-up frame of type `want`, skipping others (a snapshot, say); raise on close or error."""
    while True:
        frame = await asyncio.wait_for(client.setup.get(), wait)
        kind = frame.get("type")
        if kind == want:
            return frame
        if kind in ("_closed", "error", "_bad"):
            raise ConnectionError(f"waiting for {want!r}: {json.dumps(frame, ensure_ascii=False)[:300]}")


async def _connect_one(config: dict[str, Any], shared: Shared, index: int) -> Client:
    loop = asyncio.get_running_loop()
    headers = [
        f"GET {config['path']} HTTP/1.1",
        f"Host: {config['host']}:{config['port']}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        f"Origin: {config['origin']}",
    ]
    if config.get("cookies"):
        headers.append(f"Cookie: {config['cookies'][index]}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode()
    timeout = float(config.get("connect_timeout", 60))
    _transport, client = await asyncio.wait_for(
        loop.create_connection(lambda: Client(shared, request), config["host"], config["port"]), timeout
    )
    try:
        await asyncio.wait_for(client.handshake, timeout)
        if config["mode"] == "ours":
            await _next_frame(client, "hello", timeout)
            client.send_text(json.dumps(config["subscribe"]))
            subscribed = await _next_frame(client, "subscribed", timeout)
            client.last_seq = int(subscribed["seq"])
    except BaseException:
        if client.transport is not None:
            client.transport.close()
        raise
    client.collecting = True
    return client


async def _connect_all(config: dict[str, Any], shared: Shared) -> tuple[list[Client], list[str]]:
    clients: list[Client] = []
    errors: list[str] = []
    count, batch = int(config["count"]), int(config.get("batch", 50))

    async def attempt(index: int) -> Client | str:
        error = ""
        for tries in range(3):
            try:
                return await _connect_one(config, shared, index)
            except (OSError, TimeoutError, ConnectionError, KeyError, ValueError) as exc:
                error = f"client {index}: {type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5 * (tries + 1))
        return error

    for start in range(0, count, batch):
        for outcome in await asyncio.gather(*(attempt(i) for i in range(start, min(count, start + batch)))):
            if isinstance(outcome, str):
                errors.append(outcome)
            else:
                clients.append(outcome)
    return clients, errors


def _skip_between_rounds(config: dict[str, Any], client: Client) -> None:
    """Drop frames that came between bursts, keeping our stream's seq where they leave it."""
    if config["mode"] == "ours":
        for _arrival, payload in client.frames:
            try:
                frame = json.loads(payload)
            except ValueError:
                continue
            if frame.get("type") == "event" and frame.get("stream") == config.get("stream"):
                seq = frame.get("seq")
                if isinstance(seq, int):
                    client.last_seq = seq if client.last_seq is None else max(client.last_seq, seq)
    client.frames = []


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _analyse(config: dict[str, Any], clients: list[Client], lo: int, hi: int, done_at: float | None) -> dict[str, Any]:
    """Read every frame the burst brought: losses, duplicates, order, latency, frame size."""
    ours = config["mode"] == "ours"
    stream = config.get("stream")
    expected = set(range(lo, hi))
    latencies: list[float] = []
    sizes: list[int] = []
    missing = duplicates = unexpected = reordered = seq_faults = other = 0
    last_arrival = 0.0
    closed: list[str] = []
    examples: list[str] = []
    for number, client in enumerate(clients):
        if client.closed:
            closed.append(f"client {number}: {client.closed}")
        seen: set[int] = set()
        previous = -1
        for arrival, payload in client.frames:
            try:
                frame = json.loads(payload)
                if ours:
                    if frame.get("type") != "event" or frame.get("stream") != stream:
                        other += 1
                        continue
                    seq = frame["seq"]
                    if seq is None:  # an ephemeral event (typing, say)
                        other += 1
                        continue
                    if client.last_seq is not None and seq != client.last_seq + 1:
                        seq_faults += 1
                        if len(examples) < 5:
                            examples.append(f"client {number}: seq {seq} after {client.last_seq}")
                    client.last_seq = seq if client.last_seq is None else max(client.last_seq, seq)
                    if frame.get("event") != "message.posted":
                        other += 1
                        continue
                    number_text, sent_text = frame["data"]["body"].split(" ", 1)
                    i, sent = int(number_text), float(sent_text)
                else:
                    i, sent = int(frame["seq"]), float(frame["t"])
            except (ValueError, KeyError, TypeError, AttributeError):
                other += 1
                if len(examples) < 5:
                    examples.append(f"client {number}: unreadable frame {payload[:120]!r}")
                continue
            if i not in expected:
                unexpected += 1
                continue
            if i in seen:
                duplicates += 1
                continue
            seen.add(i)
            if i < previous:
                reordered += 1
            previous = i
            latencies.append(arrival - sent)
            sizes.append(len(payload))
            last_arrival = max(last_arrival, arrival)
        lost = len(expected) - len(seen)
        if lost and len(examples) < 5:
            gone = sorted(expected - seen)
            examples.append(f"client {number}: {lost} missing, first {gone[:5]}")
        missing += lost
    latencies.sort()
    sizes.sort()
    return {
        "clients": len(clients),
        "expected": len(clients) * len(expected),
        "received": len(latencies),
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "reordered": reordered,
        "seq_faults": seq_faults,
        "other_frames": other,
        "closed": len(closed),
        "closed_examples": closed[:3],
        "examples": examples,
        "last_arrival": last_arrival,
        "done_at": done_at,
        "p50": _percentile(latencies, 0.50),
        "p99": _percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else float("nan"),
        "frame_bytes": sizes[len(sizes) // 2] if sizes else 0,
    }


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def command() -> dict[str, Any]:
        line = await reader.readline()
        if not line:
            return {"cmd": "quit"}
        value: dict[str, Any] = json.loads(line)
        return value

    config = await command()
    shared = Shared()
    shared.marker = b'"message.posted"' if config["mode"] == "ours" else b'"seq"'
    started = time.monotonic()
    clients, errors = await _connect_all(config, shared)
    _emit(
        {
            "ready": True,
            "connected": len(clients),
            "failed": len(errors),
            "errors": errors[:5],
            "seconds": time.monotonic() - started,
            "setup_frame_bytes": max((client.setup_bytes for client in clients), default=0),
        }
    )
    while True:
        request = await command()
        if request.get("cmd") != "round":
            break
        lo, hi = int(request["lo"]), int(request["hi"])
        for client in clients:
            _skip_between_rounds(config, client)
        shared.count = 0
        shared.expected = len(clients) * (hi - lo)
        shared.done = loop.create_future()
        shared.counting = True
        cpu = time.process_time()
        _emit({"armed": True})
        done_at: float | None = None
        try:
            done_at = await asyncio.wait_for(shared.done, float(request["timeout"]))
            cpu = time.process_time() - cpu
            await asyncio.sleep(GRACE_SECONDS)
        except TimeoutError:
            cpu = time.process_time() - cpu
        shared.counting = False
        result = _analyse(config, clients, lo, hi, done_at)
        result["client_cpu"] = cpu
        _emit({"result": result})
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
