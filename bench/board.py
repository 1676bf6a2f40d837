"""P2: live board. 5,000 answers arrive over 60 s while 20 boards are open: p95 from an answer's commit to the
board update at most 1.0 s, at most 2 frames/s per board, and the final board counts equal SQL COUNT(*).

Everything runs in a throwaway PostgreSQL database the benchmark creates (on the server of DATABASE_URL, by
default postgres://postgres@127.0.0.1:5432/) and drops at the end: an organisation with 40 departments in
three levels (4 divisions, 12 departments, 24 sections; most people in the sections), 10,000 safety users, an
open incident sent to all of them (a recipient row and three sent delivery rows each, with `bulk_create`), and
20 board viewers, each with a session as a sign-in leaves: 15 crisis managers, safety administrators and
managers on the whole board `board.<incident>`, and 5 department managers on their own subtrees
`board.<incident>-<department>` (two divisions, two departments, one section).

One daphne process, started as production starts it (`config.asgi:application`, the project's settings, Redis
channel layer and cache under this run's prefixes, the database pool). The 20 boards are raw
WebSocket clients in a process of their own (bench/_board_clients.py): each subscribes as the board page does
and records every frame's arrival, seq and counts. Their subscription starts the incident's ticker in daphne.

1. Warm-up: `--warm-up` people answer over 3 s (imports, query plans, the pool), then a pause.
2. Load: `--answers` other people answer over `--seconds`, at a steady rate (evenly spaced moments, open loop,
   each on a new connection as separate phones do, or with `--keep-alive N` over N connections as a reverse
   proxy would hold them) through the signed-link REST POST `/<slug>/api/safety/answer/<token>/`, statuses
   mixed (safe, minor, serious, some needing help), answer latency and daphne's CPU printed.
3. Settle: once the database stops changing and the whole boards show its number of answers (at most 60 s:
   answers the client gave up on may still be written), one more tick, then the boards are closed.

Latency: every answer's commit-side time is its recipient's `first_answered_at` (set just before the one
statement that writes and commits it). In commit order, the k-th answer a board covers is on that board once
a frame shows `total.answered` >= k; latency = that frame's arrival - the answer's time (one machine, one
clock). Whole boards rank over all answers, subtree boards over their subtree's. p50/p95/max over every
(board, measured answer) pair. Frames/s per board: frames during the load / its duration (mean), and the most
frames in any 1-second window of arrivals (peak); both must be at most 2. Final counts: each board's last
frame against SQL COUNT(*) (total, answered, each status, needing help; the whole board's department rows too).

Baseline, in this process after the run: what a frame per answer would have meant (frames per board, and
board_tick's cost paid per answer), with the time of `board_tick` at 10,000 recipients measured here.

    .venv/bin/python -m bench.board                              # about 3 minutes
    .venv/bin/python -m bench.board --answers 500 --seconds 10   # checks the harness only
    .venv/bin/python -m bench.board --trace /tmp/trace.jsonl     # + where the time goes inside daphne

`--trace` serves bench/_board_asgi.py instead (the same application, with the ticker's steps, reads and waits
for a database connection, and the answer view's parts timed) and prints a summary; `--dump` writes every
board's frames to a file. Daphne's errors and warnings are counted and the commonest printed.

Redis: --redis-url, by default database 13 of the local server; the channel layer and the cache use this
run's own prefixes, and its keys are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import queue
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from bench.answers import Outcome, Phase, Population, _post, measured, open_loop, our_requests, throwaway_url
from bench.chat_fanout import (
    DAPHNE_ARGS,
    ROOT,
    ClientProcess,
    ServerProcess,
    _raise_open_files,
    flush_layer,
    free_port,
    server_process,
)
from bench.common import daphne_env, drop_database, median, p95, setup_django, verdict

ANSWERS = 5000
SECONDS = 60.0
PEOPLE = 10_000
WHOLE_BOARDS = 15
SUBTREE_BOARDS = 5
WARM_UP = 200
WARM_UP_SECONDS = 3.0
SETTLE_SECONDS = 2.0  # after the boards caught up: one more look of the ticker (poll 0.25 s, gap 0.5 s), and more
SETTLE_LIMIT = 60.0  # the longest wait for the answers still in daphne to be written and the boards to catch up
TICK_REPEAT = 15
TARGET_P95 = 1.0
TARGET_FPS = 2.0
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tsunagu_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
STATUSES = ("safe", "minor", "serious", "answered", "none")


# --- The board sockets (bench/_board_clients.py) ----------------------------------------------------------------


class BoardClients(ClientProcess):
    """The board sockets' process, driven like chat_fanout's client process (one JSON object per line)."""

    def __init__(self, config: dict[str, Any], errors: IO[bytes]) -> None:
        self.errors = errors
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._board_clients"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(config)


class Servers:
    """The daphne processes of the run, measured together (bench.answers' `measured` asks for CPU and checks)."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)

    def check(self) -> None:
        for server in self.servers:
            server.check()

    def tail(self) -> str:
        return "\n".join(f"[port {server.port}]\n{server.tail()}" for server in self.servers)


@dataclass
class BoardSpec:
    name: str
    stream: str
    department_id: int | None
    scope: set[int] | None  # departments of the subtree; None for the whole board


@dataclass
class BoardRun:
    spec: BoardSpec
    frames: list[list[Any]]  # [arrival, "snapshot" | "event", seq, answered]
    last: dict[str, Any]
    problems: list[str]
    latencies: list[float] = field(default_factory=list)
    missed: int = 0  # measured answers no frame ever showed
    mean_fps: float = 0.0
    peak_window: int = 0
    frames_in_load: int = 0
    answers_in_load: int = 0  # what a frame per answer would have sent during the load
    count_problems: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[float]:
        return [f[0] for f in self.frames if f[1] == "event"]


# --- Set-up ---------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    population: Population
    boards: list[BoardSpec]
    cookies: dict[str, str]  # board name -> Cookie header
    answering: list[int]  # indexes into population.person_ids, in the order they answer


def setup_create(args: argparse.Namespace) -> Setup:
    from bench._answers_data import analyze, incident_open, people_create, recipients_create
    from bench._board_data import headcount_weights, managed_departments, tree_create, viewers_create
    from directory.models import Organization
    from directory.selectors import department_subtrees
    from safety.tokens import answer_token

    slug = f"bench-board-{os.getpid()}"
    organization = Organization.objects.create(
        slug=slug, name=slug, max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
    )
    tree = tree_create(organization)
    person_ids = people_create(organization, args.people, headcount_weights(tree, args.seed))
    managed = managed_departments(tree, args.subtree_boards)
    viewers = viewers_create(organization, args.whole_boards, managed)
    incident = incident_open(organization)
    recipients_create(incident, person_ids, answered=0.0, deliveries=True)
    analyze()
    tokens = [
        answer_token(organization_id=organization.id, incident_id=incident.id, person_id=person_id)
        for person_id in person_ids
    ]
    subtrees = department_subtrees(organization_id=organization.id, department_ids=[d.id for d in managed])
    boards, cookies = [], {}
    for i, viewer in enumerate(viewers):
        if viewer.department_id is None:
            spec = BoardSpec(f"whole{i:02d}", f"board.{incident.id}", None, None)
        else:
            stream = f"board.{incident.id}-{viewer.department_id}"
            spec = BoardSpec(f"dept{i:02d}", stream, viewer.department_id, subtrees[viewer.department_id])
        boards.append(spec)
        cookies[spec.name] = f"sessionid={viewer.session_key}"
    answering = list(range(len(person_ids)))
    random.Random(args.seed).shuffle(answering)
    return Setup(Population(slug, incident.id, person_ids, tokens), boards, cookies, answering)


async def kept_alive(base: str, requests: Sequence[Any], connections: int) -> tuple[list[Outcome], float]:
    """As bench.answers' open loop (each request at its moment, latency from that moment), over at most
    `connections` kept-alive connections, as a reverse proxy in front of daphne would hold them."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections)
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        start = loop.time() + 0.2

        async def one(request: Any) -> None:
            planned = start + request.at
            await asyncio.sleep(max(0.0, planned - loop.time()))
            code, error = await _post(session, base, request)
            outcomes.append(Outcome(request, code, loop.time() - planned, error))

        await asyncio.gather(*(one(request) for request in requests))
        return outcomes, loop.time() - start


def requests_for(setup: Setup, lo: int, hi: int, seconds: float, rng: random.Random) -> list[Any]:
    """Answers of the people answering[lo:hi], at evenly spaced moments over `seconds`."""
    population = setup.population
    picked = setup.answering[lo:hi]
    subset = Population(
        population.slug,
        population.incident_id,
        [population.person_ids[i] for i in picked],
        [population.tokens[i] for i in picked],
    )
    requests = our_requests(subset, 0, len(picked), rng)
    for n, request in enumerate(requests):
        request.at = n * seconds / len(requests)
    return requests


def settle(clients: BoardClients, incident_id: int) -> None:
    """After the load: wait until the database has stopped changing (requests the client gave up on may still
    be written) and every board shows its number of answers, or SETTLE_LIMIT; then one more tick."""
    from django.db import connection

    deadline = time.monotonic() + SETTLE_LIMIT
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM safety_recipient WHERE incident_id = %s AND first_answered_at IS NOT NULL",
                [incident_id],
            )
            answered = int(cursor.fetchone()[0])
        if answered != last:
            last, stable_since = answered, time.monotonic()
        clients.send({"cmd": "peek"})
        shown = clients.expect("peek", timeout=30)
        whole = [n for name, n in shown.items() if name.startswith("whole")]
        if time.monotonic() - stable_since >= 1.0 and whole and all(n == answered for n in whole):
            break
        time.sleep(0.5)
    else:
        print(f"note: the boards had not caught up {SETTLE_LIMIT:g} s after the load")
    time.sleep(SETTLE_SECONDS)


# --- Reading the outcome ------------------------------------------------------------------------------------------


def answer_times(incident_id: int) -> list[tuple[int, int | None, float]]:
    """(person, department, first answer as epoch seconds) of everyone who answered, in commit order."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.person_id, u.department_id, EXTRACT(EPOCH FROM r.first_answered_at)::float8"
            " FROM safety_recipient r JOIN directory_user u ON u.id = r.person_id"
            " WHERE r.incident_id = %s AND r.first_answered_at IS NOT NULL ORDER BY r.first_answered_at, r.id",
            [incident_id],
        )
        return [(p, d, float(t)) for p, d, t in cursor.fetchall()]


