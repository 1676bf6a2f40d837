"""P1: fan-out. 1,000 WebSocket clients in one room receive a burst of 100 messages; our stack delivers at
least 4x the frames per second of a stock Channels group broadcast measured in the same run, losing none.

Three servers, each one process on a free port, measured one after another:

- **our stack**: daphne serving `config.asgi:application`; the clients sign in with a session cookie and
  subscribe to `room.<id>` of a group room holding all of them; the burst is 100 calls of the real
  `chat.services.message_send` in this process (each commits, writes the outbox and relays to the layer);
- **stock Channels**: daphne serving `bench/fanout_stock.py`, the textbook `AsyncWebsocketConsumer` in a group;
  the burst is 100 `group_send` calls from this process on a layer configured like ours;
- **bare websockets**: `bench/fanout_bare.py`, `websockets.asyncio.server.broadcast` of each message that
  arrives on a /send connection; the burst is 100 messages sent there from this process.

The clients live in one separate process (`bench/fanout_client.py`, a raw asyncio protocol). Frames of the
other two are padded to the size of ours. Each frame carries its message number and send time: frames/s =
frames received / (last frame's arrival - first message's send), latency = arrival - send time. Losses and
duplicates are counted per client by message number, and for our stack the stream's seq must be gap-free.
One warm-up burst, then `--rounds` bursts per server; the figures are the median round's.

    .venv/bin/python -m bench.chat_fanout                          # 1,000 clients x 100 messages, ~4 min
    .venv/bin/python -m bench.chat_fanout --clients 50 --messages 20 --rounds 1   # checks the harness only

Each round's line also gives the burst's duration, how long the sender took, and the CPU seconds the server
process and the client process used meanwhile: a server near one CPU second per second is the limit; a
sender taking most of the burst means the service call was (our stack at small sizes always is, so the
ratio means something only at full size).

PostgreSQL is required (daphne and this process share the database): DATABASE_URL, by default
postgres://postgres@127.0.0.1:5432/tsunagu_bench. Redis: --redis-url, by default database 13 of the local
server; only this run's keys (its own prefixes) are used and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.common import daphne_env, setup_django, temporary_organization, verdict

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 1000
MESSAGES = 100
TARGET_RATIO = 4.0
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tsunagu_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
# As tests/services.py, bin/run and the Dockerfile: daphne's default of 5 s drops handshakes in a connect burst.
DAPHNE_ARGS = ("--websocket_connect_timeout", "30")
FALLBACK_FRAME_BYTES = 350  # when our stack did not run: about the size of its message frame
SERVERS = ("ours", "stock", "bare")
LABELS = {"ours": "our stack", "stock": "stock Channels", "bare": "bare websockets"}

Burst = Callable[[int, int], tuple[float, float]]


# --- Processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(output: IO[bytes], size: int = 3000) -> str:
    output.flush()
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - size))
    return output.read().decode(errors="replace")


class ServerProcess:
    """A server in its own process. Output goes to a temporary file, never a pipe: nothing reads a pipe during
    a burst, and daphne's access log fills a pipe's buffer after a few hundred sockets and blocks the server."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], port: int, output: IO[bytes]) -> None:
        self.label, self.port, self.output = label, port, output
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.label}: nothing listened on port {self.port} within {timeout:g} s")

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.label} exited with {self.proc.returncode}")

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, size: int = 3000) -> str:
        return _tail(self.output, size)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def server_process(label: str, argv: list[str], env: dict[str, str], port: int) -> Iterator[ServerProcess]:
    with tempfile.TemporaryFile() as output:
        server = ServerProcess(label, argv, env, port, output)
        try:
            yield server
        finally:
            server.stop()


class ClientProcess:
    """`bench.fanout_client`, driven with one JSON object per line each way."""

    def __init__(self, config: dict[str, Any], errors: IO[bytes]) -> None:
        self.errors = errors
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fanout_client"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(config)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode())
        self.lines.put("")

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the client process sent no {key!r} within {timeout:g} s") from None
        if not line:
            self.proc.wait(timeout=5)
            raise RuntimeError(
                f"the client process exited with {self.proc.returncode}:\n{_tail(self.errors)}"
            ) from None
        message = json.loads(line)
        if key not in message:
            raise RuntimeError(f"the client process sent {line[:300]!r}, not {key!r}")
        return message[key] if key != "ready" else message

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send({"cmd": "quit"})
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def client_process(config: dict[str, Any]) -> Iterator[ClientProcess]:
    with tempfile.TemporaryFile() as errors:
        client = ClientProcess(config, errors)
        try:
            yield client
        finally:
            client.stop()


