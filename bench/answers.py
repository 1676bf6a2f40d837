"""P5: answers. 1,000 people answer in a 60 s burst over HTTP: throughput at least 0.5x that of a bare Django view
doing one INSERT (same run, same server), p95 latency under 500 ms, and no answer lost.

One daphne process, started as production starts it (the Dockerfile's command, `config.asgi:application`, the
project's settings, middleware and database pool), serves both:

- **ours**: POST /<slug>/api/safety/answer/<token>/ with {"values": {"safety": ...}, "via": "link"}, the signed
  link of the push and the e-mail (no session; the per-link throttle, the token, the organisation, the
  recipient, `safety.services.answer_submit` with its history row, recipient update, deliveries marked answered
  and outbox event, the commit, the relay to the channel layer, and the request data as the response);
- **bare**: POST /bench/bare-answer/<token>/ with the same body, a plain Django view (bench/_answers_urls.py)
  that reads the body and does one INSERT into a minimal table, in autocommit.

Everything runs in a throwaway PostgreSQL database the benchmark creates (on the server of DATABASE_URL, by
default postgres://postgres@127.0.0.1:5432/) and drops at the end: an organisation, departments, the people, an
open incident with the default questions, one send (a recipient row and three sent delivery rows per person).
Every request is a different person (one answer per link, well inside the link's throttle). Statuses are mixed:
safe, minor and serious injuries, some needing help.

1. Throughput: closed loop, `--concurrency` clients (keep-alive connections) sending as fast as the server
   answers, `--per-round` answers per round, alternating bare and ours for `--rounds` rounds after a warm-up.
   The figure is the ratio of the median rounds' answers/s.
2. Burst: 1,000 other people answer at random moments spread over `--burst-seconds` (default the real 60 s),
   open loop (each at its moment whatever the others are doing), each on a new connection as separate phones
   do. Latency is from the planned moment to the whole response, so client lag counts against us.
3. Lost: in SQL, every answer that got HTTP 200 (in any phase) must have exactly one Answer row with its status,
   its recipient row updated to it (answer, count 1), its three deliveries marked answered; and all 1,000 of the
   burst must have got 200.

The client is aiohttp in this process. The machine's cores are shared by daphne, PostgreSQL, Redis and the
client: each round prints the CPU seconds of the server and of the client, and how busy the whole machine was.

    .venv/bin/python -m bench.answers                          # about 2 minutes
    .venv/bin/python -m bench.answers --burst-seconds 10 --per-round 200 --rounds 1   # checks the harness only

Redis: --redis-url, by default database 13 of the local server (the cache for the throttle, the channel layer
under a prefix of this run's own); this run's keys are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bench.common import daphne_env, drop_database, median, p95, setup_django, verdict

BURST_PEOPLE = 1000
BURST_SECONDS = 60.0
TARGET_RATIO = 0.5
TARGET_P95_MS = 500.0
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tsunagu_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
WARM_UP = 40
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
CHANNELS_PER_PERSON = 3  # push, e-mail, in-app: the delivery rows answer_submit marks answered


# --- Throwaway database -------------------------------------------------------------------------------------


def throwaway_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


# --- Measuring ----------------------------------------------------------------------------------------------


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (Linux /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


@dataclass
class Request:
    key: str  # the person's id (ours) or the token (bare)
    path: str
    body: bytes
    status: str
    at: float = 0.0  # open loop: seconds after the start


@dataclass
class Outcome:
    request: Request
    code: int  # HTTP status, 0 for no response
    seconds: float
    error: str = ""


@dataclass
class Phase:
    label: str
    outcomes: list[Outcome]
    seconds: float  # first request to last response
    server_cpu: float
    client_cpu: float
    machine_busy: float  # 0..1 of all cores

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code == 200]

    @property
    def rate(self) -> float:
        return len(self.ok) / self.seconds if self.seconds > 0 else 0.0

    def latencies(self) -> list[float]:
        return [o.seconds for o in self.ok]

    def describe(self) -> str:
        lat = self.latencies() or [float("nan")]
        failed = [o for o in self.outcomes if o.code != 200]
        per_answer = self.server_cpu / len(self.ok) * 1000 if self.ok else float("nan")
        text = (
            f"{self.rate:7.1f} answers/s  p50 {median(lat) * 1000:5.0f} ms  p95 {p95(lat) * 1000:5.0f} ms  "
            f"max {max(lat) * 1000:5.0f} ms  {len(self.ok)}/{len(self.outcomes)} HTTP 200  ({self.seconds:.1f} s; "
            f"CPU server {self.server_cpu:.1f} s = {per_answer:.1f} ms/answer, client {self.client_cpu:.1f} s; "
            f"machine {self.machine_busy * 100:.0f}% busy)"
        )
        if failed:
            examples = sorted({f"{o.code} {o.error}"[:160] for o in failed})[:3]
            text += f"\n      {len(failed)} not 200, e.g. " + " | ".join(examples)
        return text


async def _post(session: aiohttp.ClientSession, base: str, request: Request) -> tuple[int, str]:
    try:
        async with session.post(base + request.path, data=request.body, headers=HEADERS) as response:
            body = await response.read()
            return response.status, "" if response.status == 200 else body[:200].decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


async def closed_loop(base: str, requests: Sequence[Request], concurrency: int) -> tuple[list[Outcome], float]:
    """`concurrency` clients on keep-alive connections, each sending its next request as soon as the last one
    is answered, until all are sent."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    outcomes: list[Outcome] = []
    pending = iter(requests)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            for request in pending:  # one iterator shared by all clients: each request goes once
                started = time.perf_counter()
                code, error = await _post(session, base, request)
                outcomes.append(Outcome(request, code, time.perf_counter() - started, error))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return outcomes, time.perf_counter() - started


