"""A send survives its worker being killed: a real `celery -A config worker` is killed with SIGKILL halfway
through the pushes, a second worker takes over, and the send is resumed by the database-scanning beat task
(`safety.tasks.safety_scan`, run by a real `celery beat`) -- not by the broker redelivering the message, which
would take the visibility timeout (an hour here).

The cast: the test database (PostgreSQL; the worker gets its name through `subprocess_env()`), a Redis database
of its own as the broker (emptied before and after), the local push service of tests/pushservice.py in this
process, each endpoint holding its answer back so a send of 1,200 people takes seconds, and aiosmtpd for the
people with an e-mail address.

What a crash may cost is bounded: the batch in flight when the worker died was sent (the push service accepted
it) but never marked, so it is sent again. Those duplicates are at most one batch (SAFETY_DISPATCH_BATCH) and
carry the same notification tag and Topic, so the phone shows one notification. The kill is timed for the worst
moment -- just after a batch's pushes landed, before the worker marks them -- so a run usually sees exactly one
batch repeated. Everything else is exactly once, and every person ends with exactly one delivery row per channel,
all sent. Run with -s to see the figures."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from directory.models import Organization, User
from safety.models import Channel, Delivery, DeliveryState, Dispatch, Incident, IncidentStatus
from safety.tokens import AnswerLink, answer_token_read
from tests.conftest import SmtpServer
from tests.pushservice import LocalPushService
from tests.resilience.instances import CeleryProcess, redis_database, redis_flush
from tests.services import require_postgres, require_redis, subprocess_env

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

PEOPLE = 1200
MAIL_EVERY = 3  # every third person also has an e-mail address
BATCH = 50  # SAFETY_DISPATCH_BATCH of the workers
STALE_SECONDS = 5  # SAFETY_CLAIM_STALE_SECONDS: the smallest the settings allow
SCAN_SECONDS = 2  # SAFETY_SCAN_SECONDS: how often beat queues the scan
PUSH_DELAY = 0.12  # each push endpoint answers after this long: 24 batches of 50 take a few seconds
KILL_AT = 0.35  # kill the first worker once this share of people has been pushed to
RESUME_WITHIN = 60.0  # the promise: resumed within a minute
# The broker: a Redis database of this test's own (flushed), so no other run's tasks reach these workers.
BROKER_DB = 12


@contextmanager
def running(label: str, args: list[str], env: dict[str, str]) -> Iterator[CeleryProcess]:
    """`celery -A config <args>`, killed (with its children) on the way out."""
    with tempfile.TemporaryDirectory() as directory:
        process = CeleryProcess(label, args, env, Path(directory) / f"{label}.log")
        try:
            yield process
        finally:
            process.kill()


def worker(stack: ExitStack, label: str, env: dict[str, str]) -> CeleryProcess:
    # Prefork with one child, as production runs it; no gossip, mingle or heartbeat, which only add broadcasts.
    node = f"{label}-{os.getpid()}@localhost"
    options = ["-l", "info", "-c", "1", "-P", "prefork", "-n", node]
    options += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    service = stack.enter_context(running(label, ["worker", *options], env))
    service.wait_for(rf"{re.escape(node)} ready", timeout=60)
    return service


@contextmanager
def tasks_sent_to(url: str) -> Iterator[None]:
    """Tasks queued by this process (the test settings run them eagerly) go to the real broker at `url`,
    as from a web process: `dispatch_create`'s on-commit `dispatch_run.delay()` is what starts the send."""
    from config.celery import app

    connection = app.connection_for_write(url)
    producer = connection.Producer()
    conf: Any = app.conf
    eager = conf.task_always_eager
    conf.task_always_eager = False
    # The app's own producer pool is bound to the settings' broker: hand it this producer instead.
    vars(app)["producer_or_acquire"] = lambda given=None: nullcontext(given or producer)
    try:
        yield
    finally:
        del vars(app)["producer_or_acquire"]
        conf.task_always_eager = eager
        connection.release()


