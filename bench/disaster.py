"""Issue 10, load: a disaster end to end on this machine. 10,000 people; one real JMA VXSE53 document arrives; the
automatic dispatch goes out; 5,000 answers come in over 60 s while 20 boards are open; 5 instructions (対策指示)
are posted during the answers and stream to the boards (and, as the app does, to everyone asked, by web push).
Target: 0 errors. Reported: time to the last push, answer-to-board p95, board frames per second, the errors.

Every part runs as deployed, each in its own process (nothing eager, nothing in memory that is not in production):

- **daphne** (`--daphnes`, default 1), `config.asgi:application` with the project's settings (the database pool,
  the Redis cache and channel layer under this run's own prefixes): the JMA push endpoint, the answers, the
  instructions API and the board sockets;
- **`celery -A config worker`** (`--workers`, default 1; prefork, one child per core as docker-compose runs it),
  on the Redis broker (a queue of this run's own: bench/_jma_latency_settings.py): `jma_decide`, the send
  (`dispatch_run`), the instruction pushes (`push_event` -> `webpush_send`), the e-mails;
- **the push endpoint** (bench/_jma_latency_push.py: the tests' strict push service, which verifies every push's
  VAPID JWT and decrypts it with the subscription's key, and notes when each arrived);
- **the board sockets** (bench/_disaster_clients.py = bench/_board_clients.py, which also keeps instructions);
- **this process**: the data, the JMA POST, the answers (open loop, each on a new connection, as separate phones)
  and the instruction POSTs (a crisis manager's session, with its CSRF token), and the checks.
- E-mail: Django's in-memory backend (`EMAIL_URL=locmem://`) inside the worker: every mail is rendered and
  "sent", nothing leaves the machine. No beat runs (nothing here waits for a scan).

The scenario:

1. Data (bench/_board_data.py, bench/_answers_data.py): an organisation made by `organization_create` (so it has
   the preset rule: 震度5強 or more reaches the people based in the prefecture, hold 0), 40 departments in three
   levels, `--people` people based in 宮城県 (04) with a push subscription and an e-mail address each, and the 20
   board viewers (15 on the whole board, 5 department managers on their subtrees) signed in.
2. JMA: the real 2011 Tōhoku VXSE53 (震度7 in 宮城県; ../shared/fixtures/jma), with a new EventID and its times
   set to now, POSTed to `/api/jma/documents/` with the ingest token. The worker decides it, opens the incident
   and sends. Time to the last push = last of the `--people` pushes arriving at the endpoint - the POST sent.
3. The 20 boards subscribe to the new incident. `--answers` people answer over `--seconds` through the signed
   link API (statuses mixed, some needing help), spread over the daphne processes; `--instructions` instructions
   are posted at evenly spaced moments of the same period.
4. Settle (bench.board.settle: the database stops changing and the whole boards show its count), then wait for
   the instruction pushes (`--instructions` x `--people`) and the send's end (e-mails).
5. `--capacity N` (bench.scaleout uses it): N more people answer in a closed loop (`--concurrency` kept-alive
   connections spread over the daphne processes) as fast as the servers take them: answers/s.

Figures: answer-to-board latency as bench.board measures it (the board frame that first shows an answer's rank,
minus its commit time `first_answered_at`; all 20 boards), p50/p95; board frames/s (tally frames per board during
the answers: mean of the busiest board, and the most in any 1 s); instruction-to-board (frame arrival - POST sent)
and the last instruction push; the send's finish (pushes, then e-mails).

Errors (target 0), each counted: the JMA POST not 201; a decision other than a dispatch to everyone; a push
rejected, missing or twice; a delivery failed or still queued at the end; an answer or instruction POST not
200/201; a board socket problem (seq gap, closed, unexpected frame); an answer never shown; a board's final
counts differing from SQL COUNT(*); an instruction missing on a board; daphne errors or warnings in its log;
worker errors in its log.

Baseline, same run: one bare push from this process before the POST (machine speed now), and, for each board
frame, what a frame per answer would have meant.

    .venv/bin/python -m bench.disaster            # 10,000 people, 5,000 answers over 60 s: 2 to 5 minutes
    .venv/bin/python -m bench.disaster --quick    # 500 people, 250 answers over 10 s: checks the harness (40 s)
    .venv/bin/python -m bench.disaster --daphnes 2 --workers 2

PostgreSQL is required: a throwaway database (tsunagu_bench_disaster_<pid>) on the server of DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/) is created, migrated and dropped. Redis: --redis-url, by default database 8
of the local server; this run's queue, cache keys and channel-layer keys are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.answers import Outcome, Population, closed_loop, machine_ticks, measured, open_loop, throwaway_url
from bench.board import (
    BoardClients,
    BoardRun,
    BoardSpec,
    Servers,
    Setup,
    board_measure,
    compare_total,
    expected_total,
    kept_alive,
    log_problems,
    requests_for,
    settle,
    sql_counts,
)
from bench.chat_fanout import DAPHNE_ARGS, ROOT, _raise_open_files, free_port, server_process
from bench.common import daphne_env, drop_database, median, p95, setup_django, verdict
from bench.jma_latency import (
    SETTINGS_MODULE,
    PushEndpoint,
    Worker,
    bare_push,
    post_document,
    pushes_wait,
    redis_cleanup,
    worker_process,
)

FIXTURE = ROOT.parent / (
    "shared/fixtures/jma/earthquake/tohoku2011_vxse53_MAXINT7_41prefs__32-39_11_05_240613_VXSE53.xml"
)
FIXTURE_EVENT_ID = b"<EventID>20110311144640</EventID>"
FIXTURE_TIMES = (  # issued now, as a live report is (automatic dispatch ignores reports issued long before arrival)
    (b"<DateTime>2011-03-11T05:54:58Z</DateTime>", "<DateTime>{utc}</DateTime>"),
    (b"<ReportDateTime>2011-03-11T14:54:00+09:00</ReportDateTime>", "<ReportDateTime>{jst}</ReportDateTime>"),
    (b"<TargetDateTime>2011-03-11T14:54:00+09:00</TargetDateTime>", "<TargetDateTime>{jst}</TargetDateTime>"),
)
REGION = "04"  # 宮城県: 震度7 in the fixture
PEOPLE = 10_000
ANSWERS = 5000
SECONDS = 60.0
INSTRUCTIONS = 5
WHOLE_BOARDS = 15
SUBTREE_BOARDS = 5
QUICK = {"people": 500, "answers": 250, "seconds": 10.0, "instructions": 2, "whole_boards": 5, "subtree_boards": 3}
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tsunagu_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
TARGET_ERRORS = 0
INSTRUCTION_PUSH_LIMIT = 300.0  # seconds after the answers to wait for the instruction pushes


# --- Processes ----------------------------------------------------------------------------------------------


class DisasterClients(BoardClients):
    """bench.board's board-socket process, running bench/_disaster_clients.py (instructions kept too)."""

    def __init__(self, config: dict[str, Any], errors: IO[bytes]) -> None:
        self.errors = errors
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._disaster_clients"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(config)