# --- Rounds -------------------------------------------------------------------------------------------------


@dataclass
class Round:
    frames_per_second: float
    result: dict[str, Any]
    send_seconds: float
    timed_out: bool
    seconds: float  # first send to last arrival
    server_cpu: float  # CPU seconds the server process used during the burst

    @property
    def lost(self) -> int:
        return int(self.result["missing"])

    @property
    def duplicated(self) -> int:
        return int(self.result["duplicates"])


@dataclass
class ServerRun:
    name: str
    clients: int = 0
    connect_errors: list[str] = field(default_factory=list)
    connect_seconds: float = 0.0
    warmup: Round | None = None
    rounds: list[Round] = field(default_factory=list)
    error: str = ""

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def typical(self) -> Round | None:
        """The median round by frames/s (the lower middle one of an even count)."""
        if not self.rounds:
            return None
        ordered = sorted(self.rounds, key=lambda r: r.frames_per_second)
        return ordered[(len(ordered) - 1) // 2]

    def lost(self) -> int:
        return sum(r.lost for r in self.all_rounds())

    def duplicated(self) -> int:
        return sum(r.duplicated for r in self.all_rounds())

    def faults(self) -> int:
        return sum(
            int(r.result["seq_faults"]) + int(r.result["unexpected"]) + int(r.result["closed"]) + int(r.timed_out)
            for r in self.all_rounds()
        )

    def all_rounds(self) -> list[Round]:
        return ([self.warmup] if self.warmup else []) + self.rounds


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def describe(round_: Round) -> str:
    r = round_.result
    text = (
        f"{round_.frames_per_second:8,.0f} frames/s  p50 {_ms(r['p50']):>7}  p99 {_ms(r['p99']):>7}  "
        f"{r['received']:,}/{r['expected']:,} frames, lost {r['missing']}, duplicated {r['duplicates']}"
        f"  ({round_.seconds:.2f} s; sender {round_.send_seconds:.2f} s; CPU server {round_.server_cpu:.1f} s, "
        f"clients {r['client_cpu']:.1f} s)"
    )
    extras = {
        "unexpected": r["unexpected"],
        "seq faults": r["seq_faults"],
        "out of order": r["reordered"],
        "sockets closed": r["closed"],
    }
    text += "".join(f", {name} {value}" for name, value in extras.items() if value)
    if round_.timed_out:
        text += " TIMED OUT"
    return text


def run_server(
    run: ServerRun,
    server_argv: list[str],
    server_env: dict[str, str],
    client_config: dict[str, Any],
    burst: Burst,
    *,
    messages: int,
    rounds: int,
    timeout: float,
) -> None:
    """Start the server, connect the clients, then one warm-up burst and `rounds` measured ones; fills `run`."""
    with server_process(run.label, server_argv, server_env, client_config["port"]) as server:
        try:
            server.wait_listening()
            with client_process(client_config) as client:
                _connect(run, server, client, client_config)
                for number in range(rounds + 1):
                    round_ = _burst(server, client, burst, number * messages, (number + 1) * messages, timeout)
                    if number == 0:
                        run.warmup = round_
                    else:
                        run.rounds.append(round_)
                    print(f"  {'warm-up' if number == 0 else f'round {number}':<8} {describe(round_)}", flush=True)
                    for example in round_.result["examples"] + round_.result["closed_examples"]:
                        print(f"           {example}", flush=True)
                    time.sleep(1.0)  # let the server settle between bursts
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            print(f"{run.label}: FAILED: {run.error}", flush=True)
            traceback.print_exc(file=sys.stdout)
            print(f"--- {run.label} server, last output:\n{server.tail()}", flush=True)


def _connect(run: ServerRun, server: ServerProcess, client: ClientProcess, config: dict[str, Any]) -> None:
    ready = client.expect("ready", timeout=900)
    server.check()
    run.clients, run.connect_errors, run.connect_seconds = ready["connected"], ready["errors"], ready["seconds"]
    print(
        f"{run.label}: {run.clients}/{config['count']} clients ready in {run.connect_seconds:.1f} s"
        + (f" (largest set-up frame {ready['setup_frame_bytes']:,} B)" if ready["setup_frame_bytes"] else "")
        + (f"; {ready['failed']} failed, e.g. {ready['errors'][0]}" if ready["failed"] else ""),
        flush=True,
    )
    if not run.clients:
        raise RuntimeError("no client connected")


def _burst(server: ServerProcess, client: ClientProcess, burst: Burst, lo: int, hi: int, timeout: float) -> Round:
    """Messages lo..hi-1: arm the clients, send, and read what every client got."""
    client.send({"cmd": "round", "lo": lo, "hi": hi, "timeout": timeout})
    client.expect("armed", timeout=60)
    server_cpu = server.cpu_seconds()
    first_sent, last_sent = burst(lo, hi)
    result = client.expect("result", timeout=timeout + 120)
    server_cpu = server.cpu_seconds() - server_cpu
    server.check()
    elapsed = result["last_arrival"] - first_sent
    fps = result["received"] / elapsed if result["received"] and elapsed > 0 else 0.0
    return Round(fps, result, last_sent - first_sent, result["done_at"] is None, elapsed, server_cpu)


# --- Our stack ----------------------------------------------------------------------------------------------


@dataclass
class OurRoom:
    slug: str
    room: Any
    stream: str
    people: list[Any]
    session_keys: list[str]


def our_room_create(organization: Any, count: int) -> OurRoom:
    """`count` talk users with a session each, all members of one group room."""
    from datetime import timedelta

    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from chat import services as chat_services
    from directory.importer import user_search_text
    from directory.models import User

    password = make_password(None)
    people = []
    for i in range(count):
        person = User(
            organization=organization,
            login_id=f"fanout{i:05d}",
            last_name="配信",
            first_name=f"{i}",
            last_name_kana="ハイシン",
            first_name_kana="テスト",
            email=f"fanout{i}@example.co.jp",
            talk_available=True,
            password=password,
        )
        person.search_text = user_search_text(person)
        people.append(person)
    people = User.objects.bulk_create(people)

    room = chat_services.room_group_create(
        creator=people[0], name="fan-out", member_ids=[person.id for person in people[1:]]
    )
    from chat.models import Membership

    members = Membership.objects.filter(room=room).count()
    if members != count:
        raise RuntimeError(f"room_group_create made {members} members, not {count}")

    store = SessionStore()
    expires = timezone.now() + timedelta(hours=6)
    sessions = []
    for person in people:
        data = {
            "_auth_user_id": str(person.pk),
            "_auth_user_backend": "directory.auth.OrganisationLoginBackend",
            "_auth_user_hash": person.get_session_auth_hash(),
        }
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        sessions.append(Session(session_key=key, session_data=store.encode(data), expire_date=expires))
    Session.objects.bulk_create(sessions)
    return OurRoom(organization.slug, room, f"room.{room.id}", people, [s.session_key for s in sessions])


def our_room_drop(ours: OurRoom) -> None:
    """What the organisation's deletion leaves: sessions, the outbox and counters of the room's stream and of
    the people's own streams (room_group_create announces the room there), presence keys."""
    from django.contrib.sessions.models import Session
    from django.core.cache import cache

    from consumers.models import OutboxEvent, Stream
    from consumers.presence import presence_forget
    from directory.events import user_group

    streams = [ours.stream, *(user_group(person.id) for person in ours.people)]
    Session.objects.filter(session_key__in=ours.session_keys).delete()
    OutboxEvent.objects.filter(stream__in=streams).delete()
    Stream.objects.filter(key__in=streams).delete()
    for person in ours.people:
        presence_forget(person.id)
    cache.close()


def our_burst(ours: OurRoom) -> Burst:
    from chat.services import message_send

    def burst(lo: int, hi: int) -> tuple[float, float]:
        first = time.time()
        for i in range(lo, hi):
            # The senders take turns, as people in a room do (and no one meets the per-person send rate).
            sender = ours.people[i % len(ours.people)]
            message_send(room=ours.room, sender=sender, body=f"{i} {time.time()}")
        return first, time.time()

    return burst


def run_ours(args: argparse.Namespace, env: dict[str, str]) -> ServerRun:
    run = ServerRun("ours")
    try:
        with temporary_organization("bench-fanout") as organization:
            started = time.monotonic()
            ours = our_room_create(organization, args.clients)
            try:
                print(
                    f"{LABELS['ours']}: {args.clients} people, sessions and group room {ours.stream} created in "
                    f"{time.monotonic() - started:.1f} s",
                    flush=True,
                )
                port = free_port()
                argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS]
                config = {
                    "mode": "ours",
                    "host": "127.0.0.1",
                    "port": port,
                    "path": f"/{ours.slug}/ws/",
                    "origin": f"http://127.0.0.1:{port}",
                    "cookies": [f"sessionid={key}" for key in ours.session_keys],
                    "count": args.clients,
                    "batch": args.batch,
                    "subscribe": {"type": "subscribe", "stream": ours.stream, "last_seq": None},
                    "stream": ours.stream,
                }
                run_server(
                    run,
                    [*argv, "config.asgi:application"],
                    env,
                    config,
                    our_burst(ours),
                    messages=args.messages,
                    rounds=args.rounds,
                    timeout=args.timeout,
                )
            finally:
                our_room_drop(ours)
    except Exception as exc:  # set-up failed: the other two still run and are reported
        if not run.error:
            run.error = f"{type(exc).__name__}: {exc}"
            print(f"{LABELS['ours']}: FAILED: {run.error}", flush=True)
            traceback.print_exc(file=sys.stdout)
    return run


