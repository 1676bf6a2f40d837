"""P7: JMA latency. With the hold delay at 0, the time from a JMA document arriving to the first push leaving must
be under 1 s.

Measured as deployed, each part in a process of its own:

- **daphne** serving the project (`config.asgi:application`, the project's settings, database pool, Redis cache and
  channel layer), which takes the document through the JMA push endpoint `POST /api/jma/documents/?url=…` with
  `Authorization: Bearer <JMA_INGEST_TOKEN>` (safety/api.py) and, after the document commits, queues
  `safety.tasks.jma_decide` (safety/jma/ingest.py);
- a **Celery worker**, `celery -A config worker` with the Redis broker (prefork, one child per core as the
  compose file runs it; without gossip, mingle and heartbeat, as tests/safety/test_dispatch_resume.py starts it),
  which decides the document for the organisation, executes the decision at once (hold 0: the incident, its
  recipients and delivery rows), and, in the send task `safety.tasks.dispatch_run` queued on that commit, sends;
- a **local push endpoint** (bench/_jma_latency_push.py: the tests' strict push service, which checks every
  push's VAPID JWT and decrypts it with the subscription's key) that notes when each push arrived.

The organisation is made by `directory.services.organization_create`, so it has the preset rule every new
organisation starts with (震度5強 or more in any prefecture reaches the people based there; hold 0). `--people`
people (default 1,000) are based in 石川県 (REGION_CODE 17), each with one push subscription on the endpoint.

Each round POSTs the real Noto 2024 VXSE51 (震度6強 in 石川県; ../shared/fixtures/jma) under a new document URL,
with a new EventID and with its times set to now (the bytes edited: automatic dispatch ignores reports issued more
than JMA_DISPATCH_MAX_AGE_MINUTES before they arrive), so it is a new live quake, decision and incident. The
figure is the time from the POST being sent to the first push arriving at the endpoint; the time to the last push is
shown too.
`--warm-up` rounds (default 2: one per worker child) come first and are shown apart: they pay the imports of
processes that have not yet served, decided or sent anything.

Where the time goes, per round, from the POST being sent: the POST answered; the document stored
(`JmaDocument.received_at`); the worker receiving `jma_decide` (its log); the decision stored
(`JmaDecision.decided_at`); the send created (`Dispatch.created_at`); the decision executed (`executed_at`, just
before the commit that queues the send); the worker receiving `dispatch_run` (its log); the first and the last push
arriving; the send finished (`Dispatch.finished_at`). One machine, one clock.

Baseline, in this process, before every round: one bare push (`consumers.webpush.send_batch` with one target: a
new HTTP session, the VAPID signature, the encryption) to the same endpoint, from the call to its arrival. The
ratio first push / bare push is printed as context; the verdict is the absolute target: median first push < 1 s.

    .venv/bin/python -m bench.jma_latency                         # 1,000 people, 7 rounds, under a minute
    .venv/bin/python -m bench.jma_latency --people 100 --rounds 2  # checks the harness only
    .venv/bin/python -m bench.jma_latency --trace                  # + the worker's parts (bench/_jma_latency_trace.py)

PostgreSQL is required: a throwaway database (tsunagu_bench_jma_<pid>) on the server of DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/) is created, migrated and dropped. Redis: --redis-url, by default database 15
of the local server: the broker (a queue of this run's own, bench/_jma_latency_settings.py), the cache and the
channel layer under this run's own prefixes; this run's keys are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

from bench.answers import machine_ticks
from bench.common import daphne_env, drop_database, median, p95, setup_django, verdict

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = (
    ROOT.parent / "shared/fixtures/jma/earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
)
FIXTURE_EVENT_ID = b"<EventID>20240101161010</EventID>"
FIXTURE_TIMES = (  # issued now, as a live report is (automatic dispatch ignores reports issued long before arrival)
    (b"<DateTime>2024-01-01T07:13:41Z</DateTime>", "<DateTime>{utc}</DateTime>"),
    (b"<ReportDateTime>2024-01-01T16:13:00+09:00</ReportDateTime>", "<ReportDateTime>{jst}</ReportDateTime>"),
    (b"<TargetDateTime>2024-01-01T16:10:00+09:00</TargetDateTime>", "<TargetDateTime>{target}</TargetDateTime>"),
)
PEOPLE = 1000
ROUNDS = 7
WARM_UP = 2
TARGET_SECONDS = 1.0
REGION = "17"  # 石川県
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tsunagu_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
SETTINGS_MODULE = "bench._jma_latency_settings"
SETTLE_SECONDS = 0.5  # between rounds: the worker and the database idle again


# --- Processes --------------------------------------------------------------------------------------------------


class PushEndpoint:
    """bench/_jma_latency_push.py in its own process: makes the subscriptions, then notes what arrives."""

    def __init__(self, count: int, vapid_public_key: str) -> None:
        argv = [sys.executable, "-m", "bench._jma_latency_push", "--count", str(count)]
        self.proc = subprocess.Popen(
            [*argv, "--vapid-public-key", vapid_public_key],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.subscriptions: list[dict[str, Any]] = []
        for line in self.proc.stdout:
            if line.startswith("ready "):
                self.base_url = line.split()[1]
                break
            self.subscriptions.append(json.loads(line))
        else:
            raise RuntimeError(f"the push endpoint exited with {self.proc.wait()}")

    def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.command("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Worker:
    """`celery -A config worker` in its own process group (its prefork children stop with it). Its output goes to
    a temporary file, read back for its readiness and its task log; nothing can fill a pipe and block it."""

    LINE = re.compile(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): \w+/[\w-]+\] Task ([\w.]+)\[[\w-]+\] (received|succeeded in "
        r"([\d.e-]+)s)",
        re.M,
    )

    def __init__(self, node: str, env: dict[str, str], output: IO[bytes]) -> None:
        self.node, self.output = node, output
        argv = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "-l", "info", "-n", node]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.offset = 0

    def text(self, start: int = 0) -> str:
        self.output.flush()
        self.output.seek(start)
        return self.output.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(rf"{re.escape(self.node)} ready", self.text()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready within {timeout:g} s:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        self.offset = len(self.text().encode())

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{self.text()[-3000:]}")

    def new_output(self) -> str:
        """What the worker wrote since the last call."""
        self.output.flush()
        self.output.seek(self.offset)
        data = self.output.read()
        self.offset += len(data)
        return data.decode(errors="replace")

    @classmethod
    def events(cls, text: str) -> list[tuple[str, str, float, float]]:
        """(task, "received" | "succeeded", wall-clock time, run seconds) in a part of the log. The log's times
        are local time of the worker's TIME_ZONE, which Django set in this process too."""
        out = []
        for match in cls.LINE.finditer(text):
            stamp, millis, task, what, ran = match.groups()
            at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
            out.append((task, what.split()[0], at, float(ran) if ran else 0.0))
        return out

    def errors(self) -> list[str]:
        text = self.text()
        return [line for line in text.splitlines() if " ERROR/" in line or "Traceback" in line]

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the group, as `docker stop` does), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@contextmanager
def worker_process(node: str, env: dict[str, str]) -> Iterator[Worker]:
    with tempfile.TemporaryFile() as output:
        worker = Worker(node, env, output)
        try:
            yield worker
        finally:
            worker.stop()


