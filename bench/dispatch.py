"""P3: dispatch. A send to 10,000 people, each with one web push subscription on a local push endpoint that
checks the VAPID header and decrypts every push with the subscription's key (bench/_dispatch_push.py, the
tests' strict push service in a process of its own). Three figures, measured in the same run:

a. **Delivery rows.** What `dispatch_create` does to write a send's rows -- `safety.services.delivery_rows`
   (which asks who has a subscription and who an address) and `Delivery.objects.bulk_create(rows,
   batch_size=2000)` -- against a bare `Delivery.objects.bulk_create` of the same rows, built from a list
   already known. Each round runs in a transaction with the foreign keys checked at once (`SET CONSTRAINTS ALL
   IMMEDIATE`, as the commit would), is rolled back and the table vacuumed; the two alternate, medians are
   compared. Target: at most 1.3x. The whole `dispatch_create` (recipient rows, incident, events; rolled back,
   so nothing is queued) is shown for information.
b. **Sending.** `safety.services.dispatch_run` sending all 10,000 (a batch at a time, with claims,
   per-person payload and link, outcome bookkeeping) against a raw loop: one
   `consumers.webpush.send_batch` call with all 10,000 targets (one aiohttp session, VAPID signed once), the
   per-person payloads built beforehand. Both at PUSH_CONCURRENCY. Rounds alternate; between our rounds the
   rows go back to queued. The best round of each is compared (other work on the machine only slows a round
   down, and with a few rounds a median can be pulled either way); medians and each round's pair are shown.
   Target: our pushes/s at least 0.8x the raw loop's.
c. **Time to the last push**: from calling `dispatch_create` (committed) to the push endpoint accepting the
   last push, with `dispatch_run` started right after the commit as a worker would (the broker's hand-over,
   a few ms, is not in it).

    .venv/bin/python -m bench.dispatch                    # 10,000 people, about 2 minutes
    .venv/bin/python -m bench.dispatch --people 500 --rounds 1   # checks the harness only

PostgreSQL is required: a throwaway database (tsunagu_bench_dispatch_<pid>) on the server of DATABASE_URL
(default postgres://postgres@127.0.0.1:5432/) is created, migrated and dropped. Tasks are not run: Celery uses
its in-memory broker, e-mail the in-memory backend, events the in-memory layer.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.common import drop_database, median, setup_django, verdict

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = 10_000
TARGET_ROWS = 1.3
TARGET_PUSH = 0.8
DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/"


# --- The throwaway database ---------------------------------------------------------------------------------


def throwaway_database() -> str:
    """Point DATABASE_URL at a database of this run's own (created by setup_django, dropped at exit)."""
    base = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit("bench.dispatch needs PostgreSQL: DATABASE_URL=postgres://user@host:port/any")
    name = f"tsunagu_bench_dispatch_{os.getpid()}"
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    os.environ["DATABASE_URL"] = url
    atexit.register(drop_database, url)
    return name


# --- The push endpoint process --------------------------------------------------------------------------------