# --- Stock Channels and bare websockets ---------------------------------------------------------------------


def plain_payload(i: int, pad: str) -> str:
    return json.dumps({"seq": i, "t": time.time(), "pad": pad})


def padding(frame_bytes: int, typical_seq: int) -> str:
    return "x" * max(0, frame_bytes - len(plain_payload(typical_seq, "")))


def stock_burst(redis_url: str, prefix: str, pad: str) -> Burst:
    from channels_redis.core import RedisChannelLayer

    from bench.fanout_stock import EVENT_TYPE, GROUP, layer_config

    async def send(lo: int, hi: int) -> tuple[float, float]:
        layer = RedisChannelLayer(**layer_config(redis_url, prefix))
        try:
            await layer.group_send("bench-warm-up", {"type": EVENT_TYPE, "text": ""})  # opens the connection
            first = time.time()
            for i in range(lo, hi):
                await layer.group_send(GROUP, {"type": EVENT_TYPE, "text": plain_payload(i, pad)})
            return first, time.time()
        finally:
            await layer.close_pools()

    return lambda lo, hi: asyncio.run(send(lo, hi))


def bare_burst(port: int, pad: str) -> Burst:
    from websockets.asyncio.client import connect

    async def send(lo: int, hi: int) -> tuple[float, float]:
        async with connect(f"ws://127.0.0.1:{port}/send", compression=None) as connection:
            first = time.time()
            for i in range(lo, hi):
                await connection.send(plain_payload(i, pad))
            return first, time.time()

    return lambda lo, hi: asyncio.run(send(lo, hi))