async def open_loop(base: str, requests: Sequence[Request]) -> tuple[list[Outcome], float]:
    """Each request at its own moment (`at` seconds after the start) on a new connection, whatever the others
    are doing; its latency runs from that planned moment to the end of the response."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time() + 0.2

        async def one(request: Request) -> None:
            planned = start + request.at
            await asyncio.sleep(max(0.0, planned - loop.time()))
            code, error = await _post(session, base, request)
            outcomes.append(Outcome(request, code, loop.time() - planned, error))

        await asyncio.gather(*(one(request) for request in requests))
        return outcomes, loop.time() - start


def measured(label: str, server: Any, run: Any) -> Phase:
    """Run one phase (a coroutine factory) with the CPU of the server, of this process and of the machine."""
    server_cpu, client_cpu, (busy, total) = server.cpu_seconds(), time.process_time(), machine_ticks()
    outcomes, seconds = asyncio.run(run())
    busy_after, total_after = machine_ticks()
    server.check()
    return Phase(
        label,
        outcomes,
        seconds,
        server.cpu_seconds() - server_cpu,
        time.process_time() - client_cpu,
        (busy_after - busy) / (total_after - total) if total_after > total else float("nan"),
    )


# --- Data ---------------------------------------------------------------------------------------------------


@dataclass
class Population:
    slug: str
    incident_id: int
    person_ids: list[int]
    tokens: list[str]


def population_create(count: int) -> Population:
    from django.db import connection

    from bench._answers_data import analyze, departments_create, incident_open, people_create, recipients_create
    from bench._answers_urls import BARE_TABLE_SQL
    from directory.models import Organization
    from safety.tokens import answer_token

    slug = f"bench-answers-{os.getpid()}"
    organization = Organization.objects.create(
        slug=slug, name=slug, max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
    )
    departments = departments_create(organization, 20)
    person_ids = people_create(organization, count, departments)
    incident = incident_open(organization)
    recipients_create(incident, person_ids, answered=0.0, deliveries=True)
    with connection.cursor() as cursor:
        cursor.execute(BARE_TABLE_SQL)
    analyze()
    tokens = [
        answer_token(organization_id=organization.id, incident_id=incident.id, person_id=person_id)
        for person_id in person_ids
    ]
    return Population(slug, incident.id, person_ids, tokens)


def answer_body(rng: random.Random) -> tuple[bytes, str]:
    status = rng.choices(("safe", "minor", "serious"), weights=(85, 11, 4))[0]
    values = {"safety": status}
    if status != "safe" or rng.random() < 0.3:
        values["help"] = "yes" if status == "serious" or rng.random() < 0.4 else "no"
    return json.dumps({"values": values, "via": "link"}).encode(), status


def our_requests(population: Population, lo: int, hi: int, rng: random.Random) -> list[Request]:
    out = []
    for person_id, token in zip(population.person_ids[lo:hi], population.tokens[lo:hi], strict=True):
        body, status = answer_body(rng)
        out.append(Request(str(person_id), f"/{population.slug}/api/safety/answer/{token}/", body, status))
    return out


def bare_requests(count: int, token_length: int, rng: random.Random) -> list[Request]:
    """The same bodies, to a path of the same length."""
    out = []
    for _ in range(count):
        token = ("bare" + secrets.token_urlsafe(token_length))[:token_length]
        body, status = answer_body(rng)
        out.append(Request(token, f"/bench/bare-answer/{token}/", body, status))
    return out


# --- Checking -----------------------------------------------------------------------------------------------


@dataclass
class Check:
    acknowledged: int  # our answers that got HTTP 200
    kept: int  # ... whose rows are all there
    answer_rows: int
    recipients_updated: int
    deliveries_answered: int
    unacknowledged_kept: int  # not 200, but stored all the same (a timeout after the commit)
    bare_acknowledged: int
    bare_rows: int

    @property
    def lost(self) -> int:
        return self.acknowledged - self.kept


def check(population: Population, ours: Sequence[Outcome], bare: Sequence[Outcome]) -> Check:
    """Count in SQL what the 200s promised."""
    from django.db import connection

    expected = {int(o.request.key): o.request.status for o in ours if o.code == 200}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT r.person_id, r.status, r.answer_count, a.status, a.person_id,
                   (SELECT count(*) FROM safety_answer x WHERE x.incident_id = r.incident_id
                        AND x.person_id = r.person_id),
                   (SELECT count(*) FROM safety_delivery d WHERE d.incident_id = r.incident_id
                        AND d.person_id = r.person_id AND d.state = 'answered')
            FROM safety_recipient r LEFT JOIN safety_answer a ON a.id = r.answer_id
            WHERE r.incident_id = %s
            """,
            [population.incident_id],
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT count(*), count(DISTINCT token) FROM bench_bare_answer")
        bare_rows, bare_distinct = cursor.fetchone()
    kept = answer_rows = updated = deliveries = unacknowledged = 0
    for person_id, status, count, answer_status, answer_person, answers, answered_deliveries in rows:
        answer_rows += answers
        deliveries += answered_deliveries
        want = expected.get(person_id)
        if want is None:
            unacknowledged += answers > 0
            continue
        is_updated = status == want and count == 1 and answer_status == want and answer_person == person_id
        updated += is_updated
        kept += is_updated and answers == 1 and answered_deliveries == CHANNELS_PER_PERSON
    bare_ok = {o.request.key for o in bare if o.code == 200}
    if bare_distinct != bare_rows:
        print(f"note: the bare table has {bare_rows} rows for {bare_distinct} tokens")
    return Check(len(expected), kept, answer_rows, updated, deliveries, unacknowledged, len(bare_ok), bare_rows)


