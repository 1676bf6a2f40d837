"""Issue 10, fault 1: a Celery worker killed with SIGKILL halfway through a 10,000-person send.

Real processes: `celery -A config worker` (prefork, as production) and `celery beat` (which queues the
database-scanning `safety.tasks.safety_scan` every SAFETY_SCAN_SECONDS) against the test database, a Redis database
of this test's own as the broker, the strict local push service of tests/pushservice.py (it checks VAPID and
decrypts every push) and aiosmtpd, both in this process. Everyone has one push subscription and one e-mail
address. Two workers run, as in production. When half the pushes are marked sent, the process group of the
worker sending is killed (SIGKILL) and a replacement is started, as an orchestrator would; when half the e-mails
are marked sent, the worker that took the send over is killed in turn, and the last one finishes. The broker's
visibility timeout is an hour, so the broker never gives a dead worker's message back during the test: only the
scan can resume the send. At the end the dead workers' messages are handed back anyway (as the broker would an
hour later): they send nothing.

What the test holds the app to, counted at the receiving ends (per person, per channel) and in the delivery rows:

- nobody is missing: every person received at least one push and one e-mail, and has exactly one delivery row per
  channel, marked sent;
- the scan resumes each time within a minute of the kill, and the send finishes within a minute of the last one;
- each kill lands at the worst moment, with a batch on the wire (accepted in part by the receiving end, not yet
  marked), and repeats only people of that batch, once each: at most one claimed batch of that channel
  (SAFETY_PUSH_BATCH pushes or SAFETY_DISPATCH_BATCH e-mails). A repeated push carries the same Topic (the push
  service replaces one not yet delivered) and notification tag (the phone replaces the one shown), and the same
  person's answer link; a repeated e-mail has the same subject and the same person's link.

Exactly once at the receiving end is not something a sender can promise across SIGKILL: a message the push
service or the mail server accepted just before the worker died, and that was never marked, is indistinguishable
from one never sent. The figures are printed (run with -s)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from consumers.vapid import vapid_keys
from safety.models import Channel, DeliveryState
from safety.tokens import AnswerLink, answer_token_read
from tests.conftest import SmtpServer
from tests.pushservice import LocalPushService
from tests.resilience.instances import (
    CeleryProcess,
    CeleryProcesses,
    broker_redeliver,
    claimed_people,
    delivery_counts,
    delivery_rows,
    dispatch_finished,
    redis_database,
    redis_flush,
    send_to_people,
)
from tests.services import require_postgres, require_redis, subprocess_env
from tests.services import test_database_url as database_url  # (not collected as a test)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

PEOPLE = 10_000
STALE_SECONDS = 5  # SAFETY_CLAIM_STALE_SECONDS: the smallest the settings allow
SCAN_SECONDS = 2  # SAFETY_SCAN_SECONDS
PUSH_BATCH = 1000  # SAFETY_PUSH_BATCH, the default
MAIL_BATCH = 200  # SAFETY_DISPATCH_BATCH, the default
WITHIN = 60.0  # the promise
ON_THE_WIRE = 200  # kill once the push service has accepted this many pushes not marked yet (e-mails: a tenth)
BROKER_DB = 13  # a Redis database of this test's own (flushed before and after)

PUSH_SENT = (Channel.PUSH, DeliveryState.SENT)
MAIL_SENT = (Channel.EMAIL, DeliveryState.SENT)
DISPATCH_RUN = "safety.tasks.dispatch_run"
RESUMED = re.compile(r"safety\.tasks\.safety_scan\[[^\]]+\] succeeded in [^:]+: \{'resumed': [1-9]")
LINK = re.compile(r"/answer/([^/?\s]+)/\?via=")


def wait_until(what: str, ready: Callable[[], bool], deadline: float, worker: CeleryProcess) -> float:
    """Poll `ready` until it holds; the time it did. Fails with the worker's output past the deadline."""
    while not ready():
        assert time.monotonic() < deadline, worker.failure(f"{what}: not within the time allowed")
        time.sleep(0.05)
    return time.monotonic()


def quiet_smtp_log(request: pytest.FixtureRequest) -> None:
    mail_log = logging.getLogger("mail.log")
    request.addfinalizer(partial(mail_log.setLevel, mail_log.level))
    mail_log.setLevel(logging.WARNING)


def link_of(text: str) -> AnswerLink | None:
    match = LINK.search(text)
    return answer_token_read(match.group(1)) if match else None


