"""Private PostgreSQL and Redis servers for the fault tests (issue 10), on their own ports, so a test can stop and
restart them while the suite's own connections (to the shared servers) survive.

As root, PostgreSQL runs as the `postgres` user (`runuser -u postgres`): initdb refuses to run as root."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.services import free_port


def _wait_port(port: int, *, up: bool, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not come {'up' if up else 'down'} within {seconds} s")


@dataclass
class PrivateRedis:
    """redis-server on a free port, no persistence."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None
        _wait_port(self.port, up=False)

    def restart(self) -> None:
        self.stop()
        self.start()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found[-1]


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port (trust auth, user postgres)."""

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tsg-pg-")))

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"), "-w", "start"
        )
        _wait_port(self.port, up=True)

    def stop(self, mode: str = "immediate") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        _wait_port(self.port, up=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- Celery processes and a large send, for the fault tests of the sending (faults 1 and 7) -------------------


class CeleryProcess:
    """`celery -A config <args>` in its own process group (a prefork worker's children die with it), its output
    in a file (never a pipe nothing reads), which `wait_for` searches and `failure` shows."""

    def __init__(self, label: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.label, self.log = label, log
        celery = str(Path(sys.executable).parent / "celery")
        with log.open("wb") as output:
            self.proc = subprocess.Popen(
                [celery, "-A", "config", *args],
                cwd=Path(__file__).resolve().parents[2],
                env=dict(env),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def failure(self, what: str) -> str:
        return f"{self.label}: {what}\n--- its last output:\n{self.text()[-5000:]}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(self.failure(f"exited with {self.proc.returncode} before {pattern!r}"))
            if time.monotonic() > deadline:
                raise AssertionError(self.failure(f"no line matching {pattern!r} within {timeout:g} s"))
            time.sleep(0.1)

    def ready(self, timeout: float = 90) -> None:
        self.wait_for(r"@localhost ready", timeout=timeout)

    def unfinished(self, task: str) -> set[str]:
        """Ids of the `task` messages this worker received and did not finish (succeeded, failed or retried)."""
        text = self.text()
        received = set(re.findall(rf"Task {re.escape(task)}\[([^\]]+)\] received", text))
        ended = set(re.findall(rf"Task {re.escape(task)}\[([^\]]+)\] (?:succeeded|raised|retry)", text))
        return received - ended

    def kill(self) -> None:
        """SIGKILL the whole process group, as when the machine or container running it dies."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


class CeleryProcesses:
    """The Celery processes of a test, each in a directory's log file; every one is killed on the way out,
    whatever happened (use as a context manager)."""

    def __init__(self, env: Mapping[str, str], directory: Path) -> None:
        self.env, self.directory = dict(env), directory
        self.started: list[CeleryProcess] = []

    def __enter__(self) -> CeleryProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.started:
            process.kill()

    def worker(self, label: str, *, ready: bool = True) -> CeleryProcess:
        """A worker as production runs it (prefork, one child); with `ready`, once it takes tasks. No gossip,
        mingle or heartbeat: they only add broadcasts."""
        node = f"{label}-{os.getpid()}@localhost"
        args = ["worker", "-l", "info", "-c", "1", "-P", "prefork", "-n", node]
        args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        worker = CeleryProcess(label, args, self.env, self.directory / f"{label}.log")
        self.started.append(worker)
        if ready:
            worker.ready()
        return worker

    def running(self, task: str) -> list[CeleryProcess]:
        """The live processes that received `task` (a task name) and have not finished it."""
        return [p for p in self.started if p.proc.poll() is None and p.unfinished(task)]

    def beat(self) -> CeleryProcess:
        args = ["beat", "-l", "info", "-s", str(self.directory / "beat-schedule")]
        beat = CeleryProcess("beat", args, self.env, self.directory / "beat.log")
        self.started.append(beat)
        return beat


def broker_redeliver(url: str) -> dict[str, str]:
    """Give the broker's unacknowledged messages back to their queues now, as the Redis transport does once the
    visibility timeout is over (a killed worker's message, an hour later). Returns {task id: task name}."""
    import redis

    client = redis.Redis.from_url(url)
    given: dict[str, str] = {}
    try:
        for tag, raw in client.hgetall("unacked").items():
            message, _exchange, routing_key = json.loads(raw)
            headers = message.get("headers") or {}
            given[str(headers.get("id"))] = str(headers.get("task"))
            client.lpush(routing_key, json.dumps(message))
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
        return given
    finally:
        client.close()


def redis_database(url: str, number: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{number}", parts.query, parts.fragment))


def redis_flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# Run against DATABASE_URL with the project's settings: `count` people of a new organisation, each with an e-mail
# address (p00000@example.com, ...) and the push subscription of the same index in the JSON file; then an
# incident and its send to everyone. The send's `dispatch_run` goes to the broker on commit (REDIS_URL,
# CELERY_TASK_ALWAYS_EAGER=false), as from a web process. Prints {"incident", "dispatch", "people"} (the ids in
# index order).
_SEND_SCRIPT = r"""
import json, sys
import django
django.setup()
from consumers.models import PushSubscription
from consumers.vapid import vapid_keys
from directory.models import Organization, User
from safety import services

spec = json.load(open(sys.argv[1]))
count = len(spec["subscriptions"])
organization = Organization.objects.create(
    slug=spec["slug"], name="耐障害試験株式会社", max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
)
User.objects.bulk_create(
    [
        User(
            organization=organization,
            login_id=f"p{i:05d}",
            password="!",
            last_name=f"姓{i}",
            first_name=f"名{i}",
            email=f"p{i:05d}@example.com",
            anpi_login_id=f"anpi{i:05d}",
            language="en" if i % 11 == 0 else "ja",
        )
        for i in range(count)
    ],
    batch_size=2000,
)
people = list(User.objects.filter(organization=organization).order_by("login_id").values_list("id", flat=True))
key = vapid_keys().public
PushSubscription.objects.bulk_create(
    [
        PushSubscription(
            user_id=person, endpoint=s["endpoint"], p256dh=s["keys"]["p256dh"], auth=s["keys"]["auth"],
            vapid_public_key=key,
        )
        for person, s in zip(people, spec["subscriptions"], strict=True)
    ],
    batch_size=2000,
)
incident = services.incident_create(
    organization=organization, actor=None, title="震度6強 耐障害試験", message="大きな地震がありました。無事ですか。"
)
dispatch = services.dispatch_create(incident=incident, actor=None, target={"mode": "everyone"})
print(json.dumps({"incident": incident.id, "dispatch": dispatch.id, "people": people}), flush=True)
"""


@dataclass
class Send:
    """A send made by `send_to_people`: ids, and how to tell whose a push endpoint or an address is."""

    incident: int
    dispatch: int
    people: list[int]
    by_path: dict[str, int]  # push endpoint path -> person id
    by_address: dict[str, int]  # e-mail address -> person id


def send_to_people(
    subscriptions: Sequence[Mapping[str, Any]], env: Mapping[str, str], directory: Path, slug: str = "faults"
) -> Send:
    """Make len(subscriptions) people (see _SEND_SCRIPT) and send to them, from a process of its own with `env`."""
    spec = directory / "send.json"
    spec.write_text(json.dumps({"slug": slug, "subscriptions": list(subscriptions)}))
    done = subprocess.run(
        [sys.executable, "-c", _SEND_SCRIPT, str(spec)],
        cwd=Path(__file__).resolve().parents[2],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"making the people and the send failed:\n{done.stderr[-5000:]}")
    made = json.loads(done.stdout.strip().splitlines()[-1])
    people: list[int] = made["people"]
    return Send(
        incident=made["incident"],
        dispatch=made["dispatch"],
        people=people,
        by_path={urlsplit(s["endpoint"]).path: p for s, p in zip(subscriptions, people, strict=True)},
        by_address={f"p{i:05d}@example.com": p for i, p in enumerate(people)},
    )


def delivery_counts(database_url: str, dispatch_id: int) -> Counter[tuple[str, str]]:
    """(channel, state) -> rows of a send, read with a connection of its own (no Django): works against any
    database, and raises psycopg.OperationalError while the server is down."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT channel, state, count(*) FROM safety_delivery WHERE dispatch_id = %s GROUP BY channel, state",
            [dispatch_id],
        ).fetchall()
    return Counter({(channel, state): n for channel, state, n in rows})


def delivery_rows(database_url: str, incident_id: int) -> list[tuple[int, str, str]]:
    """(person, channel, state) of every delivery row of an incident."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return [
            (int(p), str(c), str(s))
            for p, c, s in conn.execute(
                "SELECT person_id, channel, state FROM safety_delivery WHERE incident_id = %s", [incident_id]
            ).fetchall()
        ]


def dispatch_finished(database_url: str, dispatch_id: int) -> bool:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT finished_at FROM safety_dispatch WHERE id = %s", [dispatch_id]).fetchone()
    return row is not None and row[0] is not None


def claimed_people(database_url: str, dispatch_id: int, channel: str) -> set[int]:
    """The people whose row of `channel` is claimed and not yet marked: the batch a worker has on the wire."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT person_id FROM safety_delivery WHERE dispatch_id = %s AND channel = %s AND state = 'queued'"
            " AND claimed_at IS NOT NULL",
            [dispatch_id, channel],
        ).fetchall()
    return {int(person) for (person,) in rows}