# --- Data ---------------------------------------------------------------------------------------------------


def throwaway_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def population_create(slug: str, people: int, endpoint: PushEndpoint, vapid_public_key: str) -> Any:
    """The organisation (with its preset rule) and `people` people based in 石川県, each with a push subscription
    on the endpoint. Returns the organisation's preset rule."""
    from django.db import connection

    from consumers.models import PushSubscription
    from directory.models import Organization, User
    from directory.services import organization_create
    from safety.models import DispatchRule

    organization = organization_create(slug=slug, name="ベンチ株式会社", admin_email="admin@example.co.jp").organization
    Organization.objects.filter(id=organization.id).update(
        max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
    )
    User.objects.bulk_create(
        [
            User(
                organization=organization,
                login_id=f"p{i:05d}@example.co.jp",
                password="!",  # noqa: S106 -- unusable: nobody signs in
                last_name=f"姓{i}",
                first_name=f"名{i}",
                anpi_login_id=f"anpi{i:05d}",
                region_code=REGION,
                language="en" if i % 10 == 0 else "ja",
            )
            for i in range(people)
        ],
        batch_size=2000,
    )
    person_ids = list(
        User.objects.filter(organization=organization, anpi_login_id__isnull=False)
        .order_by("id")
        .values_list("id", flat=True)
    )
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
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) directory_user, consumers_pushsubscription")
    rule = DispatchRule.objects.get(organization=organization, is_preset=True)
    return rule