def cleanup_redis(redis_url: str, prefix: str, tokens: Sequence[str]) -> None:
    from django.core.cache import cache

    from bench.chat_fanout import flush_layer

    with contextlib.suppress(Exception):
        for i in range(0, len(tokens), 500):
            cache.delete_many([f"throttle:safety-link:127.0.0.1:{t[-16:]}" for t in tokens[i : i + 500]])
        cache.close()
    flush_layer(redis_url, prefix)


# --- Main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=BURST_PEOPLE, help="people answering in the burst")
    parser.add_argument("--burst-seconds", type=float, default=BURST_SECONDS)
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the throughput rounds")
    parser.add_argument("--per-round", type=int, default=500, help="answers per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds of each, alternating")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)

    from bench.chat_fanout import DAPHNE_ARGS, _raise_open_files, free_port, server_process

    _raise_open_files(4 * args.people + 1024)
    base_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
        print("answers needs PostgreSQL (DATABASE_URL): the benchmark creates a throwaway database on that server")
        return verdict(f"answers: not run (target >= {TARGET_RATIO:g}x, p95 < {TARGET_P95_MS:g} ms, lost 0)", False)
    tag = f"{os.getpid()}"
    database_url = throwaway_url(base_url, f"tsunagu_bench_answers_{tag}")
    prefix = f"benchanswers{tag}"
    pool_size = os.environ.get("DB_POOL_MAX_SIZE")  # setup_django sets 0 for itself
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=args.redis_url, CHANNEL_REDIS_PREFIX=prefix)
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # shared with daphne: the links are signed
    rng = random.Random(args.seed)
    total_people = 2 * WARM_UP + args.rounds * args.per_round + args.people

    population: Population | None = None
    try:
        started = time.perf_counter()
        print(f"database: {setup_django()} (throwaway, created and migrated in {time.perf_counter() - started:.1f} s)")
        print(f"redis: {args.redis_url} (channel-layer prefix {prefix})")
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"machine: {os.cpu_count()} cores, load average {load}; daphne, PostgreSQL, Redis and the client "
            "(this process) share them, so every figure is lower than on a server of its own"
        )
        started = time.perf_counter()
        population = population_create(total_people)
        print(
            f"{total_people:,} people, an open incident, {total_people:,} recipients and "
            f"{total_people * CHANNELS_PER_PERSON:,} sent deliveries written in {time.perf_counter() - started:.1f} s"
        )

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv_ = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS]
        argv_.append("config.asgi:application")
        token_length = len(population.tokens[0])
        ours_all: list[Outcome] = []
        bare_all: list[Outcome] = []
        with server_process(
            "daphne",
            argv_,
            daphne_env(args.redis_url, prefix, pool_size, settings_module="bench._answers_settings"),
            port,
        ) as server:
            server.wait_listening()
            print(f"daphne (as the Dockerfile runs it) on {base}, settings bench._answers_settings")
            try:
                next_person = 0

                def ours(count: int) -> list[Request]:
                    nonlocal next_person
                    requests = our_requests(population, next_person, next_person + count, rng)
                    next_person += count
                    return requests

                # Warm-up: imports, URL resolvers, the pool's connections, the query plans.
                warm = [*bare_requests(WARM_UP, token_length, rng)]
                phase = measured("warm-up", server, lambda: closed_loop(base, warm, 8))
                bare_all += phase.outcomes
                warm_ours = ours(2 * WARM_UP)
                phase = measured("warm-up", server, lambda: closed_loop(base, warm_ours, 8))
                ours_all += phase.outcomes
                print(f"warm-up: {WARM_UP} bare, {2 * WARM_UP} ours; {len(phase.ok)}/{len(phase.outcomes)} ours 200")

                print(
                    f"throughput: {args.concurrency} clients on keep-alive connections, {args.per_round} answers "
                    f"per round, alternating"
                )
                rates: dict[str, list[float]] = {"bare": [], "ours": []}
                paired: list[float] = []
                for number in range(1, args.rounds + 1):
                    order = ("bare", "ours") if number % 2 else ("ours", "bare")
                    round_rates = {}
                    for name in order:
                        if name == "bare":
                            requests = bare_requests(args.per_round, token_length, rng)
                        else:
                            requests = ours(args.per_round)
                        phase = measured(name, server, lambda r=requests: closed_loop(base, r, args.concurrency))
                        (bare_all if name == "bare" else ours_all).extend(phase.outcomes)
                        rates[name].append(phase.rate)
                        round_rates[name] = phase.rate
                        label = "bare INSERT" if name == "bare" else "our answer"
                        print(f"  round {number} {label:<11} {phase.describe()}", flush=True)
                        time.sleep(0.5)
                    paired.append(round_rates["ours"] / round_rates["bare"] if round_rates["bare"] else 0.0)

                burst_requests = ours(args.people)
                moments = sorted(rng.uniform(0, args.burst_seconds) for _ in burst_requests)
                for request, at in zip(burst_requests, moments, strict=True):
                    request.at = at
                print(
                    f"burst: {args.people} people at random moments over {args.burst_seconds:g} s "
                    f"(mean {args.people / args.burst_seconds:.1f}/s), each on a new connection",
                    flush=True,
                )
                burst = measured("burst", server, lambda: open_loop(base, burst_requests))
                ours_all += burst.outcomes
                print(f"  burst            {burst.describe()}", flush=True)
                busiest = max(
                    (sum(1 for m in moments if s <= m < s + 1) for s in range(int(args.burst_seconds) + 1)), default=0
                )
                print(f"  busiest second of the plan: {busiest} answers")
            except Exception:
                print(f"--- daphne, last output:\n{server.tail()}", flush=True)
                raise
            log = server.tail(200_000)
            errors = log.count("Traceback") + log.count(" ERROR ")
            if errors:
                print(f"note: daphne logged {errors} errors; last output:\n{server.tail()}")

        result = check(population, ours_all, bare_all)
    finally:
        from django.db import connections

        connections.close_all()
        if population is not None:
            cleanup_redis(args.redis_url, prefix, population.tokens)
        with contextlib.suppress(Exception):
            drop_database(database_url)
            print("throwaway database dropped; redis keys of this run removed")

    bare_rate, ours_rate = median(rates["bare"]), median(rates["ours"])
    ratio = ours_rate / bare_rate if bare_rate else 0.0
    latencies = burst.latencies()
    burst_p95 = p95(latencies) * 1000 if latencies else float("inf")
    not_ok = len(burst.outcomes) - len(burst.ok)
    print()
    print(
        f"throughput, median round: bare INSERT {bare_rate:.1f} answers/s, our answer {ours_rate:.1f} answers/s: "
        f"{ratio:.2f}x (per round: {', '.join(f'{r:.2f}x' for r in paired)})"
    )
    print(
        f"burst: {len(burst.ok)}/{len(burst.outcomes)} HTTP 200, p50 {median(latencies or [0]) * 1000:.0f} ms, "
        f"p95 {burst_p95:.0f} ms, max {max(latencies or [0]) * 1000:.0f} ms"
    )
    print(
        f"kept (SQL): {result.acknowledged} answers got 200 in all phases; {result.kept} have their one Answer row, "
        f"their recipient updated and their {CHANNELS_PER_PERSON} deliveries answered; lost {result.lost}. "
        f"Answer rows {result.answer_rows}, recipients updated {result.recipients_updated}, deliveries answered "
        f"{result.deliveries_answered}, stored without a 200 {result.unacknowledged_kept}; "
        f"bare: {result.bare_acknowledged} got 200, {result.bare_rows} rows"
    )
    problems = []
    if not_ok:
        problems.append(f"{not_ok} of the {len(burst.outcomes)} burst answers did not get HTTP 200")
    if result.lost:
        problems.append(f"{result.lost} answers acknowledged with 200 are not (all) in the database")
    if result.bare_rows < result.bare_acknowledged:
        problems.append("the bare baseline lost rows: its figures are not valid")
    for problem in problems:
        print(f"FAIL: {problem}")
    ok = not problems and ratio >= TARGET_RATIO and burst_p95 < TARGET_P95_MS
    extra = f", not 200 {not_ok}" if not_ok else ""
    return verdict(
        f"answers: {ratio:.2f}x bare insert, p95 {burst_p95:.0f} ms, lost {result.lost}{extra} "
        f"(target >= {TARGET_RATIO:g}x, p95 < {TARGET_P95_MS:g} ms, lost 0)",
        ok,
    )


if __name__ == "__main__":
    sys.exit(main())