def plain_config(port: int, args: argparse.Namespace, path: str) -> dict[str, Any]:
    return {
        "mode": "plain",
        "host": "127.0.0.1",
        "port": port,
        "path": path,
        "origin": f"http://127.0.0.1:{port}",
        "cookies": None,
        "count": args.clients,
        "batch": args.batch,
    }


def run_stock(args: argparse.Namespace, redis_url: str, prefix: str, pad: str) -> ServerRun:
    run = ServerRun("stock")
    port = free_port()
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # fanout_stock configures its own minimal settings
    env.update(FANOUT_REDIS_URL=redis_url, FANOUT_STOCK_PREFIX=prefix, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS]
    config = plain_config(port, args, "/")
    burst = stock_burst(redis_url, prefix, pad)
    argv = [*argv, "bench.fanout_stock:application"]
    run_server(run, argv, env, config, burst, messages=args.messages, rounds=args.rounds, timeout=args.timeout)
    return run


def run_bare(args: argparse.Namespace, pad: str) -> ServerRun:
    run = ServerRun("bare")
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    config = plain_config(port, args, "/listen")
    argv = [sys.executable, "-m", "bench.fanout_bare", "--port", str(port)]
    burst = bare_burst(port, pad)
    run_server(run, argv, env, config, burst, messages=args.messages, rounds=args.rounds, timeout=args.timeout)
    return run


def flush_layer(redis_url: str, prefix: str) -> None:
    """Remove every key under one of this run's channel-layer prefixes."""
    from channels_redis.core import RedisChannelLayer

    async def flush() -> None:
        layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
        try:
            await layer.flush()
        finally:
            await layer.close_pools()

    with contextlib.suppress(Exception):
        asyncio.run(flush())