def document_bytes(raw: bytes, event_id: str) -> bytes:
    """The fixture as a new quake reported now: its one EventID replaced, and its times (the control's, the
    report's and the quake's) set to now as a live report's are."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    now = datetime.now(UTC).replace(microsecond=0)
    jst = now.astimezone(ZoneInfo("Asia/Tokyo"))
    times = {
        "utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "jst": jst.isoformat(),
        "target": (jst - timedelta(minutes=3)).isoformat(),
    }
    for old, new in ((FIXTURE_EVENT_ID, "<EventID>{event_id}</EventID>"), *FIXTURE_TIMES):
        assert raw.count(old) == 1, f"the fixture's {old!r} is not where it was"
        raw = raw.replace(old, new.format(event_id=event_id, **times).encode())
    return raw


def pushes_wait(endpoint: PushEndpoint, people: int, url: str, seconds: float) -> dict[str, Any]:
    """Wait for the pushes of a round (the endpoint answers when all arrived), giving up early once the document's
    decision is stored and is not a dispatch."""
    from safety.models import JmaDecision

    deadline = time.monotonic() + seconds
    while True:
        stats = endpoint.command(f"wait {people} 0.5")
        if stats["received"] >= people or time.monotonic() > deadline:
            return stats
        decision = JmaDecision.objects.filter(document__url=url).values_list("decision", flat=True).first()
        if decision is not None and decision != "dispatch":
            return stats


# --- Measuring ----------------------------------------------------------------------------------------------


STEPS = (
    ("answered", "POST answered"),
    ("stored", "document stored"),
    ("picked", "worker got jma_decide"),
    ("decided", "decision stored"),
    ("created", "send created"),
    ("executed", "decision executed"),
    ("queued", "worker got dispatch_run"),
    ("first", "first push"),
    ("last", "last push"),
    ("finished", "send finished"),
)


@dataclass
class Round:
    number: int
    warm_up: bool
    bare_push: float  # the baseline: one bare push, call to arrival
    status: int  # of the POST
    steps: dict[str, float] = field(default_factory=dict)  # seconds after the POST was sent
    decide_run: float = float("nan")  # jma_decide's run time in the worker (its log)
    send_run: float = float("nan")
    problems: list[str] = field(default_factory=list)
    trace: list[tuple[str, float, float, str]] = field(default_factory=list)  # --trace: (what, start, end, pid)

    def line(self) -> str:
        cells = " ".join(f"{self.steps.get(key, float('nan')):>{max(6, len(key))}.3f}" for key, _ in STEPS)
        label = f"warm-up {self.number}" if self.warm_up else f"round {self.number}"
        return f"  {label:<10} {self.bare_push * 1000:6.1f} {cells}"


TRACE_LINE = re.compile(r"bench-trace (\d+) (\S+) ([\d.]+) ([\d.]+)$", re.M)


def trace_lines(result: Round) -> list[str]:
    """--trace: the worker's parts of one round, in the order they started, in seconds after the POST was sent."""
    pids = {pid: f"child {n}" for n, pid in enumerate(dict.fromkeys(p for *_x, p in result.trace), start=1)}
    return [
        f"      {start:7.3f} .. {end:7.3f}  ({(end - start) * 1000:6.1f} ms)  {pids[pid]}  {what}"
        for what, start, end, pid in sorted(result.trace, key=lambda item: item[1])
    ]


