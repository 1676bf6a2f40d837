"""Real services for tests: which are configured, and starting our own daphne and Celery processes.

Outside CI a test that needs an absent service skips with a reason that says how to get it; in CI
(CI=true) the services must be there, and a missing one fails the run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_redis() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        if IN_CI:
            pytest.fail("REDIS_URL is not set in CI")
        pytest.skip("needs Redis: start redis-server and set REDIS_URL=redis://127.0.0.1:6379/0")
    if not _reachable(url, 6379):
        if IN_CI:
            pytest.fail(f"Redis at {url} is not reachable in CI")
        pytest.skip(f"Redis at {url} is not reachable: start redis-server")
    return url


def require_postgres() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres", "postgresql")):
        if IN_CI:
            pytest.fail("DATABASE_URL is not a PostgreSQL URL in CI")
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/tsunagu")
    return url


def require_chromium() -> str:
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        if IN_CI:
            pytest.fail("Chromium is not installed in CI (apt-get install -y chromium)")
        pytest.skip("needs Chromium: apt-get install -y chromium")
    return path


SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


def shared_fixtures(kind: str) -> Path:
    """`../shared/fixtures/<kind>` (jma, directory). Absent: skip with the reason outside CI, fail in CI."""
    path = SHARED_FIXTURES / kind
    if not path.is_dir():
        message = f"the shared {kind} fixtures are not at {path}; check out ../shared next to the repository"
        if IN_CI:
            pytest.fail(f"{message} (CI must have them)")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database pytest-django made for this run, for subprocesses to share."""
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    name = connection.settings_dict["NAME"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{name}"
    auth = db.get("USER") or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"


def subprocess_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        DATABASE_URL=test_database_url(),
        STATE_DIR=str(settings.STATE_DIR),
        CHANNEL_REDIS_PREFIX=str(settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "asgi")),
        # The servers of one test run share their cache keys (leases, dirty marks), apart from other runs'.
        CACHE_KEY_PREFIX=f"test{os.getpid()}-cache",
        PYTHONUNBUFFERED="1",
        PUSH_ALLOW_LOOPBACK_HTTP="true",
    )
    env.update(extra)
    return env


def _tail(output: IO[bytes], size: int = 3000) -> str:
    output.flush()
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - size))
    return output.read().decode(errors="replace")


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 30, output: IO[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if output is not None:
                out = _tail(output)
            else:
                out = proc.stdout.read().decode(errors="replace")[-3000:] if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


# As in production (Dockerfile, bin/run): daphne's default of 5 s drops handshakes in a burst of connects.
DAPHNE_ARGS = ("--websocket_connect_timeout", "30")


@contextmanager
def daphne(
    env: Mapping[str, str] | None = None, args: Sequence[str] = DAPHNE_ARGS, port: int | None = None
) -> Iterator[str]:
    """A daphne process serving the project on a free port; yields its base URL.

    Its output goes to a temporary file, never a pipe: nothing reads a pipe while the test runs, and daphne's
    access log (three lines per WebSocket) fills the 64 KB pipe buffer after a few hundred sockets, which
    blocks the whole server. The output's tail is printed when the test fails."""
    port = port or free_port()
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *args, "config.asgi:application"],
            cwd=ROOT,
            env=dict(env or subprocess_env()),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc, output=output)
            yield f"http://127.0.0.1:{port}"
        except BaseException:
            print(f"--- daphne on port {port}, last output:\n{_tail(output)}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