# --- Data -----------------------------------------------------------------------------------------------------


@dataclass
class World:
    slug: str
    organization_id: int
    person_ids: list[int]
    viewers: list[Any]  # bench._board_data.Viewer
    subtrees: dict[int, set[int]]


def world_create(slug: str, args: argparse.Namespace, endpoint: PushEndpoint, vapid_public_key: str) -> World:
    from django.db import connection

    from bench._answers_data import people_create
    from bench._board_data import headcount_weights, managed_departments, tree_create, viewers_create
    from consumers.models import PushSubscription
    from directory.models import Organization, User
    from directory.selectors import department_subtrees
    from directory.services import organization_create

    organization = organization_create(
        slug=slug, name="ベンチ災害株式会社", admin_email="admin@example.co.jp"
    ).organization
    Organization.objects.filter(id=organization.id).update(
        max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
    )
    tree = tree_create(organization)
    person_ids = people_create(organization, args.people, headcount_weights(tree, args.seed))
    User.objects.filter(id__in=person_ids).update(region_code=REGION)
    PushSubscription.objects.bulk_create(
        [
            PushSubscription(
                user_id=person_id,
                endpoint=info["endpoint"],
                p256dh=info["keys"]["p256dh"],
                auth=info["keys"]["auth"],
                vapid_public_key=vapid_public_key,
            )
            for person_id, info in zip(person_ids, endpoint.subscriptions, strict=False)
        ],
        batch_size=2000,
    )
    managed = managed_departments(tree, args.subtree_boards)
    viewers = viewers_create(organization, args.whole_boards, managed)
    subtrees = department_subtrees(organization_id=organization.id, department_ids=[d.id for d in managed])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) directory_user, directory_department, consumers_pushsubscription")
    return World(slug, organization.id, person_ids, viewers, subtrees)