class PushEndpoint:
    """bench/_dispatch_push.py in its own process: makes the subscriptions, then counts what it accepts."""

    def __init__(self, count: int, vapid_public_key: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._dispatch_push",
                "--count",
                str(count),
                "--vapid-public-key",
                vapid_public_key,
            ],
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

    def command(self, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.command("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# --- Measurements ---------------------------------------------------------------------------------------------


class Round:
    def __init__(self, label: str, seconds: float, pushes: int, stats: dict[str, Any], cpu: float, server_cpu: float):
        self.label, self.seconds, self.pushes, self.stats = label, seconds, pushes, stats
        self.cpu, self.server_cpu = cpu, server_cpu

    @property
    def rate(self) -> float:
        return self.pushes / self.seconds

    def faults(self, expected: int) -> list[str]:
        problems = []
        if self.stats["received"] != expected or self.stats["distinct"] != expected:
            problems.append(
                f"{self.label}: the endpoint accepted {self.stats['received']} pushes for "
                f"{self.stats['distinct']} subscriptions, expected {expected}"
            )
        if self.stats["rejected"]:
            problems.append(f"{self.label}: {self.stats['rejected']} pushes rejected: {self.stats['reasons']}")
        return problems

    @property
    def cpu_per_push(self) -> float:
        return self.cpu / self.pushes

    def describe(self) -> str:
        return (
            f"{self.seconds:6.2f} s  {self.rate:7.0f} pushes/s  (sender CPU {self.cpu / self.seconds:4.0%}, "
            f"{self.cpu_per_push * 1e6:4.0f} us/push; endpoint CPU {self.server_cpu / self.seconds:4.0%})"
        )


@contextmanager
def phases(totals: dict[str, float]) -> Iterator[None]:
    """Time the parts of `dispatch_run` by wrapping what it calls in safety.services (a perf_counter per call)."""
    from safety import services

    names = ("_claim", "_notification", "send_batch", "push_outcomes_record", "_mark")
    originals = {name: getattr(services, name) for name in names if hasattr(services, name)}

    def timed_call(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

        return call

    for name, fn in originals.items():
        setattr(services, name, timed_call(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(services, name, fn)


def measure(label: str, endpoint: PushEndpoint, expected: int, send: Callable[[], Any]) -> Round:
    endpoint.command("reset")
    cpu, server_cpu = own_cpu_seconds(), endpoint.cpu_seconds()
    start = time.perf_counter()
    send()
    seconds = time.perf_counter() - start
    cpu, server_cpu = own_cpu_seconds() - cpu, endpoint.cpu_seconds() - server_cpu
    return Round(label, seconds, expected, endpoint.command("stats"), cpu, server_cpu)


def vacuum_deliveries() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) safety_delivery, safety_recipient")


def profile_top(fn: Callable[[], Any], lines: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=PEOPLE)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each sender (alternating)")
    parser.add_argument("--row-rounds", type=int, default=5, help="rounds of each way of writing the rows")
    parser.add_argument("--profile", action="store_true", help="print a profile of one dispatch_run")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    name = throwaway_database()
    # Nothing leaves this process but the pushes: no broker (on-commit tasks go to Celery's in-memory one),
    # no Redis layer, no mail server.
    for variable in ("REDIS_URL", "CHANNEL_REDIS_URLS"):
        os.environ.pop(variable, None)
    os.environ.update(CELERY_TASK_ALWAYS_EAGER="false", EMAIL_URL="locmem://")
    print(f"database: {setup_django()} (throwaway, dropped at exit: {name})")

    from django.conf import settings
    from django.db import connection, transaction
    from django.utils import timezone

    from consumers.models import PushSubscription
    from consumers.vapid import vapid_keys
    from consumers.webpush import PushMessage, PushTarget, send_batch
    from directory.models import Organization, User
    from safety import services
    from safety.models import Channel, Delivery, DeliveryState, Dispatch, Incident
    from safety.selectors import target_people_ids

    people = args.people
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
        f"SAFETY_DISPATCH_BATCH={settings.SAFETY_DISPATCH_BATCH}, "
        f"SAFETY_PUSH_BATCH={getattr(settings, 'SAFETY_PUSH_BATCH', '(none)')}, "
        f"PUSH_CONCURRENCY={settings.PUSH_CONCURRENCY}"
    )

    organization = Organization.objects.create(
        slug="bench-dispatch", name="ベンチ株式会社", max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
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
            )
            for i in range(people)
        ],
        batch_size=2000,
    )
    keys = vapid_keys()
    started = time.perf_counter()
    endpoint = PushEndpoint(people, keys.public)
    try:
        print(
            f"push endpoint: {endpoint.base_url}, pid {endpoint.proc.pid}, {people} subscriptions made in "
            f"{time.perf_counter() - started:.1f} s"
        )
        person_ids = list(User.objects.filter(organization=organization).order_by("id").values_list("id", flat=True))
        PushSubscription.objects.bulk_create(
            [
                PushSubscription(
                    user_id=person_id,
                    endpoint=info["endpoint"],
                    p256dh=info["keys"]["p256dh"],
                    auth=info["keys"]["auth"],
                    vapid_public_key=keys.public,
                )
                for person_id, info in zip(person_ids, endpoint.subscriptions, strict=True)
            ],
            batch_size=2000,
        )
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) directory_user, consumers_pushsubscription")

        def incident_new(title: str) -> Incident:
            return services.incident_create(
                organization=organization, actor=None, title=title, message="大きな地震がありました。\n無事ですか。"
            )

        # --- a. Delivery rows ------------------------------------------------------------------------------
        incident = incident_new("rows")
        assert target_people_ids(incident=incident, target={"mode": "everyone"}) == person_ids
        with transaction.atomic():
            dispatch = Dispatch.objects.create(incident=incident, number=1, target={}, recipients=people)
            plan = [
                (r.person_id, r.channel, r.state)
                for r in services.delivery_rows(
                    incident=incident, dispatch=dispatch, person_ids=person_ids, now=timezone.now()
                )
            ]
            transaction.set_rollback(True)
        print(f"\na. delivery rows: {len(plan)} rows for {people} people (push + in-app; nobody has an address)")

        def rows_ours(dispatch: Dispatch) -> None:
            rows = services.delivery_rows(
                incident=incident, dispatch=dispatch, person_ids=person_ids, now=timezone.now()
            )
            Delivery.objects.bulk_create(rows, batch_size=2000)

        def rows_bare(dispatch: Dispatch) -> None:
            now = timezone.now()
            Delivery.objects.bulk_create(
                [
                    Delivery(
                        incident=incident,
                        person_id=person_id,
                        channel=channel,
                        dispatch=dispatch,
                        state=state,
                        sent_at=now if state == DeliveryState.SENT else None,
                        updated_at=now,
                    )
                    for person_id, channel, state in plan
                ]
            )

        def rows_create(_dispatch: Dispatch | None) -> None:
            services.dispatch_create(incident=incident, actor=None, target={"mode": "everyone"})

        def rows_round(write: Callable[[Any], None]) -> float:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # foreign keys checked now, as at commit
                dispatch = None
                if write is not rows_create:  # dispatch_create numbers and makes its own
                    dispatch = Dispatch.objects.create(incident=incident, number=1, target={}, recipients=people)
                start = time.perf_counter()
                write(dispatch)
                seconds = time.perf_counter() - start
                transaction.set_rollback(True)  # nothing stays, nothing is queued on commit
            vacuum_deliveries()
            return seconds

        writers = {"ours": rows_ours, "bare": rows_bare, "dispatch_create": rows_create}
        row_times: dict[str, list[float]] = {label: [] for label in writers}
        for write in writers.values():  # warm-up
            rows_round(write)
        for number in range(args.row_rounds):
            order = list(writers) if number % 2 == 0 else list(reversed(writers))
            for label in order:
                row_times[label].append(rows_round(writers[label]))
        rows_ratio = median(row_times["ours"]) / median(row_times["bare"])
        for label, title in (
            ("bare", "bare bulk_create of the same rows"),
            ("ours", "delivery_rows + bulk_create (dispatch_create's path)"),
            ("dispatch_create", "whole dispatch_create (recipients, incident, rows; info)"),
        ):
            values = row_times[label]
            print(
                f"  {title:<58} median {median(values) * 1000:7.1f} ms  "
                f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}; "
                f"{median(values) / median(row_times['bare']):.2f}x bare)"
            )
        best_rows = min(row_times["ours"]) / min(row_times["bare"])
        print(
            f"  rows ratio: {rows_ratio:.2f}x of the medians (target <= {TARGET_ROWS}x); best rounds: {best_rows:.2f}x"
        )

        # --- c. Time to the last push (before b: the send it makes is the one b sends again) ------------------
        problems: list[str] = []
        print(f"\nc. dispatch_create -> last push accepted ({people} pushes)")
        send_incident = incident_new("push")
        endpoint.command("reset")
        wall_start = time.time()
        dispatch = services.dispatch_create(incident=send_incident, actor=None, target={"mode": "everyone"})
        created = time.time()
        services.dispatch_run(dispatch_id=dispatch.id)
        finished = time.time()
        stats = endpoint.command("stats")
        problems += Round("dispatch_create + dispatch_run", finished - wall_start, people, stats, 0, 0).faults(people)
        last_push = stats["last"] - wall_start
        print(
            f"  dispatch_create committed after {created - wall_start:.2f} s; first push accepted at "
            f"{stats['first'] - wall_start:.2f} s; last push at {last_push:.2f} s; dispatch_run returned at "
            f"{finished - wall_start:.2f} s"
        )
        states = Counter(Delivery.objects.filter(dispatch=dispatch).values_list("channel", "state"))
        print(f"  delivery rows after the send: {dict(sorted(states.items()))}")
        if states != Counter({(Channel.PUSH, DeliveryState.SENT): people, (Channel.INAPP, DeliveryState.SENT): people}):
            problems.append(f"delivery rows after the send: {dict(states)}")

        # --- b. Sending: dispatch_run against one send_batch of everything -----------------------------------
        subscriptions = list(PushSubscription.objects.filter(user_id__in=person_ids).order_by("id"))
        targets = [
            PushTarget(
                id=s.id,
                endpoint=s.endpoint,
                p256dh=s.p256dh,
                auth=s.auth,
                # The payload ours sends (safety.services._notification): each person's own signed link.
                payload={
                    "title": send_incident.title,
                    "body": send_incident.message.split("\n", 1)[0][:160],
                    "url": services.answer_url(send_incident, s.user_id) + "?via=push",
                    "tag": f"incident-{send_incident.id}",
                    "kind": "safety",
                    "incident": send_incident.id,
                    "requireInteraction": True,
                },
            )
            for s in subscriptions
        ]
        message = PushMessage(payload={}, ttl=services.PUSH_TTL, urgency="high", topic=f"incident{send_incident.id}")

        def send_raw() -> None:
            outcomes = send_batch(
                targets,
                message,
                vapid_private_key=keys.private,
                vapid_subject=settings.VAPID_SUBJECT,
                concurrency=settings.PUSH_CONCURRENCY,
            )
            failed = [o for o in outcomes if not o.ok]
            assert not failed, failed[:3]

        def requeue() -> None:
            Delivery.objects.filter(dispatch=dispatch, channel=Channel.PUSH).update(
                state=DeliveryState.QUEUED, sent_at=None, claimed_at=None
            )
            Dispatch.objects.filter(id=dispatch.id).update(finished_at=None, heartbeat_at=None)
            vacuum_deliveries()

        def send_ours() -> None:
            handled = services.dispatch_run(dispatch_id=dispatch.id)
            assert handled == people, handled

        print(f"\nb. sending {people} pushes (alternating; the first raw round is a warm-up)")
        rounds: dict[str, list[Round]] = {"ours": [], "raw": []}
        parts: dict[str, float] = {}
        warm = measure("raw warm-up", endpoint, people, send_raw)
        print(f"  {'raw (warm-up)':<28} {warm.describe()}")
        problems += warm.faults(people)
        for number in range(args.rounds):
            for label in ("ours", "raw") if number % 2 == 0 else ("raw", "ours"):
                if label == "ours":
                    requeue()
                    with phases(parts):
                        result = measure("dispatch_run", endpoint, people, send_ours)
                else:
                    result = measure("send_batch", endpoint, people, send_raw)
                problems += result.faults(people)
                rounds[label].append(result)
                title = "ours: dispatch_run" if label == "ours" else "raw: one send_batch"
                print(f"  {title:<28} {result.describe()}")
        # The best round of each: other work on the machine only ever slows a round down, and a slowed raw
        # round would flatter the ratio (as a slowed round of ours would hurt it), so the medians of a few
        # rounds can swing either way. They are shown too.
        ours_rate = max(r.rate for r in rounds["ours"])
        raw_rate = max(r.rate for r in rounds["raw"])
        push_ratio = ours_rate / raw_rate
        ours_median, raw_median = median([r.rate for r in rounds["ours"]]), median([r.rate for r in rounds["raw"]])
        print(
            f"  best round: ours {ours_rate:.0f} pushes/s, raw {raw_rate:.0f} pushes/s: {push_ratio:.2f}x "
            f"(target >= {TARGET_PUSH}x); medians {ours_median:.0f} and {raw_median:.0f} pushes/s: "
            f"{ours_median / raw_median:.2f}x"
        )
        pairs = [o.rate / r.rate for o, r in zip(rounds["ours"], rounds["raw"], strict=True)]
        print(f"  ratio within each round (ours / raw, back to back): {', '.join(f'{p:.2f}' for p in pairs)}")
        ours_cpu = median([r.cpu_per_push for r in rounds["ours"]]) * 1e6
        raw_cpu = median([r.cpu_per_push for r in rounds["raw"]]) * 1e6
        print(f"  sender CPU per push: ours {ours_cpu:.0f} us, raw {raw_cpu:.0f} us ({ours_cpu / raw_cpu:.2f}x)")
        if parts:
            total = sum(r.seconds for r in rounds["ours"])
            spent = ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in parts.items())
            print(f"  where dispatch_run's time went (all its rounds): {spent}")
        busy = [r for r in rounds["ours"] + rounds["raw"] if r.server_cpu / r.seconds > 0.9]
        if busy:
            print(f"note: the push endpoint was over 90% busy in {len(busy)} rounds; it may be the limit")
        starved = [r for r in rounds["ours"] + rounds["raw"] if r.cpu / r.seconds < 0.6]
        if starved:
            print(
                f"note: in {len(starved)} rounds the sender used under 60% of a core: other work on the machine "
                f"(load average {os.getloadavg()[0]:.1f}) held it back, and the figures are noisy"
            )

        if args.profile:
            requeue()
            endpoint.command("reset")
            print("\nprofile of one dispatch_run (cumulative):")
            print(profile_top(send_ours))

        print("\nsummary:")
        ours_ms, bare_ms = median(row_times["ours"]) * 1000, median(row_times["bare"]) * 1000
        print(f"  a. rows: ours {ours_ms:.0f} ms vs bare {bare_ms:.0f} ms = {rows_ratio:.2f}x")
        print(f"  b. push (best rounds): ours {ours_rate:.0f}/s vs raw {raw_rate:.0f}/s = {push_ratio:.2f}x")
        print(f"  c. dispatch_create -> last push accepted: {last_push:.2f} s for {people} pushes")
        print(f"  (the benchmark took {time.perf_counter() - began:.0f} s)")
        for problem in problems:
            print(f"FAIL: {problem}")
    finally:
        endpoint.stop()

    ok = rows_ratio <= TARGET_ROWS and push_ratio >= TARGET_PUSH and not problems
    return verdict(
        f"dispatch: rows {rows_ratio:.2f}x, push {push_ratio:.2f}x, last push {last_push:.1f} s "
        f"(target rows <= {TARGET_ROWS}x, push >= {TARGET_PUSH}x)",
        ok,
    )


if __name__ == "__main__":
    sys.exit(main())