# --- Main ---------------------------------------------------------------------------------------------------


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # inherited by the servers and the clients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--rounds", type=int, default=3, help="measured bursts per server, after one warm-up")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a burst may take before it fails")
    parser.add_argument("--batch", type=int, default=50, help="clients connecting at once")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated subset of ours,stock,bare (default: all)"
    )
    args = parser.parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if unknown := set(servers) - set(SERVERS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    _raise_open_files(4 * args.clients + 1024)

    pool_size = os.environ.get("DB_POOL_MAX_SIZE")  # setup_django sets 0 for itself
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    if not os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://", "pgsql://")):
        print("chat_fanout needs PostgreSQL: daphne and the benchmark share the database (set DATABASE_URL)")
        return verdict(f"chat_fanout: not run (target >= {TARGET_RATIO:g}x)", False)
    tag = f"{os.getpid()}"
    ours_prefix, stock_prefix = f"fanout{tag}", f"fanoutstock{tag}"
    os.environ.update(REDIS_URL=args.redis_url, CHANNEL_REDIS_PREFIX=ours_prefix)
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # shared with daphne: sessions are signed
    # Our bursts go out faster than one person may post; the limit is not what this benchmark measures.
    os.environ.setdefault("TALK_SEND_RATE_PER_MINUTE", str(10**6))

    print(f"database: {setup_django()}")
    print(f"redis: {args.redis_url} (prefixes {ours_prefix}, {stock_prefix})")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (other work on the machine skews all three)")
    print(
        f"{args.clients} clients in one process, bursts of {args.messages} messages; "
        f"1 warm-up + {args.rounds} rounds per server",
        flush=True,
    )

    runs: dict[str, ServerRun] = {}
    try:
        if "ours" in servers:
            runs["ours"] = run_ours(args, daphne_env(args.redis_url, ours_prefix, pool_size))
        frame_bytes = FALLBACK_FRAME_BYTES
        ours_warmup = runs["ours"].warmup if "ours" in runs else None
        if ours_warmup and ours_warmup.result["frame_bytes"]:
            frame_bytes = int(ours_warmup.result["frame_bytes"])
        pad = padding(frame_bytes, args.messages * (args.rounds + 1) // 2)
        if "stock" in servers:
            runs["stock"] = run_stock(args, args.redis_url, stock_prefix, pad)
        if "bare" in servers:
            runs["bare"] = run_bare(args, pad)
    finally:
        flush_layer(args.redis_url, ours_prefix)
        flush_layer(args.redis_url, stock_prefix)

    print()
    print("median round per server (frames/s = frames received / (last arrival - first send)):")
    fps: dict[str, float] = {}
    for name, run in runs.items():
        typical = run.typical()
        if typical is None:
            print(f"  {run.label:<16} no measured round ({run.error or 'no result'})")
            continue
        fps[name] = typical.frames_per_second
        r = typical.result
        print(
            f"  {run.label:<16} {typical.frames_per_second:8,.0f} frames/s  p50 {_ms(r['p50']):>7}  "
            f"p99 {_ms(r['p99']):>7}  frames {r['frame_bytes']} B  clients {run.clients}  "
            f"lost {run.lost()}, duplicated {run.duplicated()} (all rounds)"
        )
    busy = [run.label for run in runs.values() if (t := run.typical()) and t.result["client_cpu"] > 0.8 * t.seconds]
    if busy:
        print(
            f"note: the client process was busy over 80% of the median round of {', '.join(busy)}; "
            "those figures are lower bounds (the clients may have limited them)"
        )
    if "ours" in fps and "bare" in fps and fps["bare"]:
        print(f"our stack / bare websockets: {fps['ours'] / fps['bare']:.2f}x")
    if "stock" in fps and "bare" in fps and fps["bare"]:
        print(f"stock Channels / bare websockets: {fps['stock'] / fps['bare']:.2f}x")

    ours_run = runs.get("ours")
    ratio = fps["ours"] / fps["stock"] if fps.get("stock") and "ours" in fps else 0.0
    problems = []
    if ours_run is None or "ours" not in fps:
        problems.append("our stack was not measured")
    elif ours_run.clients != args.clients:
        problems.append(f"only {ours_run.clients} of {args.clients} clients subscribed")
    if "stock" not in fps:
        problems.append("stock Channels was not measured")
    elif (stock_round := runs["stock"].typical()) and stock_round.timed_out:
        problems.append("the stock Channels baseline's median round timed out: no valid baseline")
    if ours_run is not None:
        if ours_run.lost() or ours_run.duplicated():
            problems.append(f"our stack lost {ours_run.lost()} and duplicated {ours_run.duplicated()} frames")
        if ours_run.faults():
            problems.append(f"our stack had {ours_run.faults()} seq faults, stray frames, closed sockets or timeouts")
    for problem in problems:
        print(f"FAIL: {problem}")
    ok = not problems and ratio >= TARGET_RATIO
    return verdict(f"chat_fanout: {ratio:.1f}x stock Channels (target >= {TARGET_RATIO:g}x)", ok)


if __name__ == "__main__":
    sys.exit(main())