def header() -> str:
    return f"  {'':<10} {'bare':>6} " + " ".join(f"{key:>{max(6, len(key))}}" for key, _ in STEPS)


def bare_push(endpoint: PushEndpoint, target: Any, message: Any, private_key: str, subject: str) -> float:
    """One push from this process to the spare subscription: seconds from the call to its arrival."""
    from consumers.webpush import send_batch

    endpoint.command("reset")
    started = time.time()
    outcomes = send_batch([target], message, vapid_private_key=private_key, vapid_subject=subject)
    stats = endpoint.command("stats")
    endpoint.command("reset")
    if not outcomes[0].ok or stats["received"] != 1:
        raise RuntimeError(f"the bare push failed: {outcomes[0]} {stats}")
    return float(stats["first"]) - started


def post_document(port: int, token: str, url: str, raw: bytes) -> tuple[float, float, int, bytes]:
    """POST the document as a JMA relay would (a new connection). Returns (sent, answered, status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        sent = time.time()
        connection.request(
            "POST",
            f"/api/jma/documents/?url={quote(url, safe='')}",
            body=raw,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"},
        )
        response = connection.getresponse()
        body = response.read()
        return sent, time.time(), response.status, body
    finally:
        connection.close()


def round_collect(
    result: Round, *, url: str, sent: float, endpoint_stats: dict[str, Any], people: int, worker: Worker
) -> None:
    """Fill a round's steps from the database, the endpoint and the worker's log, and check what was sent."""
    from safety.models import Delivery, DeliveryState, Dispatch, JmaDecision, JmaDocument

    def at(value: Any) -> float:
        return value.timestamp() - sent if value is not None else float("nan")

    document = JmaDocument.objects.filter(url=url).first()
    if document is None:
        result.problems.append("the document was not stored")
        return
    result.steps["stored"] = at(document.received_at)
    decision = JmaDecision.objects.filter(document=document).first()
    if decision is None:
        result.problems.append("no decision was stored")
        return
    result.steps["decided"] = at(decision.decided_at)
    result.steps["executed"] = at(decision.executed_at)
    if decision.decision != "dispatch" or len(decision.new_person_ids) != people:
        result.problems.append(
            f"decision {decision.decision!r} ({decision.reason}) for {len(decision.new_person_ids)} people, "
            f"expected dispatch for {people}"
        )
    dispatch = Dispatch.objects.filter(incident_id__in=decision.incident_ids).order_by("id").first()
    if dispatch is None:
        result.problems.append("no send was created")
        return
    # The send ends after its last push is marked: wait for it, so the next round starts on an idle worker.
    deadline = time.monotonic() + 30
    while dispatch.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
        dispatch.refresh_from_db(fields=["finished_at"])
    result.steps["created"] = at(dispatch.created_at)
    result.steps["finished"] = at(dispatch.finished_at)
    if endpoint_stats["received"]:
        result.steps["first"] = endpoint_stats["first"] - sent
        result.steps["last"] = endpoint_stats["last"] - sent
    if endpoint_stats["received"] != people or endpoint_stats["distinct"] != people:
        result.problems.append(
            f"the endpoint accepted {endpoint_stats['received']} pushes for {endpoint_stats['distinct']} "
            f"subscriptions, expected {people}"
        )
    if endpoint_stats["rejected"]:
        result.problems.append(f"{endpoint_stats['rejected']} pushes rejected: {endpoint_stats['reasons']}")
    if endpoint_stats["incidents"] != [dispatch.incident_id]:
        result.problems.append(f"the pushes named incidents {endpoint_stats['incidents']}, not {dispatch.incident_id}")
    sent_rows = Delivery.objects.filter(dispatch=dispatch, channel="push", state=DeliveryState.SENT).count()
    if sent_rows != people:
        result.problems.append(f"{sent_rows} push deliveries marked sent, expected {people}")
    text = worker.new_output()
    result.trace = [
        (what, float(start) - sent, float(end) - sent, pid) for pid, what, start, end in TRACE_LINE.findall(text)
    ]
    for task, what, when, ran in worker.events(text):
        name = task.rsplit(".", 1)[-1]
        if what == "received" and name == "jma_decide" and "picked" not in result.steps:
            result.steps["picked"] = when - sent
        elif what == "received" and name == "dispatch_run" and "queued" not in result.steps:
            result.steps["queued"] = when - sent
        elif what == "succeeded" and name == "jma_decide":
            result.decide_run = ran
        elif what == "succeeded" and name == "dispatch_run":
            result.send_run = ran


def redis_cleanup(redis_url: str, queue: str, cache_prefix: str, layer_prefix: str) -> None:
    """Remove this run's keys: its task queue, its cache keys and its channel-layer keys."""
    import redis

    from bench.chat_fanout import flush_layer

    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            if not client.exists("_kombu.binding.celery.pidbox"):  # no other worker on this database: the
                client.zrem("_kombu.binding_deadlines", "celery.pidbox")  # remote-control binding's expiry goes too
            for key in client.scan_iter(match=f"{cache_prefix}:*", count=1000):
                client.delete(key)
        finally:
            client.close()
    flush_layer(redis_url, layer_prefix)