def sql_counts(incident_id: int) -> list[tuple[int | None, str, bool, int]]:
    """SQL COUNT(*) of the incident's recipients by (department, status or "none", needs help)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT u.department_id, COALESCE(NULLIF(r.status, ''), 'none'), r.needs_help, COUNT(*)"
            " FROM safety_recipient r JOIN directory_user u ON u.id = r.person_id WHERE r.incident_id = %s"
            " GROUP BY 1, 2, 3",
            [incident_id],
        )
        return [(d, s, bool(h), int(n)) for d, s, h, n in cursor.fetchall()]


def expected_total(rows: Sequence[tuple[int | None, str, bool, int]], scope: set[int] | None) -> dict[str, Any]:
    counts = dict.fromkeys(STATUSES, 0)
    needs_help = 0
    for department_id, status, helped, n in rows:
        if scope is None or department_id in scope:
            counts[status] = counts.get(status, 0) + n
            needs_help += n if helped else 0
    total = sum(counts.values())
    return {"total": total, "answered": total - counts["none"], "counts": counts, "needs_help": needs_help}


def compare_total(label: str, shown: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("total", "answered", "needs_help"):
        if shown.get(key) != expected[key]:
            problems.append(f"{label} {key}: board {shown.get(key)}, SQL {expected[key]}")
    for status in STATUSES:
        got = (shown.get("counts") or {}).get(status)
        if got != expected["counts"][status]:
            problems.append(f"{label} {status}: board {got}, SQL {expected['counts'][status]}")
    return problems


def peak_window(arrivals: Sequence[float], width: float = 1.0) -> int:
    """The most arrivals in any half-open window of `width` seconds."""
    best, lo = 0, 0
    for hi, t in enumerate(arrivals):
        while arrivals[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def board_measure(
    run: BoardRun,
    times: Sequence[tuple[int, int | None, float]],
    measured_people: set[int],
    window: tuple[float, float],
) -> None:
    """Latencies of the measured answers on this board, and its frame rate during the load."""
    frames = sorted(run.frames, key=lambda f: f[0])
    arrivals = [f[0] for f in frames]
    shown, running = [], 0
    for f in frames:
        running = max(running, int(f[3]))
        shown.append(running)
    rank = 0
    for person_id, department_id, answered_at in times:
        if run.spec.scope is not None and department_id not in run.spec.scope:
            continue
        rank += 1
        if person_id not in measured_people:
            continue
        run.answers_in_load += 1
        index = bisect.bisect_left(shown, rank)
        if index == len(shown):
            run.missed += 1
        else:
            run.latencies.append(arrivals[index] - answered_at)
    events = run.events
    start, end = window
    run.frames_in_load = sum(1 for t in events if start <= t <= end)
    run.mean_fps = run.frames_in_load / (end - start) if end > start else 0.0
    run.peak_window = peak_window(sorted(events))


@dataclass
class TickCost:
    tick: list[float]  # board_tick of all the incident's boards, seconds
    source: list[float]  # board_source alone
    streams: int


def tick_cost(incident_id: int, repeat: int) -> TickCost:
    """board_tick as the ticker calls it, for every board at once (nothing sent yet, so every board gets a
    frame), in a transaction rolled back: the stream counters stay as the run left them."""
    from django.db import transaction

    from safety import board
    from safety.board import board_source, board_stream_keys, board_tick
    from safety.models import Incident

    incident = Incident.objects.get(id=incident_id)
    follow = getattr(board, "board_follow", None)
    if follow is not None:  # as daphne's tickers mark the boards their sockets follow: every board is read
        follow(board_stream_keys(incident_id), 3600)
    ticks, sources = [], []
    streams = 0
    for _ in range(repeat):
        with transaction.atomic():
            started = time.perf_counter()
            streams = len(board_tick(str(incident_id), {}))
            ticks.append(time.perf_counter() - started)
            transaction.set_rollback(True)
        started = time.perf_counter()
        board_source(incident)
        sources.append(time.perf_counter() - started)
    if not streams:
        streams = len(board_stream_keys(incident_id))
    return TickCost(ticks, sources, streams)


def log_problems(output: IO[bytes]) -> tuple[Counter[str], dict[str, list[str]]]:
    """Errors and warnings in daphne's output (its access log left out), each with how often it came, and the
    innermost frames of the first traceback of each: a traceback counts once, under its last line."""
    output.flush()
    output.seek(0)
    lines = [line for line in output.read().decode(errors="replace").splitlines() if not line.startswith("127.0.0.1:")]
    found: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    frames: list[str] | None = None
    for line in lines:
        if line.startswith("Traceback"):
            frames = []
        elif frames is not None and line.startswith("  File "):
            frames.append(line.strip())
        elif frames is not None and line and not line.startswith((" ", "\t", "During handling", "The above exception")):
            found[line[:200]] += 1
            where.setdefault(line[:200], frames[-3:])
            frames = None
        elif frames is None and ("ERROR" in line or "WARNING" in line):
            found[line[:200]] += 1
    return found, where


def trace_summary(path: str, window: tuple[float, float]) -> None:
    """What the ticker did inside daphne during the load (bench/_board_asgi.py)."""
    records = []
    with open(path) as trace:
        for line in trace:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    start, end = window
    during = [r for r in records if start <= r.get("t0", r.get("t", 0)) <= end + 1]

    def spread(values: Sequence[float]) -> str:
        if not values:
            return "none"
        ms = [v * 1000 for v in values]
        return f"p50 {median(ms):.0f} ms, p95 {p95(ms):.0f} ms, max {max(ms):.0f} ms ({len(ms)})"

    steps = [r for r in during if r["ev"] == "step"]
    ticks = [r for r in during if r["ev"] == "tick"]
    dirty = [r for r in during if r["ev"] == "dirty"]
    touches = sorted(r["t"] for r in during if r["ev"] == "touch")
    sending = sorted(r["t0"] for r in steps if r["frames"])
    print("trace of the ticker inside daphne during the load:")
    print(f"  Ticker.step        {spread([r['t1'] - r['t0'] for r in steps])}")
    print(f"  loop lag at wake   {spread([r['lag'] for r in steps if r['lag'] is not None])}")
    print(f"  board_take_dirty   {spread([r['t1'] - r['t0'] for r in dirty])}, dirty {sum(r['dirty'] for r in dirty)}")
    print(f"  board_tick         {spread([r['t1'] - r['t0'] for r in ticks])}")
    print(f"    connection wait  {spread([r['connect'] for r in ticks])}")
    print(f"    thread CPU       {spread([r['cpu'] for r in ticks])}")
    print(f"  between sent steps {spread([b - a for a, b in itertools.pairwise(sending)])}")
    # How long a touched incident waited for the tick that read it: the first tick starting after the touch.
    starts = sorted((r["t0"], r["t1"]) for r in ticks)
    waits, done = [], []
    for t in touches:
        index = bisect.bisect_right(starts, (t, float("inf")))
        if index < len(starts):
            waits.append(starts[index][0] - t)
            done.append(starts[index][1] - t)
    print(f"  touch -> tick start {spread(waits)}")
    print(f"  touch -> tick end  {spread(done)}")
    answers = [r for r in during if r["ev"] == "answer"]
    if answers:
        print(
            f"  answer view (LinkAnswerApi.post): wall {spread([r['wall'] for r in answers])}; thread CPU mean "
            f"{sum(r['cpu'] for r in answers) / len(answers) * 1000:.1f} ms"
        )
        names = sorted({name for r in answers for name in r["parts"]})
        for name in names:
            walls = [r["parts"][name][0] for r in answers if name in r["parts"]]
            cpus = [r["parts"][name][1] for r in answers if name in r["parts"]]
            print(f"    {name:<15} wall {spread(walls)}; CPU mean {sum(cpus) / len(answers) * 1000:.1f} ms")


# --- Clean-up -------------------------------------------------------------------------------------------------------


def cleanup_redis(redis_url: str, prefix: str) -> None:
    """This run's cache keys (dirty marks, the ticker's lease, throttles, presence) and channel-layer keys."""
    import redis

    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        finally:
            client.close()
    flush_layer(redis_url, prefix)


# --- Main ---------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    runs: list[BoardRun]
    load: Phase
    warm: Phase
    cost: TickCost
    measured_answers: int
    window: tuple[float, float]
    daphne_errors: int
    problems: list[str]


def run_benchmark(args: argparse.Namespace, pool_size: str | None, prefix: str) -> Result:
    started = time.perf_counter()
    print(f"database: {setup_django()} (throwaway, created and migrated in {time.perf_counter() - started:.1f} s)")
    from django.conf import settings

    if settings.CACHES["default"].get("KEY_PREFIX") != prefix:  # CACHE_KEY_PREFIX is read by the settings
        raise RuntimeError("the cache does not use this run's key prefix (CACHE_KEY_PREFIX)")
    print(f"redis: {args.redis_url} (channel-layer and cache prefix {prefix})")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; daphne, PostgreSQL, Redis, the answer client "
        "(this process) and the board sockets (another process) share them"
    )
    started = time.perf_counter()
    setup = setup_create(args)
    incident_id = setup.population.incident_id
    whole = sum(1 for b in setup.boards if b.scope is None)
    print(
        f"{args.people:,} people in 40 departments (3 levels), an open incident sent to all of them "
        f"({args.people:,} recipients, {3 * args.people:,} deliveries), {len(setup.boards)} board viewers signed in: "
        f"written in {time.perf_counter() - started:.1f} s"
    )
    for spec in setup.boards:
        if spec.scope is not None:
            people = _people_in(setup, spec.scope)
            print(
                f"  {spec.name}: department manager on {spec.stream} ({len(spec.scope)} departments, {people:,} people)"
            )
    print(f"  {whole} more on the whole board board.{incident_id}")

    rng = random.Random(args.seed)
    warm_requests = requests_for(setup, 0, args.warm_up, WARM_UP_SECONDS, rng)
    load_requests = requests_for(setup, args.warm_up, args.warm_up + args.answers, args.seconds, rng)
    measured_people = {int(r.key) for r in load_requests}

    ports = [free_port() for _ in range(args.processes)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    # Several processes: answers and board sockets go to them in turn, as a proxy in front would spread them.
    for n, request in enumerate([*warm_requests, *load_requests]):
        request.path = bases[n % len(bases)] + request.path
    base = ""
    app = "bench._board_asgi:application" if args.trace else "config.asgi:application"
    env = daphne_env(args.redis_url, prefix, pool_size)  # with CACHE_KEY_PREFIX and CHANNEL_REDIS_PREFIX of the run
    if args.trace:
        with open(args.trace, "w"):
            pass
        env["BENCH_BOARD_TRACE"] = os.path.abspath(args.trace)
    with contextlib.ExitStack() as stack:
        server = Servers(
            [
                stack.enter_context(
                    server_process(
                        "daphne",
                        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS, app],
                        env,
                        port,
                    )
                )
                for port in ports
            ]
        )
        errors = stack.enter_context(tempfile.TemporaryFile())
        for each in server.servers:
            each.wait_listening()
        print(
            f"daphne (as the Dockerfile runs it), {app}: {len(ports)} process{'es' if len(ports) > 1 else ''} on "
            + ", ".join(bases),
            flush=True,
        )
        config = {
            "timeout": 60,
            "boards": [
                {
                    "name": b.name,
                    "cookie": setup.cookies[b.name],
                    "stream": b.stream,
                    "url": f"ws://127.0.0.1:{ports[n % len(ports)]}/{setup.population.slug}/ws/",
                    "origin": bases[n % len(bases)],
                }
                for n, b in enumerate(setup.boards)
            ],
        }
        clients = BoardClients(config, errors)
        try:
            ready = clients.expect("ready", timeout=180)["ready"]
            print(
                f"{ready['connected']}/{len(setup.boards)} board sockets subscribed in {ready['seconds']:.1f} s"
                + (f"; failed: {ready['errors']}" if ready["failed"] else ""),
                flush=True,
            )
            if ready["failed"]:
                raise RuntimeError(f"{ready['failed']} board sockets did not subscribe: {ready['errors']}")

            def send(requests: Sequence[Any]) -> Any:
                return kept_alive(base, requests, args.keep_alive) if args.keep_alive else open_loop(base, requests)

            warm = measured("warm-up", server, lambda: send(warm_requests))
            print(f"warm-up: {args.warm_up} answers over {WARM_UP_SECONDS:g} s: {warm.describe()}", flush=True)
            time.sleep(1.5)
            how = f"over {args.keep_alive} kept-alive connections" if args.keep_alive else "each on a new connection"
            print(
                f"load: {args.answers:,} answers over {args.seconds:g} s, one every "
                f"{args.seconds / args.answers * 1000:.1f} ms ({args.answers / args.seconds:.1f}/s), {how}",
                flush=True,
            )
            load_phase = measured("load", server, lambda: send(load_requests))
            print(f"  answers      {load_phase.describe()}", flush=True)
            settle(clients, incident_id)
            clients.send({"cmd": "stop"})
            result = clients.expect("result", timeout=120)
            if args.dump:
                with open(args.dump, "w") as out:
                    json.dump({"boards": result, "window": None}, out)
        except Exception:
            print(f"--- daphne, last output:\n{server.tail()}", flush=True)
            with contextlib.suppress(Exception):
                errors.seek(0)
                print(f"--- board sockets, errors:\n{errors.read()[-3000:].decode(errors='replace')}", flush=True)
            raise
        finally:
            clients.stop()
        logged: Counter[str] = Counter()
        where: dict[str, list[str]] = {}
        for each in server.servers:
            found, frames = log_problems(each.output)
            logged.update(found)
            where = {**frames, **where}
        daphne_errors = sum(logged.values())
        if daphne_errors:
            print(f"note: daphne logged {daphne_errors} errors or warnings:")
            for message, n in logged.most_common(8):
                print(f"  {n} x {message}")
                for frame in where.get(message, ()):
                    print(f"      {frame[:200]}")

    times = answer_times(incident_id)
    rows = sql_counts(incident_id)
    load_times = [t for person, _d, t in times if person in measured_people]
    window = (min(load_times), max(load_times)) if load_times else (0.0, 0.0)
    problems: list[str] = []
    runs = []
    for spec in setup.boards:
        got = result[spec.name]
        run = BoardRun(spec, got["frames"], got["last"], got["problems"])
        board_measure(run, times, measured_people, window)
        shown = run.last.get("total", {})
        run.count_problems = compare_total(f"{spec.name} {spec.stream}", shown, expected_total(rows, spec.scope))
        if spec.scope is None:
            for row in run.last.get("departments", []):
                expected = expected_total(rows, {row["id"]})
                run.count_problems += compare_total(f"{spec.name} department {row['id']}", row, expected)
        runs.append(run)
    not_ok = len(load_phase.outcomes) - len(load_phase.ok)
    if not_ok:
        problems.append(f"{not_ok} of the {len(load_phase.outcomes)} answers did not get HTTP 200")
    cost = tick_cost(incident_id, args.tick_repeat)
    return Result(runs, load_phase, warm, cost, len(load_times), window, daphne_errors, problems)


def _people_in(setup: Setup, scope: set[int]) -> int:
    from directory.models import User

    return User.objects.filter(department_id__in=scope, id__in=setup.population.person_ids).count()


def report(outcome: Result, args: argparse.Namespace) -> tuple[str, bool]:
    runs = outcome.runs
    whole = [r for r in runs if r.spec.scope is None]
    subtree = [r for r in runs if r.spec.scope is not None]
    start, end = outcome.window
    duration = end - start
    print()
    print(
        f"measured: {outcome.measured_answers:,} answers committed over {duration:.1f} s "
        f"({outcome.measured_answers / duration if duration else 0:.1f}/s), after {args.warm_up} warm-up answers"
    )

    def latency_line(label: str, group: list[BoardRun]) -> list[float]:
        values = [v for r in group for v in r.latencies]
        missed = sum(r.missed for r in group)
        if values:
            worst = max(p95(r.latencies) for r in group if r.latencies)
            print(
                f"  {label:<22} p50 {median(values):.3f} s  p95 {p95(values):.3f} s  max {max(values):.3f} s  "
                f"(worst board p95 {worst:.3f} s; {len(values):,} board updates"
                + (f"; {missed} answers never shown" if missed else "")
                + ")"
            )
        else:
            print(f"  {label:<22} no measured answers" + (f"; {missed} never shown" if missed else ""))
        return values

    print("latency, answer commit -> board frame (frame arrival - first_answered_at):")
    all_values = latency_line(f"whole boards ({len(whole)})", whole)
    all_values += latency_line(f"subtree boards ({len(subtree)})", subtree)
    missed = sum(r.missed for r in runs)
    overall_p95 = p95(all_values) if all_values and not missed else float("inf")
    if all_values:
        print(
            f"  {'all boards':<22} p50 {median(all_values):.3f} s  p95 {p95(all_values):.3f} s  "
            f"max {max(all_values):.3f} s"
        )

    print("frames per board during the load (mean) and the most in any 1-second window of arrivals (peak):")
    for label, group in (("whole", whole), ("subtree", subtree)):
        if group:
            print(
                f"  {label:<8} frames {min(r.frames_in_load for r in group)}-{max(r.frames_in_load for r in group)}"
                f" per board, mean {max(r.mean_fps for r in group):.2f} frames/s (highest board), "
                f"peak {max(r.peak_window for r in group)} in 1 s"
            )
    mean_fps = max((r.mean_fps for r in runs), default=0.0)
    peak = max((r.peak_window for r in runs), default=0)

    sent = sum(r.frames_in_load for r in runs)
    per_answer = sum(r.answers_in_load for r in runs)
    cost = outcome.cost
    tick_ms = median(cost.tick) * 1000
    whole_rate = outcome.measured_answers / duration if duration else 0.0
    print("baseline, a frame per answer (same run):")
    print(
        f"  frames: {per_answer:,} over the {len(runs)} boards ({outcome.measured_answers:,} per whole board, "
        f"{whole_rate:.1f} frames/s per board) against {sent:,} sent: {per_answer / sent if sent else 0:.0f}x fewer "
        "frames"
    )
    ticks_per_second = max((r.mean_fps for r in whole), default=0.0)
    print(
        f"  board_tick at {args.people:,} recipients, {cost.streams} board streams, in this process: median "
        f"{tick_ms:.1f} ms, p95 {p95(cost.tick) * 1000:.1f} ms (of which board_source {median(cost.source) * 1000:.1f}"
        f" ms); the ticker ran it {ticks_per_second:.2f}/s = {ticks_per_second * tick_ms / 1000:.2f} s of work per "
        f"second; once per answer it would be {whole_rate * tick_ms / 1000:.2f} s per second "
        f"({whole_rate / ticks_per_second if ticks_per_second else 0:.0f}x)"
    )

    if args.trace:
        trace_summary(args.trace, outcome.window)
    count_problems = [p for r in runs for p in r.count_problems]
    socket_problems = [f"{r.spec.name}: {p}" for r in runs for p in r.problems]
    equal = not count_problems and all(r.last for r in runs)
    rows = len(whole[0].last.get("departments", [])) if whole else 0
    print(
        f"final counts: the last frame of each of the {len(runs)} boards against SQL COUNT(*) (total, answered, "
        f"{', '.join(STATUSES)}, needs help; the whole board's {rows} department rows too): "
        f"{'equal' if equal else 'DIFFERENT'}"
    )
    for problem in count_problems[:10]:
        print(f"  {problem}")
    problems = list(outcome.problems)
    if socket_problems:
        problems.append(f"{len(socket_problems)} socket problems, e.g. {'; '.join(socket_problems[:3])}")
    if missed:
        problems.append(f"{missed} (board, answer) pairs never shown on the board")
    if outcome.daphne_errors:
        problems.append(f"daphne logged {outcome.daphne_errors} errors or warnings")
    if peak > TARGET_FPS:
        problems.append(f"a board got {peak} frames within one second")
    for problem in problems:
        print(f"FAIL: {problem}")
    ok = not problems and equal and overall_p95 <= TARGET_P95 and mean_fps <= TARGET_FPS
    line = (
        f"board: p95 {overall_p95:.2f} s, {mean_fps:.1f} frames/s per board, counts {'equal' if equal else 'differ'} "
        f"(target p95 ≤ {TARGET_P95:g} s, ≤ {TARGET_FPS:g} frames/s, counts equal)"
    )
    return line, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--answers", type=int, default=ANSWERS, help="answers during the measured load")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="duration of the measured load")
    parser.add_argument("--people", type=int, default=PEOPLE, help="safety users the incident was sent to")
    parser.add_argument("--whole-boards", type=int, default=WHOLE_BOARDS)
    parser.add_argument("--subtree-boards", type=int, default=SUBTREE_BOARDS)
    parser.add_argument("--warm-up", type=int, default=WARM_UP, help=f"answers over {WARM_UP_SECONDS:g} s first")
    parser.add_argument("--tick-repeat", type=int, default=TICK_REPEAT, help="timed board_tick calls (baseline)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="daphne processes (the issue's run: 1); answers and sockets go to them in turn; one ticker (lease)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=0,
        metavar="N",
        help="send the answers over N kept-alive connections (as a reverse proxy would) instead of one each",
    )
    parser.add_argument("--dump", help="write every board's frames (arrival, type, seq, counts) to this JSON file")
    parser.add_argument(
        "--trace", help="serve bench/_board_asgi.py: time the ticker inside daphne into this file, print a summary"
    )
    args = parser.parse_args(argv)
    if args.answers < 1 or args.seconds <= 0 or args.warm_up < 0:
        parser.error("--answers and --seconds must be positive, --warm-up at least 0")
    if not 1 <= args.processes <= 8:
        parser.error("--processes must be 1 to 8")
    if args.warm_up + args.answers > args.people:
        parser.error("--warm-up + --answers must not exceed --people (everyone answers once)")
    if not 1 <= args.whole_boards + args.subtree_boards <= 100 or args.subtree_boards > 12:
        parser.error("1 to 100 boards, at most 12 of them subtree boards")

    targets = f"(target p95 ≤ {TARGET_P95:g} s, ≤ {TARGET_FPS:g} frames/s, counts equal)"
    _raise_open_files(2 * args.answers + 1024)
    base_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
        print("board needs PostgreSQL (DATABASE_URL): the benchmark creates a throwaway database on that server")
        return verdict(f"board: not run {targets}", False)
    tag = f"{os.getpid()}"
    database_url = throwaway_url(base_url, f"tsunagu_bench_board_{tag}")
    prefix = f"benchboard{tag}"
    pool_size = os.environ.get("DB_POOL_MAX_SIZE")  # setup_django sets 0 for itself
    # The run's own prefixes: the board's cache keys (dirty marks, leases, follows) are named by incident id, and
    # another benchmark or test on the same Redis database must not see them; the clean-up removes exactly these.
    os.environ.update(
        DATABASE_URL=database_url, REDIS_URL=args.redis_url, CHANNEL_REDIS_PREFIX=prefix, CACHE_KEY_PREFIX=prefix
    )
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # shared with daphne: links and sessions

    outcome: Result | None = None
    try:
        outcome = run_benchmark(args, pool_size, prefix)
        line, ok = report(outcome, args)
    except Exception as exc:
        import traceback

        traceback.print_exc(file=sys.stdout)
        line, ok = f"board: not measured ({type(exc).__name__}: {str(exc)[:200]}) {targets}", False
    finally:
        cleanup_redis(args.redis_url, prefix)
        with contextlib.suppress(Exception):
            drop_database(database_url)
            print("throwaway database dropped; redis keys of this run removed")
    return verdict(line, ok)


if __name__ == "__main__":
    sys.exit(main())