def document_bytes(raw: bytes, event_id: str) -> bytes:
    """The fixture as a new quake reported now: a new EventID, its report times set to now."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC).replace(microsecond=0)
    times = {"utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "jst": now.astimezone(ZoneInfo("Asia/Tokyo")).isoformat()}
    for old, new in ((FIXTURE_EVENT_ID, "<EventID>{event_id}</EventID>"), *FIXTURE_TIMES):
        assert raw.count(old) == 1, f"the fixture's {old!r} is not where it was"
        raw = raw.replace(old, new.format(event_id=event_id, **times).encode())
    return raw


class CpuMeter:
    """CPU seconds by role, from /proc: daphne, the workers (each worker's process group: its prefork children),
    the push endpoint, the board sockets, this process, this run's PostgreSQL backends, and the Redis server (shared
    with whatever else uses it)."""

    def __init__(self, roles: dict[str, list[int]], groups: dict[str, list[int]], database: str) -> None:
        self.roles, self.groups, self.database = roles, groups, database

    @staticmethod
    def _stat(pid: int) -> tuple[int, float]:
        """(process group, CPU seconds) of a process; (-1, 0) if it is gone."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return -1, 0.0
        return int(fields[2]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def snapshot(self) -> dict[str, float]:
        out = {role: sum(self._stat(pid)[1] for pid in pids) for role, pids in self.roles.items()}
        out["this process"] = sum(os.times()[:2])
        for role in self.groups:
            out[role] = 0.0
        out["postgresql (this run)"] = out["redis-server"] = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            group, cpu = self._stat(int(entry))
            for role, leaders in self.groups.items():
                if group in leaders:
                    out[role] += cpu
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"postgres:") and self.database.encode() in command:
                out["postgresql (this run)"] += cpu
            elif b"redis-server" in command.split(b"\0", 1)[0]:
                out["redis-server"] += cpu
        return out

    @staticmethod
    def describe(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
        parts = [f"{role} {after[role] - before.get(role, 0.0):.1f}" for role in after]
        return f"CPU seconds over {seconds:.0f} s ({2 * seconds:.0f} on 2 cores): " + ", ".join(parts)


# --- The answers and the instructions -------------------------------------------------------------------------


@dataclass
class Instruction:
    at: float  # seconds after the start of the answers
    body: str
    url: str
    sent: float = 0.0  # time.time()
    status: int = 0
    id: int = 0
    error: str = ""


async def instructions_post(items: Sequence[Instruction], headers: dict[str, str]) -> None:
    """A crisis manager posts each instruction at its moment (the board page's POST: session cookie, CSRF)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2  # as open_loop's start
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for item in items:
            await asyncio.sleep(max(0.0, start + item.at - loop.time()))
            item.sent = time.time()
            try:
                async with session.post(item.url, json={"body": item.body}, headers=headers) as response:
                    item.status = response.status
                    text = await response.text()
                    if response.status == 201:
                        item.id = int(json.loads(text)["id"])
                    else:
                        item.error = text[:200]
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                item.error = f"{type(exc).__name__}: {exc}"


def pushes_settle(endpoint: PushEndpoint, expected: int, limit: float) -> dict[str, Any]:
    """Wait for `expected` pushes in short waits (the endpoint answers each within 5 s, so it can always be
    stopped), giving up at `limit` seconds or once nothing arrived for 60 s."""
    deadline = time.monotonic() + limit
    last_count, last_change = -1, time.monotonic()
    while True:
        stats = endpoint.command(f"wait {expected} 5")
        if stats["received"] != last_count:
            last_count, last_change = stats["received"], time.monotonic()
        if stats["received"] >= expected or time.monotonic() > deadline or time.monotonic() - last_change > 60:
            return stats


# --- The outcome ---------------------------------------------------------------------------------------------


@dataclass
class DisasterResult:
    """What bench.scaleout reads back (as JSON) and the last line is made of."""

    daphnes: int
    workers: int
    people: int
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    first_push: float = float("nan")
    last_push: float = float("nan")
    send_finished: float = float("nan")
    bare_push_ms: float = float("nan")
    answers_rate: float = float("nan")
    answers_p95: float = float("nan")
    board_p50: float = float("nan")
    board_p95: float = float("nan")
    fps_mean: float = float("nan")
    fps_peak: int = 0
    instruction_board_p95: float = float("nan")
    instruction_push_last: float = float("nan")
    capacity_rate: float = float("nan")
    capacity_p95: float = float("nan")
    capacity_failed: int = 0  # capacity answers not HTTP 200
    daphne_cpu: float = float("nan")
    machine_busy: float = float("nan")
    seconds: float = float("nan")
    incident_id: int = 0
    jma_sent: float = 0.0  # time.time() of the JMA POST


def problem(outcome: DisasterResult, text: str, count: int = 1) -> None:
    text = " ".join(text.split())[:400]  # an HTML error page on one line
    outcome.errors += count
    outcome.problems.append(text)
    print(f"  error: {text}", flush=True)


def run(args: argparse.Namespace, database_url: str, prefix: str, token: str, pool_size: str | None) -> DisasterResult:
    began = time.perf_counter()
    outcome = DisasterResult(args.daphnes, args.workers, args.people)
    started = time.perf_counter()
    print(f"database: {setup_django()} (throwaway, created and migrated in {time.perf_counter() - started:.1f} s)")
    from django.conf import settings

    from consumers.vapid import vapid_keys
    from consumers.webpush import PushMessage, PushTarget
    from safety.models import Channel, Delivery, DeliveryState, Dispatch

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; daphne, the workers, PostgreSQL, Redis, the push "
        "endpoint, the board sockets and this process (the answers) share them"
    )
    keys = vapid_keys()
    endpoint = PushEndpoint(args.people + 1, keys.public)
    busy_before = machine_ticks()
    try:
        started = time.perf_counter()
        world = world_create(f"bench-disaster-{os.getpid()}", args, endpoint, keys.public)
        print(
            f"{args.people:,} people based in 宮城県 ({REGION}) in 40 departments, each with a push subscription and "
            f"an e-mail address; {len(world.viewers)} board viewers signed in: made in "
            f"{time.perf_counter() - started:.1f} s; push endpoint {endpoint.base_url}"
        )
        spare = endpoint.subscriptions[args.people]
        spare_target = PushTarget(
            id=0,
            endpoint=spare["endpoint"],
            p256dh=spare["keys"]["p256dh"],
            auth=spare["keys"]["auth"],
            payload={"title": "災害発生：地震（震度7）宮城県", "body": "bare push", "url": "/x/?via=push"},
        )
        message = PushMessage(payload={}, ttl=3600, urgency="high", topic="bare")
        bare_push(endpoint, spare_target, message, keys.private, settings.VAPID_SUBJECT)  # imports, first signature
        outcome.bare_push_ms = 1000 * bare_push(endpoint, spare_target, message, keys.private, settings.VAPID_SUBJECT)

        env = daphne_env(args.redis_url, prefix, pool_size, settings_module=SETTINGS_MODULE)
        ports = [free_port() for _ in range(args.daphnes)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        with contextlib.ExitStack() as stack:
            servers = Servers(
                [
                    stack.enter_context(
                        server_process(
                            "daphne",
                            [
                                sys.executable,
                                "-m",
                                "daphne",
                                "-b",
                                "127.0.0.1",
                                "-p",
                                str(port),
                                *DAPHNE_ARGS,
                                "config.asgi:application",
                            ],
                            env,
                            port,
                        )
                    )
                    for port in ports
                ]
            )
            workers: list[Worker] = [
                stack.enter_context(worker_process(f"disaster{n}-{os.getpid()}@localhost", env))
                for n in range(args.workers)
            ]
            started = time.perf_counter()
            for server in servers.servers:
                server.wait_listening()
            for worker in workers:
                worker.wait_ready(timeout=120)
            print(
                f"{args.daphnes} daphne ({', '.join(bases)}) and {args.workers} `celery -A config worker` (prefork, "
                f"one child per core) ready in {time.perf_counter() - started:.1f} s; SAFETY_PUSH_BATCH="
                f"{settings.SAFETY_PUSH_BATCH}, PUSH_CONCURRENCY={settings.PUSH_CONCURRENCY}; e-mail: locmem",
                flush=True,
            )
            errors_file = stack.enter_context(tempfile.TemporaryFile())
            meter = CpuMeter(
                {"daphne": [p.proc.pid for p in servers.servers], "push endpoint": [endpoint.proc.pid]},
                {"celery workers": [w.proc.pid for w in workers]},
                str(settings.DATABASES["default"]["NAME"]),
            )
            try:
                scenario(args, outcome, world, endpoint, servers, workers, bases, errors_file, token, meter)
            except Exception:
                print(f"--- daphne, last output:\n{servers.tail()}")
                for worker in workers:
                    print(f"--- worker {worker.node}, last output:\n{worker.text()[-3000:]}")
                with contextlib.suppress(Exception):
                    errors_file.seek(0)
                    print(f"--- board sockets, errors:\n{errors_file.read()[-3000:].decode(errors='replace')}")
                raise
            outcome.daphne_cpu = servers.cpu_seconds()
            logged: Counter[str] = Counter()
            for server in servers.servers:
                found, _where = log_problems(server.output)
                logged.update(found)
            if logged:  # one error however many lines: the requests that failed are counted already
                commonest = "; ".join(f"{n} x {text[:160]}" for text, n in logged.most_common(3))
                problem(outcome, f"daphne logged {sum(logged.values())} errors or warnings, commonest: {commonest}")
            for worker in workers:
                worker_errors = worker.errors()
                if worker_errors:
                    problem(outcome, f"{worker.node} logged {len(worker_errors)} errors: {worker_errors[0][:200]}")
        # Every delivery of the send: pushes and e-mails sent (or answered since), in-app sent; none failed or queued.
        incident_id = outcome.incident_id
        states = Counter(
            (c, s)
            for c, s in Delivery.objects.filter(incident_id=incident_id).values_list("channel", "state").iterator()
        )
        bad = {k: n for k, n in states.items() if k[1] in (DeliveryState.FAILED, DeliveryState.QUEUED)}
        if bad:
            problem(outcome, f"deliveries failed or still queued: {bad}", sum(bad.values()))
        per_channel = Counter(c for (c, _s) in states.elements())
        for channel in (Channel.PUSH, Channel.EMAIL, Channel.INAPP):
            if per_channel[channel] != args.people:
                problem(outcome, f"{per_channel[channel]} {channel} deliveries, expected {args.people}")
        dispatch = Dispatch.objects.filter(incident_id=incident_id).order_by("id").first()
        if dispatch is None or dispatch.finished_at is None:
            problem(outcome, "the send never finished")
        else:
            outcome.send_finished = dispatch.finished_at.timestamp() - outcome.jma_sent
    finally:
        endpoint.stop()
        busy_after = machine_ticks()
        if busy_after[1] > busy_before[1]:
            outcome.machine_busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
        outcome.seconds = time.perf_counter() - began
    return outcome


def scenario(
    args: argparse.Namespace,
    outcome: DisasterResult,
    world: World,
    endpoint: PushEndpoint,
    servers: Servers,
    workers: Sequence[Worker],
    bases: Sequence[str],
    errors_file: IO[bytes],
    token: str,
    meter: CpuMeter,
) -> None:
    from safety.models import Dispatch, JmaDecision
    from safety.models import Instruction as Instruction_
    from safety.tokens import answer_token

    # --- 2. The JMA document, the decision, the send ---------------------------------------------------------
    tag = os.getpid()
    event_id = f"8{tag % 10**7:07d}000001"
    url = f"https://bench.invalid/disaster/{tag}/{event_id}.xml"
    document = document_bytes(FIXTURE.read_bytes(), event_id)
    endpoint.command("reset")
    port = int(bases[0].rsplit(":", 1)[1])
    cpu_before, wall_before = meter.snapshot(), time.monotonic()
    sent, answered, status, body = post_document(port, token, url, document)
    outcome.jma_sent = sent
    print(f"JMA VXSE53 (Tōhoku 2011, 震度7 in 宮城県) POSTed: HTTP {status} in {answered - sent:.3f} s", flush=True)
    if status != 201:
        problem(outcome, f"the JMA POST answered {status}: {body[:200]!r}")
        raise RuntimeError("the JMA document was not taken")
    stats = pushes_wait(endpoint, args.people, url, 120 + args.people / 20)
    decision = JmaDecision.objects.filter(document__url=url).first()
    if decision is None or decision.decision != "dispatch" or not decision.incident_ids:
        problem(outcome, f"the decision was {decision and decision.decision!r}, not a dispatch")
        raise RuntimeError("no dispatch")
    if len(decision.new_person_ids) != args.people:
        problem(outcome, f"the dispatch reached {len(decision.new_person_ids)} people, expected {args.people}")
    incident_id = int(decision.incident_ids[0])
    outcome.incident_id = incident_id
    if stats["received"]:
        outcome.first_push = stats["first"] - sent
        outcome.last_push = stats["last"] - sent
    if stats["received"] != args.people or stats["distinct"] != args.people:
        problem(
            outcome,
            f"the endpoint accepted {stats['received']} pushes for {stats['distinct']} subscriptions, expected "
            f"{args.people}",
            abs(args.people - stats["distinct"]) + abs(stats["received"] - stats["distinct"]) or 1,
        )
    if stats["rejected"]:
        problem(outcome, f"{stats['rejected']} pushes rejected: {stats['reasons']}", stats["rejected"])
    if stats["incidents"] != [incident_id]:
        problem(outcome, f"the pushes named incidents {stats['incidents']}, not {incident_id}")
    print(
        f"decision: dispatch to {len(decision.new_person_ids):,} people (incident {incident_id}); pushes accepted "
        f"{stats['received']:,}/{args.people:,}: first {outcome.first_push:.2f} s, last {outcome.last_push:.2f} s "
        f"after the POST (bare push {outcome.bare_push_ms:.0f} ms)",
        flush=True,
    )
    print(f"  {CpuMeter.describe(cpu_before, meter.snapshot(), time.monotonic() - wall_before)}", flush=True)
    endpoint.command("reset")

    # --- 3. The boards, the answers, the instructions ---------------------------------------------------------
    boards, cookies = [], {}
    for i, viewer in enumerate(world.viewers):
        if viewer.department_id is None:
            spec = BoardSpec(f"whole{i:02d}", f"board.{incident_id}", None, None)
        else:
            stream = f"board.{incident_id}-{viewer.department_id}"
            spec = BoardSpec(f"dept{i:02d}", stream, viewer.department_id, world.subtrees[viewer.department_id])
        boards.append(spec)
        cookies[spec.name] = f"sessionid={viewer.session_key}"
    config = {
        "timeout": 60,
        "boards": [
            {
                "name": b.name,
                "cookie": cookies[b.name],
                "stream": b.stream,
                "url": f"ws://{bases[n % len(bases)].split('://', 1)[1]}/{world.slug}/ws/",
                "origin": bases[n % len(bases)],
            }
            for n, b in enumerate(boards)
        ],
    }
    tokens = [
        answer_token(organization_id=world.organization_id, incident_id=incident_id, person_id=person_id)
        for person_id in world.person_ids
    ]
    answering = list(range(len(world.person_ids)))
    rng = random.Random(args.seed)
    rng.shuffle(answering)
    setup = Setup(Population(world.slug, incident_id, world.person_ids, tokens), boards, cookies, answering)
    requests = requests_for(setup, 0, args.answers, args.seconds, rng)
    for n, request in enumerate(requests):
        request.path = bases[n % len(bases)] + request.path
    measured_people = {int(r.key) for r in requests}
    # The crisis manager (the first viewer) posts the instructions, as the board page does: session and CSRF.
    poster = bases[0]
    csrf = secrets.token_hex(16)  # 32 characters: an unmasked CSRF secret
    headers = {
        "Cookie": f"sessionid={world.viewers[0].session_key}; csrftoken={csrf}",
        "X-CSRFToken": csrf,
        "Origin": poster,
        "Referer": poster + "/",
        "Accept": "application/json",
    }
    items = [
        Instruction(
            at=(k + 0.5) * args.seconds / max(1, args.instructions),
            body=f"対策指示 {k + 1}: 建物の外へ避難し、指定の避難場所に集合してください。Instruction {k + 1}.",
            url=f"{poster}/{world.slug}/api/safety/incidents/{incident_id}/instructions/",
        )
        for k in range(args.instructions)
    ]

    clients = DisasterClients(config, errors_file)
    meter.roles["board sockets"] = [clients.proc.pid]
    try:
        ready = clients.expect("ready", timeout=180)["ready"]
        print(f"{ready['connected']}/{len(boards)} board sockets subscribed in {ready['seconds']:.1f} s", flush=True)
        if ready["failed"]:
            problem(outcome, f"{ready['failed']} board sockets did not subscribe: {ready['errors']}", ready["failed"])
            raise RuntimeError("board sockets failed")

        async def load() -> tuple[list[Outcome], float]:
            answers = kept_alive("", requests, args.keep_alive) if args.keep_alive else open_loop("", requests)
            (outcomes, seconds), _ = await asyncio.gather(answers, instructions_post(items, headers))
            return outcomes, seconds

        print(
            f"load: {args.answers:,} answers over {args.seconds:g} s ({args.answers / args.seconds:.1f}/s, "
            + (f"over {args.keep_alive} kept-alive connections" if args.keep_alive else "each on a new connection")
            + f") and {args.instructions} instructions, over {len(bases)} daphne",
            flush=True,
        )
        cpu_before, wall_before = meter.snapshot(), time.monotonic()
        phase = measured("load", servers, load)
        print(f"  {CpuMeter.describe(cpu_before, meter.snapshot(), time.monotonic() - wall_before)}", flush=True)
        print(f"  answers      {phase.describe()}", flush=True)
        outcome.answers_rate = phase.rate
        lat = phase.latencies()
        outcome.answers_p95 = p95(lat) if lat else float("nan")
        failed = [o for o in phase.outcomes if o.code != 200]
        if failed:
            problem(
                outcome, f"{len(failed)} answers not HTTP 200, e.g. {failed[0].code} {failed[0].error}", len(failed)
            )
        for item in items:
            if item.status != 201:
                problem(outcome, f"instruction POST answered {item.status}: {item.error}")
        settle(clients, incident_id)
        # The instruction pushes: each instruction reaches everyone the incident asked.
        # The instructions stored (one whose POST timed out may still have been written) each reach everyone.
        stored = Instruction_.objects.filter(incident_id=incident_id).count()
        expected_pushes = stored * args.people
        if expected_pushes:
            stats = pushes_settle(endpoint, expected_pushes, INSTRUCTION_PUSH_LIMIT)
            first_sent = min(i.sent for i in items)
            outcome.instruction_push_last = stats["last"] - first_sent if stats["received"] else float("nan")
            print(
                f"instruction pushes: {stats['received']:,}/{expected_pushes:,} accepted, the last "
                f"{outcome.instruction_push_last:.1f} s after the first instruction was posted",
                flush=True,
            )
            if stats["received"] != expected_pushes or stats["distinct"] != args.people:
                problem(
                    outcome,
                    f"instruction pushes: {stats['received']} accepted for {stats['distinct']} subscriptions, "
                    f"expected {expected_pushes} for {args.people}",
                    abs(expected_pushes - stats["received"]) or 1,
                )
            if stats["rejected"]:
                problem(
                    outcome, f"{stats['rejected']} instruction pushes rejected: {stats['reasons']}", stats["rejected"]
                )
        # The send ends with its e-mails: wait for it (and so the delivery check sees the final states).
        deadline = time.monotonic() + 120 + args.people / 50
        while time.monotonic() < deadline:
            if not Dispatch.objects.filter(incident_id=incident_id, finished_at__isnull=True).exists():
                break
            time.sleep(0.5)

        # --- 5. Capacity (bench.scaleout) --------------------------------------------------------------------
        if args.capacity:
            lo = args.answers
            hi = min(len(world.person_ids), lo + args.capacity)
            more = requests_for(setup, lo, hi, 0.0, rng)
            for n, request in enumerate(more):
                request.path = bases[n % len(bases)] + request.path
            cap = measured("capacity", servers, lambda: closed_loop("", more, args.concurrency))
            print(f"capacity: {len(more):,} answers, closed loop over {args.concurrency} connections: {cap.describe()}")
            outcome.capacity_rate = cap.rate
            cap_lat = cap.latencies()
            outcome.capacity_p95 = p95(cap_lat) if cap_lat else float("nan")
            not_ok = [o for o in cap.outcomes if o.code != 200]
            outcome.capacity_failed = len(not_ok)
            if not_ok:
                problem(
                    outcome,
                    f"{len(not_ok)} capacity answers not HTTP 200: {not_ok[0].code} {not_ok[0].error}",
                    len(not_ok),
                )
            settle(clients, incident_id)
        clients.send({"cmd": "stop"})
        result = clients.expect("result", timeout=120)
    finally:
        clients.stop()

    # --- Reading the boards -------------------------------------------------------------------------------------
    from bench.board import answer_times

    times = answer_times(incident_id)
    rows = sql_counts(incident_id)
    load_times = [t for person, _d, t in times if person in measured_people]
    window = (min(load_times), max(load_times)) if load_times else (0.0, 0.0)
    runs: list[BoardRun] = []
    instruction_latencies: list[float] = []
    posted = {i.id: i.sent for i in items if i.id}
    board_base = {b.name: bases[n % len(bases)] for n, b in enumerate(boards)}
    for spec in boards:
        got = result[spec.name]
        frames = [f for f in got["frames"] if f[1] != "instruction"]
        shown_instructions = {int(f[2]): float(f[0]) for f in got["frames"] if f[1] == "instruction"}
        for instruction_id, sent_at in posted.items():
            if instruction_id in shown_instructions:
                instruction_latencies.append(shown_instructions[instruction_id] - sent_at)
            else:
                problem(
                    outcome,
                    f"{spec.name} ({spec.stream}, on {board_base[spec.name]}): instruction {instruction_id} "
                    "never shown",
                )
        board = BoardRun(spec, frames, got["last"], got["problems"])
        board_measure(board, times, measured_people, window)
        shown = board.last.get("total", {})
        board.count_problems = compare_total(f"{spec.name} {spec.stream}", shown, expected_total(rows, spec.scope))
        if spec.scope is None:
            for row in board.last.get("departments", []):
                board.count_problems += compare_total(
                    f"{spec.name} department {row['id']}", row, expected_total(rows, {row["id"]})
                )
        for text in board.problems:
            problem(outcome, f"{spec.name}: {text}")
        for text in board.count_problems[:3]:
            problem(outcome, f"final counts: {text}")
        if len(board.count_problems) > 3:
            problem(
                outcome,
                f"{spec.name}: {len(board.count_problems) - 3} more count differences",
                len(board.count_problems) - 3,
            )
        if board.missed:
            problem(outcome, f"{spec.name}: {board.missed} answers never shown", board.missed)
        runs.append(board)
    values = [v for r in runs for v in r.latencies]
    if values:
        outcome.board_p50, outcome.board_p95 = median(values), p95(values)
    outcome.fps_mean = max((r.mean_fps for r in runs), default=0.0)
    outcome.fps_peak = max((r.peak_window for r in runs), default=0)
    if instruction_latencies:
        outcome.instruction_board_p95 = p95(instruction_latencies)
    sent_frames = sum(r.frames_in_load for r in runs)
    per_answer = sum(r.answers_in_load for r in runs)
    print(
        f"boards: {len(runs)}, {len(load_times):,} measured answers committed over {window[1] - window[0]:.1f} s; "
        f"answer -> board p50 {outcome.board_p50 * 1000:.0f} ms, p95 {outcome.board_p95 * 1000:.0f} ms, max "
        f"{max(values, default=float('nan')) * 1000:.0f} ms ({len(values):,} board updates); tally frames/s per board "
        f"mean {outcome.fps_mean:.2f} (busiest board), peak {outcome.fps_peak} in 1 s; {sent_frames:,} frames sent "
        f"where a frame per answer would have been {per_answer:,}"
    )
    if instruction_latencies:
        print(
            f"instructions -> boards: {len(instruction_latencies)} shown (of {len(posted)} x {len(runs)}), POST sent "
            f"-> "
            f"frame p50 {median(instruction_latencies) * 1000:.0f} ms, p95 {outcome.instruction_board_p95 * 1000:.0f} "
            f"ms, max {max(instruction_latencies) * 1000:.0f} ms"
        )
    counts_equal = not any(r.count_problems for r in runs)
    print(f"final counts of every board against SQL COUNT(*): {'equal' if counts_equal else 'DIFFERENT'}")


# --- Main ---------------------------------------------------------------------------------------------------


def parser_build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="500 people, 250 answers over 10 s: checks the harness")
    parser.add_argument("--people", type=int, default=PEOPLE)
    parser.add_argument("--answers", type=int, default=ANSWERS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--instructions", type=int, default=INSTRUCTIONS)
    parser.add_argument("--whole-boards", type=int, default=WHOLE_BOARDS)
    parser.add_argument("--subtree-boards", type=int, default=SUBTREE_BOARDS)
    parser.add_argument("--daphnes", type=int, default=1, help="daphne processes (answers and sockets in turn)")
    parser.add_argument("--workers", type=int, default=1, help="celery workers (prefork, one child per core)")
    parser.add_argument("--capacity", type=int, default=0, help="then N more answers in a closed loop (answers/s)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections of the --capacity loop")
    parser.add_argument("--keep-alive", type=int, default=0, metavar="N", help="answers over N kept-alive connections")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", help="write the outcome as JSON to this file (bench.scaleout)")
    return parser


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(
        128 + signum
    )  # through the finally blocks: servers, workers and endpoint stopped, database dropped


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = parser_build()
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if args.answers + args.capacity > args.people or args.answers < 1 or args.seconds <= 0:
        parser.error("--answers + --capacity must not exceed --people; --answers and --seconds positive")
    if not 1 <= args.daphnes <= 4 or not 1 <= args.workers <= 4 or args.subtree_boards > 12:
        parser.error("1 to 4 daphne processes and workers, at most 12 subtree boards")
    target = f"(target {TARGET_ERRORS} errors)"
    if not FIXTURE.is_file():
        print(f"the fixture is missing: {FIXTURE}")
        return verdict(f"disaster: not run {target}", False)
    base_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
        print("disaster needs PostgreSQL (DATABASE_URL): the benchmark creates a throwaway database on that server")
        return verdict(f"disaster: not run {target}", False)
    _raise_open_files(4 * args.answers + 4096)
    tag = f"{os.getpid()}"
    database_url = throwaway_url(base_url, f"tsunagu_bench_disaster_{tag}")
    prefix, queue_name, token = f"benchdisaster{tag}", f"bench-disaster-{tag}", secrets.token_urlsafe(32)
    pool_size = os.environ.get("DB_POOL_MAX_SIZE")  # setup_django sets 0 for itself; the servers pool as deployed
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        CHANNEL_REDIS_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        BENCH_CELERY_QUEUE=queue_name,
        JMA_INGEST_TOKEN=token,
        JMA_FEED_URLS="",  # nothing polls the real feed
        EMAIL_URL="locmem://",  # nothing may leave the machine
    )
    os.environ.pop("BENCH_JMA_TRACE", None)
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # shared with daphne and the workers
    print(
        f"disaster: {args.people:,} people, {args.answers:,} answers over {args.seconds:g} s, "
        f"{args.whole_boards + args.subtree_boards} boards, {args.instructions} instructions; {args.daphnes} daphne + "
        f"{args.workers} worker; redis {args.redis_url} (prefix {prefix}, queue {queue_name})",
        flush=True,
    )
    outcome: DisasterResult | None = None
    try:
        outcome = run(args, database_url, prefix, token, pool_size)
    except Exception as exc:
        import traceback

        traceback.print_exc(file=sys.stdout)
        outcome = outcome or DisasterResult(args.daphnes, args.workers, args.people)
        outcome.errors += 1
        outcome.problems.append(f"not measured: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        from django.db import connections

        with contextlib.suppress(Exception):
            connections.close_all()
        redis_cleanup(args.redis_url, queue_name, prefix, prefix)
        with contextlib.suppress(Exception):
            drop_database(database_url)
            print("throwaway database dropped; redis keys of this run removed")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(outcome)))
    print(
        f"\nraw: last push {outcome.last_push:.2f} s (first {outcome.first_push:.2f} s, send with e-mails finished "
        f"{outcome.send_finished:.1f} s) after the JMA POST; answers {outcome.answers_rate:.1f}/s, HTTP p95 "
        f"{outcome.answers_p95 * 1000:.0f} ms; answer -> board p50 {outcome.board_p50 * 1000:.0f} ms, p95 "
        f"{outcome.board_p95 * 1000:.0f} ms; board {outcome.fps_mean:.2f} frames/s (peak {outcome.fps_peak} in 1 s); "
        f"instruction -> board p95 {outcome.instruction_board_p95 * 1000:.0f} ms, last instruction push "
        f"{outcome.instruction_push_last:.1f} s; daphne CPU {outcome.daphne_cpu:.0f} s; machine "
        f"{outcome.machine_busy:.0%} busy; {outcome.seconds:.0f} s in all; baseline bare push "
        f"{outcome.bare_push_ms:.0f} ms"
    )
    for text in outcome.problems:
        print(f"FAIL: {text}")
    return verdict(
        f"disaster: {outcome.errors} errors, last push {outcome.last_push:.1f} s, answer-to-board p95 "
        f"{outcome.board_p95 * 1000:.0f} ms, board {outcome.fps_mean:.1f} fps {target}",
        outcome.errors <= TARGET_ERRORS,
    )


if __name__ == "__main__":
    sys.exit(main())
