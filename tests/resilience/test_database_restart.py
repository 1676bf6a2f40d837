"""Issue 10, fault 7: PostgreSQL restarts in the middle of a send.

A private PostgreSQL cluster (tests/resilience/instances.py) on a port of its own holds the whole application
database (the test database's schema, copied with pg_dump), so stopping it leaves the suite's own connections
alone. A real `celery -A config worker` and `celery beat` use it; the pushes go to the strict local push service
and the e-mails to aiosmtpd, both in this process. Each push endpoint holds its answer back a little, so a batch
of pushes is on the wire for about a second. When half the pushes are marked sent, the database is stopped
(`pg_ctl -m immediate`, as a crash or a failover would) while the next batch is in flight, kept down a few
seconds, and started again.

What it shows:

- the send finishes: everyone has exactly one delivery row per channel, marked sent, and received at least one
  push and one e-mail;
- the worker survives: the same worker process (no restart, no crash loop) logs the failure while the database
  is away and goes on sending once it is back (the scan restarts the send if its task failed);
- what a restart may send twice, exactly: only the batch that was on the wire when the database went away.
  Its pushes were accepted by the push service, but their "sent" mark could not be written; the rows stay
  claimed and queued, the scan hands them out again once the claim is stale, and they are pushed again. Every
  repeat is in that batch, and carries the same Topic (a push service replaces an undelivered message with the
  same Topic) and the same notification tag (the phone replaces the notification shown), and the same
  person's answer link: the person sees one notification. The figures are printed (run with -s)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psycopg
import pytest

from consumers.vapid import vapid_keys
from safety.models import Channel, DeliveryState
from safety.tokens import answer_token_read
from tests.conftest import SmtpServer
from tests.pushservice import LocalPushService
from tests.resilience.instances import (
    CeleryProcess,
    CeleryProcesses,
    PrivatePostgres,
    _pg_bin,
    delivery_counts,
    delivery_rows,
    dispatch_finished,
    redis_database,
    redis_flush,
    send_to_people,
)
from tests.services import require_postgres, require_redis, subprocess_env
from tests.services import test_database_url as database_url  # (not collected as a test)

pytestmark = [pytest.mark.services, pytest.mark.django_db]

PEOPLE = 2000
STALE_SECONDS = 15  # SAFETY_CLAIM_STALE_SECONDS: longer than the outage, as in production (30 s)
SCAN_SECONDS = 2  # SAFETY_SCAN_SECONDS
PUSH_BATCH = 500  # SAFETY_PUSH_BATCH
PUSH_DELAY = 0.05  # each push endpoint answers after this long: a batch of 500 at 50 at a time takes ~0.5 s+
DOWN_SECONDS = 3.0  # how long the database stays down
WITHIN = 120.0  # fault 7 sets no time; generous for a busy machine
BROKER_DB = 14

PUSH_SENT = (Channel.PUSH, DeliveryState.SENT)
LINK = re.compile(r"/answer/([^/?\s]+)/\?via=")
DATABASE_GONE = re.compile(r"OperationalError|InterfaceError|server closed the connection|connection failed")


def wait_until(what: str, ready: Callable[[], bool], deadline: float, worker: CeleryProcess) -> float:
    """Poll `ready` (which may fail while the database is down: it is asked again) until it holds."""
    while True:
        try:
            if ready():
                return time.monotonic()
        except psycopg.OperationalError:
            pass
        assert time.monotonic() < deadline, worker.failure(f"{what}: not within the time allowed")
        time.sleep(0.05)


def copy_schema(source: str, target: str) -> None:
    """The test database's schema (migrated by pytest-django) into `target`: what `manage.py migrate` would make,
    in a few seconds instead of a minute."""
    dump = subprocess.run(
        [_pg_bin("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", source],
        capture_output=True,
        check=True,
        timeout=120,
    )
    subprocess.run(
        [_pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", target],
        input=dump.stdout,
        capture_output=True,
        check=True,
        timeout=120,
    )


def in_flight(database: str, dispatch: int) -> set[int]:
    """The people whose push row is claimed and not yet marked: the batch on the wire."""
    with psycopg.connect(database, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT person_id FROM safety_delivery WHERE dispatch_id = %s AND channel = 'push' AND state = 'queued'"
            " AND claimed_at IS NOT NULL",
            [dispatch],
        ).fetchall()
    return {int(person) for (person,) in rows}


@pytest.mark.timeout(300)
def test_a_database_restart_mid_send_loses_nobody_and_repeats_only_the_batch_on_the_wire(
    smtp_server: SmtpServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_postgres()
    broker = redis_database(require_redis(), BROKER_DB)
    mail_log = logging.getLogger("mail.log")  # aiosmtpd: eight lines per message at INFO
    request.addfinalizer(partial(mail_log.setLevel, mail_log.level))
    mail_log.setLevel(logging.WARNING)

    server = PrivatePostgres()
    request.addfinalizer(server.remove)
    server.init()
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE tsunagu")
    database = server.url("tsunagu")
    copy_schema(database_url(), database)

    env = subprocess_env(
        DATABASE_URL=database,
        REDIS_URL=broker,
        CHANNEL_REDIS_URLS=broker,
        CELERY_TASK_ALWAYS_EAGER="false",
        CELERY_VISIBILITY_TIMEOUT="3600",
        SAFETY_CLAIM_STALE_SECONDS=str(STALE_SECONDS),
        SAFETY_SCAN_SECONDS=str(SCAN_SECONDS),
        SAFETY_PUSH_BATCH=str(PUSH_BATCH),
        EMAIL_URL=f"smtp://{smtp_server.host}:{smtp_server.port}",
        JMA_FEED_URLS="",
    )
    redis_flush(broker)
    try:
        with LocalPushService(vapid_public_key=vapid_keys().public) as push, CeleryProcesses(env, tmp_path) as celery:
            subscriptions = [push.new_subscription() for _ in range(PEOPLE)]
            for subscription in subscriptions:
                push.set_response(subscription["endpoint"], 201, delay=PUSH_DELAY)
            celery.beat()
            worker = celery.worker("worker")
            send = send_to_people(subscriptions, env, tmp_path)
            created = time.monotonic()

            def counts() -> Counter[tuple[str, str]]:
                return delivery_counts(database, send.dispatch)

            # Half the pushes marked sent, and the next batch on the wire: the database goes away.
            wait_until("half the pushes", lambda: counts()[PUSH_SENT] >= PEOPLE // 2, created + 120, worker)
            wait_until("a batch on the wire", lambda: bool(in_flight(database, send.dispatch)), created + 120, worker)
            batch = in_flight(database, send.dispatch)
            before = counts()
            server.stop("immediate")
            down = time.monotonic()
            time.sleep(DOWN_SECONDS)  # the batch lands at the push service; its marks cannot be written
            pushes_while_down = len(push.received)
            server.start()
            up = time.monotonic()

            resumed = wait_until("sending again", lambda: counts()[PUSH_SENT] > before[PUSH_SENT], up + WITHIN, worker)
            finished = wait_until(
                "the send finished", lambda: dispatch_finished(database, send.dispatch), up + WITHIN, worker
            )
            # The last run marks the send finished just before it returns: its log line follows.
            worker.wait_for(r"dispatch_run\[[^\]]+\] succeeded in [^:]+: [1-9]", timeout=30)
            assert worker.proc.poll() is None, worker.failure("the worker died")
            log = worker.text()
            received, rejected = list(push.received), list(push.rejected)
    finally:
        redis_flush(broker)

    # The worker noticed, and went on: one start, the failure logged while the database was away, the scan
    # restarting the send, and the send's task succeeding afterwards.
    assert log.count("@localhost ready") == 1, log[-3000:]
    assert DATABASE_GONE.search(log), log[-3000:]
    # Who carried on: the scan (the send's task failed and its rows went stale), or the task itself.
    by_scan = bool(re.search(r"safety_scan\[[^\]]+\] succeeded in [^:]+: \{'resumed': [1-9]", log))

    # Nobody missing: one row per person and channel, all sent; everyone received a push and an e-mail.
    rows = delivery_rows(database, send.incident)
    per_row = Counter((person, channel) for person, channel, _state in rows)
    assert set(per_row) == {(p, c) for p in send.people for c in (Channel.PUSH, Channel.EMAIL, Channel.INAPP)}
    assert set(per_row.values()) == {1}
    assert Counter(state for _p, _c, state in rows) == {DeliveryState.SENT: 3 * PEOPLE}
    assert not rejected, rejected[:5]
    pushed = Counter(send.by_path[p.path] for p in received)
    assert set(pushed) == set(send.people)
    mailed = Counter(a for m in smtp_server.messages for a in m.envelope_to)
    assert set(mailed) == set(send.by_address)

    # Sent twice: only people of the batch on the wire, each repeat the same notification to the phone.
    repeated = {person for person, n in pushed.items() if n > 1}
    assert repeated <= batch, f"{len(repeated - batch)} people outside the batch on the wire got two pushes"
    # The sender waits for the database to record the batch on the wire (safety.services._record_sent): a
    # restart shorter than the claim's life sends nothing twice.
    assert not repeated, f"{len(repeated)} pushes of the batch on the wire were sent twice"
    assert max(pushed.values()) <= 2
    for p in received:
        payload = json.loads(p.payload)
        assert p.headers.get("topic") == f"incident{send.incident}" and payload["tag"] == f"incident-{send.incident}"
        match = LINK.search(payload["url"])
        link = answer_token_read(match.group(1)) if match else None
        assert link is not None and (link.incident_id, link.person_id) == (send.incident, send.by_path[p.path])
    assert set(mailed.values()) == {1}, "an e-mail was sent twice"  # the database was down during the pushes

    print(
        f"\n{PEOPLE} people, push batch {PUSH_BATCH}: database stopped {down - created:.1f} s into the send with "
        f"{before[PUSH_SENT]} pushes marked sent and {len(batch)} on the wire; {pushes_while_down} pushes received "
        f"by the time it was started again ({DOWN_SECONDS:g} s later); sending again {resumed - up:.1f} s after "
        f"it was back ({'restarted by the scan' if by_scan else 'the same task went on'}), finished "
        f"{finished - up:.1f} s after. Pushes sent twice: {len(repeated)} (of {len(batch)} on the wire); e-mails "
        f"sent twice: 0."
    )