def people_make(organization: Organization, count: int) -> list[User]:
    User.objects.bulk_create(
        [
            User(
                organization=organization,
                login_id=f"p{i:05d}",
                password="!",  # unusable: nobody signs in here
                last_name=f"姓{i}",
                first_name=f"名{i}",
                email=f"p{i:05d}@example.com" if i % MAIL_EVERY == 0 else "",
                anpi_login_id=f"anpi{i:05d}",
            )
            for i in range(count)
        ],
        batch_size=1000,
    )
    return list(User.objects.filter(organization=organization).order_by("id"))


def counts(dispatch: Dispatch) -> Counter[tuple[str, str]]:
    rows = Delivery.objects.filter(dispatch=dispatch).values_list("channel", "state")
    return Counter(rows)


@pytest.mark.timeout(240)
def test_killed_worker_leaves_one_delivery_per_person_and_channel_once_the_scan_resumes(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    require_postgres()
    broker = redis_database(require_redis(), BROKER_DB)
    redis_flush(broker)

    from consumers.models import PushSubscription
    from consumers.vapid import vapid_keys
    from safety import services

    organization = Organization.objects.create(slug="acme", name="ACME", max_safety_users=10**6)
    people = people_make(organization, PEOPLE)
    with_mail = {p.id for p in people if p.email}
    env = subprocess_env(
        REDIS_URL=broker,
        CHANNEL_REDIS_URLS=broker,
        CELERY_TASK_ALWAYS_EAGER="false",
        CELERY_VISIBILITY_TIMEOUT="3600",  # the broker would give the killed worker's message back in an hour
        SAFETY_DISPATCH_BATCH=str(BATCH),
        SAFETY_PUSH_BATCH=str(BATCH),  # should pushes get a batch size of their own
        SAFETY_CLAIM_STALE_SECONDS=str(STALE_SECONDS),
        SAFETY_SCAN_SECONDS=str(SCAN_SECONDS),
        EMAIL_URL=f"smtp://{smtp_server.host}:{smtp_server.port}",
        JMA_FEED_URLS="",  # no polling of the real feed from the test's beat
        PUSH_ALLOW_LOOPBACK_HTTP="true",
    )
    with ExitStack() as stack:
        stack.callback(redis_flush, broker)
        push_service = stack.enter_context(LocalPushService(vapid_public_key=vapid_keys().public))
        owner: dict[str, int] = {}
        subscriptions = []
        for person in people:
            info = push_service.new_subscription()
            push_service.set_response(info["endpoint"], 201, delay=PUSH_DELAY)
            owner[urlsplit(info["endpoint"]).path] = person.id
            subscriptions.append(
                PushSubscription(
                    user=person,
                    endpoint=info["endpoint"],
                    p256dh=info["keys"]["p256dh"],
                    auth=info["keys"]["auth"],
                    vapid_public_key=vapid_keys().public,
                )
            )
        PushSubscription.objects.bulk_create(subscriptions, batch_size=1000)
        incident = services.incident_create(organization=organization, actor=None, title="地震", message="無事ですか")

        first = worker(stack, "worker-1", env)
        stack.enter_context(running("beat", ["beat", "-l", "info", "-s", str(tmp_path / "celerybeat-schedule")], env))

        with tasks_sent_to(broker):
            dispatch = services.dispatch_create(incident=incident, actor=None, target={"mode": "everyone"})
        started = time.monotonic()

        # Kill the first worker in the middle of the pushes.
        deadline = started + 60
        while len(push_service.received) < PEOPLE * KILL_AT:
            assert time.monotonic() < deadline, first.failure(f"only {len(push_service.received)} pushes in 60 s")
            assert first.proc.poll() is None, first.failure("the worker stopped by itself")
            time.sleep(0.005)
        first.kill()
        killed = time.monotonic()
        time.sleep(PUSH_DELAY + 0.5)  # the pushes already on the wire land
        received_at_kill = len(push_service.received)
        at_kill = counts(dispatch)
        sent_at_kill = at_kill[(Channel.PUSH, DeliveryState.SENT)]
        print(
            f"killed worker-1 after {killed - started:.2f} s: {received_at_kill} pushes received, "
            f"{sent_at_kill} push rows marked sent, {at_kill[(Channel.PUSH, DeliveryState.QUEUED)]} queued"
        )
        assert 0 < sent_at_kill < PEOPLE, at_kill
        assert not Dispatch.objects.get(id=dispatch.id).finished_at

        second = worker(stack, "worker-2", env)
        deadline = killed + RESUME_WITHIN
        while True:
            current = counts(dispatch)
            if not current[(Channel.PUSH, DeliveryState.QUEUED)] + current[(Channel.EMAIL, DeliveryState.QUEUED)]:
                break
            assert time.monotonic() < deadline, second.failure(f"not resumed within {RESUME_WITHIN:g} s: {current}")
            time.sleep(0.2)
        done = time.monotonic()
        while not Dispatch.objects.get(id=dispatch.id).finished_at:
            assert time.monotonic() < deadline, second.failure("the send never finished")
            time.sleep(0.2)

        # The scan restarted it: its result says so, and the broker still holds the killed worker's message.
        second.wait_for(r"safety\.tasks\.safety_scan\[[^\]]+\] succeeded in [^:]+: \{'resumed': 1", timeout=10)
        second.wait_for(r"safety\.tasks\.dispatch_run\[[^\]]+\] succeeded in [^:]+: [1-9]", timeout=10)
        time.sleep(PUSH_DELAY + 0.5)
        received = push_service.wait_for(PEOPLE)

    # Every person: exactly one delivery row per channel they have, all sent.
    rows = list(Delivery.objects.filter(incident=incident).values_list("person_id", "channel", "state"))
    per_channel = Counter((person_id, channel) for person_id, channel, _state in rows)
    assert set(per_channel.values()) == {1}
    expected = {(p.id, Channel.PUSH) for p in people} | {(p.id, Channel.INAPP) for p in people}
    expected |= {(p, Channel.EMAIL) for p in with_mail}
    assert set(per_channel) == expected
    assert {state for _p, _c, state in rows} == {DeliveryState.SENT}
    assert Incident.objects.get(id=incident.id).status == IncidentStatus.ACCEPTING

    # Pushes: everyone at least once; a duplicate only from the batch in flight, looking the same to the phone.
    assert not push_service.rejected, push_service.rejected[:5]
    per_person = Counter(owner[push.path] for push in received)
    assert set(per_person) == {p.id for p in people}
    duplicates = sum(per_person.values()) - PEOPLE
    for push in received:
        payload = json.loads(push.payload)
        assert payload["tag"] == f"incident-{incident.id}"
        assert push.headers.get("topic") == f"incident{incident.id}"
        # A repeat is signed again (a later timestamp) but is the same person's link to the same incident.
        token = urlsplit(payload["url"]).path.rstrip("/").rsplit("/", 1)[1]
        assert answer_token_read(token) == AnswerLink(organization.id, incident.id, owner[push.path])
    assert duplicates <= BATCH, f"{duplicates} duplicate pushes, more than one batch of {BATCH}"

    # Mail: each address once (the worker died during the pushes; a crash during mail is bounded the same way).
    mailed = Counter(address for message in smtp_server.messages for address in message.envelope_to)
    by_address = {p.email: p.id for p in people if p.email}
    assert set(mailed) == set(by_address)
    mail_duplicates = sum(mailed.values()) - len(by_address)
    assert mail_duplicates <= BATCH

    print(
        f"resumed and finished {done - killed:.1f} s after the kill (stale after {STALE_SECONDS} s, scan every "
        f"{SCAN_SECONDS} s); pushes: {len(received)} for {PEOPLE} people, {duplicates} duplicates "
        f"(batch {BATCH}; received {received_at_kill} at the kill, {sent_at_kill} marked sent); "
        f"mail: {sum(mailed.values())} for {len(by_address)} people, {mail_duplicates} duplicates"
    )