# --- Main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=PEOPLE, help="people based in 石川県 with a subscription")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="measured rounds (a new quake each)")
    parser.add_argument("--warm-up", type=int, default=WARM_UP, help="rounds before the measured ones")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--trace", action="store_true", help="the worker prints the times of its tasks and their parts (wrapped)"
    )
    args = parser.parse_args(argv)
    if args.people < 1 or args.rounds < 1 or args.warm_up < 0:
        parser.error("--people and --rounds must be at least 1, --warm-up at least 0")
    target = f"target < {TARGET_SECONDS:g} s"
    if not FIXTURE.is_file():
        print(f"the fixture is missing: {FIXTURE}")
        return verdict(f"jma_latency: not run ({target})", False)
    base_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not base_url.startswith(("postgres://", "postgresql://", "pgsql://")):
        print("jma_latency needs PostgreSQL (DATABASE_URL): the benchmark creates a throwaway database on that server")
        return verdict(f"jma_latency: not run ({target})", False)

    began = time.perf_counter()
    tag = f"{os.getpid()}"
    database_url = throwaway_url(base_url, f"tsunagu_bench_jma_{tag}")
    layer_prefix, cache_prefix, queue = f"benchjma{tag}", f"benchjma{tag}-cache", f"bench-jma-latency-{tag}"
    token = secrets.token_urlsafe(32)
    pool_size = os.environ.get("DB_POOL_MAX_SIZE")  # setup_django sets 0 for itself; the servers pool as deployed
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        CHANNEL_REDIS_PREFIX=layer_prefix,
        CACHE_KEY_PREFIX=cache_prefix,
        BENCH_CELERY_QUEUE=queue,
        JMA_INGEST_TOKEN=token,
        JMA_FEED_URLS="",  # nothing polls the real feed
        EMAIL_URL="locmem://",  # nobody here has an address; nothing may leave the machine
    )
    if args.trace:
        os.environ["BENCH_JMA_TRACE"] = "1"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # shared with daphne and the worker
    raw = FIXTURE.read_bytes()
    rounds: list[Round] = []
    problems: list[str] = []
    machine_busy = float("nan")
    endpoint: PushEndpoint | None = None
    try:
        started = time.perf_counter()
        print(f"database: {setup_django()} (throwaway, created and migrated in {time.perf_counter() - started:.1f} s)")
        from django.conf import settings

        from consumers.vapid import vapid_keys
        from consumers.webpush import PushMessage, PushTarget

        print(f"redis: {args.redis_url} (task queue {queue}, cache prefix {cache_prefix}, layer prefix {layer_prefix})")
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"machine: {os.cpu_count()} cores, load average {load}; daphne, the worker, PostgreSQL, Redis, the push "
            "endpoint and this process share them"
        )
        keys = vapid_keys()
        started = time.perf_counter()
        endpoint = PushEndpoint(args.people + 1, keys.public)
        rule = population_create(f"bench-jma-{tag}", args.people, endpoint, keys.public)
        print(
            f"{args.people:,} people based in 石川県 ({REGION}) with a push subscription each, made in "
            f"{time.perf_counter() - started:.1f} s; push endpoint {endpoint.base_url} (pid {endpoint.proc.pid})"
        )
        print(
            f"rule: {rule.name!r} (preset {rule.is_preset}, hazard {rule.hazard}, >= {rule.min_intensity}, "
            f"prefectures {rule.prefectures or 'any'}, {rule.target_mode}, hold {rule.hold_minutes} min)"
        )
        if rule.hold_minutes != 0 or not rule.enabled:
            problems.append(f"the preset rule holds {rule.hold_minutes} min (enabled {rule.enabled}); P7 needs 0")
        spare = endpoint.subscriptions[args.people]
        spare_target = PushTarget(
            id=0,
            endpoint=spare["endpoint"],
            p256dh=spare["keys"]["p256dh"],
            auth=spare["keys"]["auth"],
            payload={"title": "災害発生：地震（震度6強）石川県", "body": "bare push", "url": "/x/?via=push"},
        )
        bare_message = PushMessage(payload={}, ttl=3600, urgency="high", topic="bare")

        def bare() -> float:
            return bare_push(endpoint, spare_target, bare_message, keys.private, settings.VAPID_SUBJECT)

        bare()  # imports, first signature

        from bench.chat_fanout import DAPHNE_ARGS, free_port, server_process

        env = daphne_env(args.redis_url, layer_prefix, pool_size, settings_module=SETTINGS_MODULE)
        port = free_port()
        daphne_argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS]
        daphne_argv.append("config.asgi:application")
        node = f"jmalatency-{tag}@localhost"
        with (
            server_process("daphne", daphne_argv, env, port) as server,
            worker_process(node, env) as worker,
        ):
            started = time.perf_counter()
            server.wait_listening()
            worker.wait_ready()
            concurrency = re.search(r"concurrency:\s*(\S+ \(\w+\))", worker.text())
            print(
                f"daphne on 127.0.0.1:{port} and `celery -A config worker` ({node}, concurrency "
                f"{concurrency.group(1) if concurrency else '?'}) ready in {time.perf_counter() - started:.1f} s; "
                f"settings {SETTINGS_MODULE}, SAFETY_PUSH_BATCH={settings.SAFETY_PUSH_BATCH}, "
                f"PUSH_CONCURRENCY={settings.PUSH_CONCURRENCY}"
            )
            print(
                "\nseconds after the POST was sent (bare: the baseline push before the round, ms); "
                + "; ".join(f"{key} = {title}" for key, title in STEPS)
            )
            print(header())
            busy_before = machine_ticks()
            try:
                for number in range(1, args.warm_up + args.rounds + 1):
                    warm_up = number <= args.warm_up
                    server.check()
                    worker.check()
                    baseline = bare()
                    event_id = f"9{int(tag) % 10**7:07d}{number:06d}"
                    url = f"https://bench.invalid/jma-latency/{tag}/{number}/{event_id}.xml"
                    document = document_bytes(raw, event_id)
                    endpoint.command("reset")
                    sent, answered, status, body = post_document(port, token, url, document)
                    result = Round(number if warm_up else number - args.warm_up, warm_up, baseline, status)
                    result.steps["answered"] = answered - sent
                    if status != 201:
                        result.problems.append(f"the POST answered {status}: {body[:300]!r}")
                        stats = endpoint.command("stats")
                    else:
                        stats = pushes_wait(endpoint, args.people, url, 30 + args.people / 50)
                    round_collect(result, url=url, sent=sent, endpoint_stats=stats, people=args.people, worker=worker)
                    rounds.append(result)
                    print(result.line(), flush=True)
                    for line in trace_lines(result) if args.trace else []:
                        print(line, flush=True)
                    for problem in result.problems:
                        print(f"    problem: {problem}")
                        problems.append(f"round {number}: {problem}")
                    time.sleep(SETTLE_SECONDS)
            except Exception:
                print(f"--- daphne, last output:\n{server.tail()}\n--- worker, last output:\n{worker.text()[-3000:]}")
                raise
            busy_after = machine_ticks()
            if busy_after[1] > busy_before[1]:
                machine_busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
            errors = worker.errors()
            if errors:
                print(f"note: the worker logged {len(errors)} errors, e.g. {errors[0][:300]}")
            log = server.tail(200_000)
            if log.count("Traceback"):
                print(f"note: daphne logged {log.count('Traceback')} tracebacks; last output:\n{server.tail()}")
    finally:
        if endpoint is not None:
            endpoint.stop()
        from django.db import connections

        connections.close_all()
        redis_cleanup(args.redis_url, queue, cache_prefix, layer_prefix)
        with contextlib.suppress(Exception):
            drop_database(database_url)
            print("throwaway database dropped; redis keys of this run removed")

    measured = [r for r in rounds if not r.warm_up]
    firsts = [r.steps.get("first", float("inf")) for r in measured]
    lasts = [r.steps.get("last", float("inf")) for r in measured]
    bares = [r.bare_push for r in measured]
    print("\nmedian of the measured rounds, seconds after the POST was sent:")
    medians = {key: median([r.steps[key] for r in measured if key in r.steps] or [float("nan")]) for key, _ in STEPS}
    previous = 0.0
    for key, title in sorted(STEPS, key=lambda step: medians[step[0]]):  # in time order (the POST's answer races)
        print(f"  {title:<26} {medians[key]:7.3f}  (+{(medians[key] - previous) * 1000:6.1f} ms)")
        previous = medians[key]
    decide_runs = [r.decide_run for r in measured if r.decide_run == r.decide_run]
    send_runs = [r.send_run for r in measured if r.send_run == r.send_run]
    if decide_runs and send_runs:
        print(
            f"  worker run times (its log): jma_decide {median(decide_runs) * 1000:.0f} ms, "
            f"dispatch_run {median(send_runs) * 1000:.0f} ms ({args.people} pushes)"
        )
    for r in rounds:
        if r.warm_up:
            print(f"  warm-up round {r.number}: first push {r.steps.get('first', float('nan')):.3f} s (not counted)")
    first_median, first_p95 = median(firsts), p95(firsts)
    last_median = median(lasts)
    bare_median = median(bares)
    print(
        f"\nbaseline: one bare push from this process (new session, VAPID, encryption) {bare_median * 1000:.1f} ms "
        f"median; the JMA POST alone answered in {median([r.steps['answered'] for r in measured]) * 1000:.0f} ms "
        f"median"
    )
    print(
        f"first push {first_median:.3f} s median, p95 {first_p95:.3f} s (max {max(firsts):.3f} s) = "
        f"{first_median / bare_median:.0f}x one bare push; last push ({args.people:,}) {last_median:.3f} s median"
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"(the benchmark took {time.perf_counter() - began:.0f} s; all cores were {machine_busy:.0%} busy during "
        f"the rounds, this run included; load average now {load}: other work slows every step, as the bare push shows)"
    )
    for problem in problems:
        print(f"FAIL: {problem}")
    ok = not problems and first_median < TARGET_SECONDS
    return verdict(
        f"jma_latency: first push {first_median:.2f} s median, p95 {first_p95:.2f} s, last push "
        f"{last_median:.2f} s for {args.people:,} people (target < {TARGET_SECONDS:g} s median first push)",
        ok,
    )


if __name__ == "__main__":
    sys.exit(main())