@pytest.mark.timeout(420)
def test_killed_workers_leave_nobody_missing_and_the_scan_finishes_the_send_within_a_minute(
    smtp_server: SmtpServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_postgres()
    # aiosmtpd logs eight lines per message at INFO: 10,000 messages of it would slow this process (and the push
    # service in it) down and bury a failure's report.
    quiet_smtp_log(request)
    broker = redis_database(require_redis(), BROKER_DB)
    database = database_url()
    env = subprocess_env(
        REDIS_URL=broker,
        CHANNEL_REDIS_URLS=broker,
        CELERY_TASK_ALWAYS_EAGER="false",
        CELERY_VISIBILITY_TIMEOUT="3600",
        SAFETY_CLAIM_STALE_SECONDS=str(STALE_SECONDS),
        SAFETY_SCAN_SECONDS=str(SCAN_SECONDS),
        SAFETY_PUSH_BATCH=str(PUSH_BATCH),
        SAFETY_DISPATCH_BATCH=str(MAIL_BATCH),
        EMAIL_URL=f"smtp://{smtp_server.host}:{smtp_server.port}",
        JMA_FEED_URLS="",
    )
    redis_flush(broker)
    try:
        with LocalPushService(vapid_public_key=vapid_keys().public) as push, CeleryProcesses(env, tmp_path) as celery:
            subscriptions = [push.new_subscription() for _ in range(PEOPLE)]
            celery.beat()
            # Two workers, as in production: the send's task goes to one of them; the other is there to take over.
            workers = [celery.worker("worker-1", ready=False), celery.worker("worker-2", ready=False)]
            for worker in workers:
                worker.ready()
            began = time.monotonic()
            send = send_to_people(subscriptions, env, tmp_path)
            created = time.monotonic()

            def counts() -> Counter[tuple[str, str]]:
                return delivery_counts(database, send.dispatch)

            def sending() -> list[CeleryProcess]:
                return celery.running(DISPATCH_RUN)

            # 1. Once half the pushes are marked sent and the next batch is on the wire (the push service has
            # accepted some of it), kill the worker sending: the worst moment.
            wait_until("half the pushes", lambda: counts()[PUSH_SENT] >= PEOPLE // 2, created + 120, workers[0])
            wait_until(
                "a batch of pushes on the wire",
                lambda: len(push.received) >= counts()[PUSH_SENT] + ON_THE_WIRE,
                created + 120,
                workers[0],
            )
            killed_1 = sending()
            assert killed_1, "no worker is running the send"
            for worker in killed_1:
                worker.kill()
            kill_1 = time.monotonic()
            workers.append(celery.worker("worker-3", ready=False))  # a replacement, as an orchestrator would start
            time.sleep(0.5)  # what was on the wire lands
            at_kill_1, pushes_at_kill_1 = counts(), len(push.received)
            pushes_on_the_wire = claimed_people(database, send.dispatch, Channel.PUSH)
            assert at_kill_1[PUSH_SENT] < PEOPLE, at_kill_1

            # 2. The scan hands the send to a live worker once the dead one's claims are stale; once half the
            # e-mails are marked sent, kill whoever is sending (and start another).
            resumed_1 = wait_until(
                "resume after kill 1", lambda: counts()[PUSH_SENT] > at_kill_1[PUSH_SENT], kill_1 + WITHIN, workers[-1]
            )
            wait_until("half the e-mails", lambda: counts()[MAIL_SENT] >= PEOPLE // 2, kill_1 + 2 * WITHIN, workers[-1])
            wait_until(
                "a batch of e-mails on the wire",
                lambda: len(smtp_server.messages) >= counts()[MAIL_SENT] + ON_THE_WIRE // 10,
                kill_1 + 2 * WITHIN,
                workers[-1],
            )
            killed_2 = sending()
            assert killed_2, "no worker is running the send"
            for worker in killed_2:
                worker.kill()
            kill_2 = time.monotonic()
            if not [w for w in workers if w.proc.poll() is None]:
                workers.append(celery.worker("worker-4", ready=False))
            time.sleep(0.5)
            at_kill_2, mails_at_kill_2 = counts(), len(smtp_server.messages)
            mails_on_the_wire = claimed_people(database, send.dispatch, Channel.EMAIL)
            assert at_kill_2[MAIL_SENT] < PEOPLE, at_kill_2

            # 3. The send finishes within a minute of the last kill, restarted by the scan after each kill.
            last = workers[-1]
            resumed_2 = wait_until(
                "resume after kill 2", lambda: counts()[MAIL_SENT] > at_kill_2[MAIL_SENT], kill_2 + WITHIN, last
            )
            finished = wait_until(
                "the send finished", lambda: dispatch_finished(database, send.dispatch), kill_2 + WITHIN, last
            )
            resumes = sum(len(RESUMED.findall(w.text())) for w in workers)
            assert resumes >= 2, f"the scan resumed the send {resumes} times, not after each kill"
            pushes, mails = len(push.received), len(smtp_server.messages)

            # 4. An hour later the broker would give the dead workers' messages back: they send nothing. (Once the
            # last run is acknowledged: it marks the send finished just before it returns.)
            while celery.running(DISPATCH_RUN):
                assert time.monotonic() < finished + 30, "a send task is still running"
                time.sleep(0.1)
            time.sleep(1)
            given = broker_redeliver(broker)
            logs = "".join(w.text() for w in workers)
            again = [t for t, name in given.items() if name == DISPATCH_RUN and f"[{t}] succeeded" not in logs]
            assert len(again) >= 2, f"the dead workers' messages are not in the broker: {given}"
            for task_id in again:
                done = rf"{re.escape(DISPATCH_RUN)}\[{re.escape(task_id)}\] succeeded in [^:]+: (\d+)"
                match = None
                for _ in range(300):
                    match = next((m for w in workers if (m := re.search(done, w.text()))), None)
                    if match:
                        break
                    time.sleep(0.1)
                assert match is not None and match.group(1) == "0", f"redelivered {task_id}: {match}"
            time.sleep(0.5)
            assert (len(push.received), len(smtp_server.messages)) == (pushes, mails)
            received = list(push.received)
            rejected = list(push.rejected)
    finally:
        redis_flush(broker)

    # Nobody missing: one delivery row per person and channel, all sent.
    rows = delivery_rows(database, send.incident)
    per_row = Counter((person, channel) for person, channel, _state in rows)
    expected = {(p, c) for p in send.people for c in (Channel.PUSH, Channel.EMAIL, Channel.INAPP)}
    assert set(per_row) == expected and set(per_row.values()) == {1}
    assert Counter(state for _p, _c, state in rows) == {DeliveryState.SENT: 3 * PEOPLE}

    # Pushes: everyone at least once; a repeat is the same notification to the phone.
    assert not rejected, rejected[:5]
    per_person = Counter(send.by_path[p.path] for p in received)
    assert set(per_person) == set(send.people)
    push_repeats = sum(per_person.values()) - PEOPLE
    for p in received:
        payload = json.loads(p.payload)
        assert p.headers.get("topic") == f"incident{send.incident}" and payload["tag"] == f"incident-{send.incident}"
        link = link_of(payload["url"])
        assert link is not None and (link.incident_id, link.person_id) == (send.incident, send.by_path[p.path])
    repeated = {person for person, n in per_person.items() if n > 1}
    assert repeated <= pushes_on_the_wire and max(per_person.values()) <= 2, "pushes repeated beyond the batch"
    assert push_repeats <= PUSH_BATCH, f"{push_repeats} pushes repeated: more than the batch in flight"

    # E-mails: everyone at least once; a repeat only from the batch in flight, with the same subject and link.
    per_address = Counter(a for m in smtp_server.messages for a in m.envelope_to)
    assert set(per_address) == set(send.by_address)
    mail_repeats = sum(per_address.values()) - PEOPLE
    subjects: dict[str, set[str]] = {}
    for m in smtp_server.messages:
        (address,) = m.envelope_to
        link = link_of(m.get_body(preferencelist=("plain",)).get_content())
        assert link is not None and (link.incident_id, link.person_id) == (send.incident, send.by_address[address])
        subjects.setdefault(address, set()).add(str(m["subject"]))
    assert {len(s) for s in subjects.values()} == {1}
    mailed_twice = {send.by_address[a] for a, n in per_address.items() if n > 1}
    assert mailed_twice <= mails_on_the_wire and max(per_address.values()) <= 2, "e-mails repeated beyond the batch"
    assert mail_repeats <= MAIL_BATCH, f"{mail_repeats} e-mails repeated: more than the batch in flight"

    print(
        f"\n{PEOPLE} people: send made in {created - began:.1f} s."
        f"\nkill 1 at {kill_1 - created:.1f} s: {at_kill_1[PUSH_SENT]} pushes marked sent, {pushes_at_kill_1} "
        f"received, {len(pushes_on_the_wire)} claimed; resumed {resumed_1 - kill_1:.1f} s after it."
        f"\nkill 2 at {kill_2 - created:.1f} s: {at_kill_2[MAIL_SENT]} e-mails marked sent, {mails_at_kill_2} "
        f"received, {len(mails_on_the_wire)} claimed; resumed {resumed_2 - kill_2:.1f} s after it."
        f"\nfinished {finished - kill_2:.1f} s after the last kill ({finished - created:.1f} s in all; stale after "
        f"{STALE_SECONDS} s, scan every {SCAN_SECONDS} s). Repeats: {push_repeats} pushes (batch {PUSH_BATCH}), "
        f"{mail_repeats} e-mails (batch {MAIL_BATCH}); {len(again)} redelivered messages sent nothing."
    )
