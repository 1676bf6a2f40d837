"""docker-compose.yml, the Dockerfile and .env.example agree with each other and with the settings code,
and the command of each compose service really starts here.

There is no container engine in CI, so the compose file is checked by parsing it, and each app service's
command is run directly with this checkout and the virtualenv: pointed at the test database and Redis,
with the compose environment's trial defaults for everything else (production settings included)."""

from __future__ import annotations

import ast
import http.client
import json
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.services import ROOT, free_port, require_redis, subprocess_env

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("web", "worker", "beat")
ALL_SERVICES = ("postgres", "redis", *APP_SERVICES)

# Where the settings code reads the environment: the apps, manage.py and the bin/run launcher.
SOURCE_PACKAGES = ("config", "directory", "chat", "safety", "consumers", "frontend")
SOURCE_FILES = ("manage.py",)
SHELL_SOURCES = ("bin/run",)
# bin/run's choice of interpreter for creating .venv: not a setting of the service.
NOT_SETTINGS = frozenset({"PYTHON"})
# The section of .env.example for variables only docker-compose.yml uses.
COMPOSE_ONLY_SECTION = "docker compose only"

READER_CALL = re.compile(r"\b(?:env_(?:str|bool|int|list|url|choice)|email_settings)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
OS_ENVIRON = re.compile(
    r"\bos\.(?:environ(?:\.get|\.setdefault|\.pop)?\(\s*|environ\[\s*|getenv\(\s*)[\"']([A-Z][A-Z0-9_]*)[\"']"
)
SHELL_VARIABLE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)")
ENV_EXAMPLE_LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR; $$ is a literal $.
INTERPOLATION = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")


# --- Reading the three files ----------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return cast(dict[str, Any], services[name])


def strings_in(node: Any) -> Iterator[str]:
    """Every string value (and mapping key) in the parsed compose file: what compose interpolates."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def compose_variables() -> set[str]:
    names = set()
    for text in strings_in(compose()):
        for match in INTERPOLATION.finditer(text):
            if match.group(1) or match.group(4):
                names.add(match.group(1) or match.group(4))
    return names


def with_defaults(text: str) -> str:
    """Interpolate as `docker compose up` does with nothing set in the shell or in .env."""

    def replace(match: re.Match[str]) -> str:
        if match.group(5):
            return "$"
        operator = match.group(2) or ""
        return match.group(3) if operator.endswith("-") else ""

    return INTERPOLATION.sub(replace, text)


def environment_of(name: str) -> dict[str, str]:
    raw = service(name).get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): with_defaults("" if value is None else str(value)) for key, value in raw.items()}


def env_example() -> dict[str, tuple[str, str]]:
    """Variable name -> (section title, line) for every variable .env.example lists, commented out or not."""
    found: dict[str, tuple[str, str]] = {}
    section = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("# ---"):
            section = line.strip("#- ").lower()
            continue
        match = ENV_EXAMPLE_LINE.match(line)
        if match:
            assert match.group(1) not in found, f".env.example lists {match.group(1)} twice"
            found[match.group(1)] = (section, line)
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    pairs = []
    for line in joined:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_cmd() -> list[str]:
    commands = [arguments for instruction, arguments in dockerfile_instructions() if instruction == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    last = commands[-1]
    if last.startswith("["):
        return [str(part) for part in json.loads(last)]
    return shlex.split(last)


def command_of(name: str) -> list[str]:
    """The service's command as compose runs it: its own, else the image's CMD."""
    command = service(name).get("command")
    if command is None:
        return dockerfile_cmd()
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


@cache
def variables_read_by_the_code() -> frozenset[str]:
    names: set[str] = set()
    files = [ROOT / name for name in SOURCE_FILES]
    for package in SOURCE_PACKAGES:
        files += [path for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts]
    for path in files:
        text = path.read_text()
        names.update(READER_CALL.findall(text))
        names.update(OS_ENVIRON.findall(text))
    for name in SHELL_SOURCES:
        names.update(SHELL_VARIABLE.findall((ROOT / name).read_text()))
    return frozenset(names - NOT_SETTINGS)


def production_required() -> list[str]:
    """The variables config/settings/production.py refuses to start without (its `for _name in (...)`)."""
    tree = ast.parse((ROOT / "config" / "settings" / "production.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            names = [elt.value for elt in node.iter.elts if isinstance(elt, ast.Constant)]
            if names and all(isinstance(n, str) for n in names):
                return [str(n) for n in names]
    raise AssertionError("production.py no longer lists its required variables in a `for ... in (...)` loop")


def state_volume_target() -> str:
    targets = set()
    for name in APP_SERVICES:
        mounts = [str(m) for m in service(name).get("volumes", [])]
        state = [m.split(":")[1] for m in mounts if m.split(":")[0] == "state"]
        assert state, f"{name} does not mount the state volume"
        targets.update(state)
    assert len(targets) == 1, f"the app services mount the state volume at different paths: {targets}"
    return targets.pop()


# --- a. The compose file ---------------------------------------------------------------------------------


def test_compose_has_the_six_services():
    assert set(ALL_SERVICES) <= set(compose()["services"]), sorted(compose()["services"])


def test_migrate_runs_once_and_the_long_running_services_wait_for_it():
    migrate = service("migrate")
    # Quoted in YAML: a bare `no` would be read as False.
    assert migrate.get("restart") == "no"
    assert command_of("migrate")[:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in command_of("migrate")
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in LONG_RUNNING:
        depends_on = service(name)["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on must use conditions"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


def test_postgres_and_redis_have_healthchecks_and_named_volumes():
    postgres, redis = service("postgres"), service("redis")
    assert postgres["image"].startswith("postgres:16")
    assert redis["image"].startswith("redis:7")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    named = set(compose().get("volumes") or {})
    for backing in (postgres, redis, *(service(n) for n in APP_SERVICES)):
        for mount in backing.get("volumes", []):
            source = str(mount).split(":")[0]
            assert source in named, f"{mount!r} is not a named volume declared at the top level"


def test_app_services_share_one_environment_with_what_production_needs():
    environments = {name: environment_of(name) for name in APP_SERVICES}
    first = environments["web"]
    for name, environment in environments.items():
        assert environment == first, f"{name}'s environment differs from web's: share the one block"
        env_file = service(name).get("env_file")
        assert env_file == [{"path": ".env", "required": False}], f"{name}: .env must be optional"
    assert first["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    for required in (*production_required(), "ALLOWED_HOSTS", "VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"):
        assert required in first, f"the shared environment lacks {required}"
    for required in production_required():
        assert first[required], f"{required} has no trial default, so `docker compose up` would fail"
    assert len(first["SECRET_KEY"]) >= 50, "production refuses a SECRET_KEY under 50 characters"
    # The trial default is recognisably not a secret (Django's `check --deploy` flags this prefix).
    assert first["SECRET_KEY"].startswith("django-insecure-")
    assert first["DATABASE_URL"].startswith("postgres://") and "@postgres:" in first["DATABASE_URL"]
    assert first["REDIS_URL"].startswith("redis://redis:")


def test_web_worker_and_beat_run_daphne_and_celery():
    web = command_of("web")
    assert web[0] == "daphne" and "config.asgi:application" in web
    assert command_of("worker")[:4] == ["celery", "-A", "config", "worker"]
    beat = command_of("beat")
    assert beat[:4] == ["celery", "-A", "config", "beat"]
    schedule = option_value(beat, ("-s", "--schedule"))
    assert schedule.startswith(state_volume_target().rstrip("/") + "/"), "beat's schedule must be in the volume"


def test_every_compose_variable_is_in_env_example():
    listed = set(env_example())
    missing = sorted(compose_variables() - listed)
    assert not missing, f"docker-compose.yml uses {missing}, which .env.example does not list"


def test_env_example_lists_only_variables_that_are_read():
    read = variables_read_by_the_code()
    used_by_compose = compose_variables()
    for name, (section, _line) in env_example().items():
        if section.startswith(COMPOSE_ONLY_SECTION):
            assert name in used_by_compose, f"{name} is in the compose-only section but compose does not use it"
            assert name not in read, f"{name} is read by the code: move it out of the compose-only section"
        else:
            assert name in read, f".env.example lists {name}, which nothing in the source reads"


def test_env_example_documents_each_variable_and_holds_no_secret():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if ENV_EXAMPLE_LINE.match(line):
            previous = lines[index - 1]
            assert previous.startswith("# ") and not ENV_EXAMPLE_LINE.match(previous), (
                f"{line!r} needs a one-line comment above it"
            )
    listed = env_example()
    for name in ("VAPID_PRIVATE_KEY", "EMAIL_URL", "DATABASE_URL"):
        assert listed[name][1].startswith("#"), f"{name} must stay commented out in the example"
    secret_line = listed["SECRET_KEY"][1]
    if not secret_line.startswith("#"):
        # A placeholder production refuses (too short), so a copied example cannot go live unchanged.
        assert len(secret_line.split("=", 1)[1]) < 50


# --- The Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_image_serving_daphne_on_8000():
    instructions = dockerfile_instructions()
    froms = [arguments for instruction, arguments in instructions if instruction == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert ("EXPOSE", "8000") in instructions
    assert dockerfile_cmd() == [
        "daphne",
        "-b",
        "0.0.0.0",
        "-p",
        "8000",
        "--websocket_connect_timeout",
        "30",
        "config.asgi:application",
    ]
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$)", run) for run in runs), "install the project"


def test_dockerfile_state_dir_is_the_compose_volume_and_collectstatic_can_import_production():
    env = dockerfile_env()
    assert env.get("STATE_DIR") == state_volume_target()
    assert env.get("DJANGO_SETTINGS_MODULE") == "config.settings.production"
    volumes = [arguments for instruction, arguments in dockerfile_instructions() if instruction == "VOLUME"]
    assert any(env["STATE_DIR"] in volume for volume in volumes)
    static_root = env.get("STATIC_ROOT", "")
    assert static_root and not static_root.startswith(env["STATE_DIR"]), "collect static files into the image"
    collect = [
        arguments
        for instruction, arguments in dockerfile_instructions()
        if instruction == "RUN" and "collectstatic" in arguments
    ]
    assert len(collect) == 1, "run collectstatic once, at build time"
    for required in production_required():
        assert re.search(rf"\b{required}=\S", collect[0]), f"collectstatic needs a dummy {required}"
    # Settings generate VAPID keys on import: never into the image's state directory.
    build_state = re.search(r"\bSTATE_DIR=(\S+)", collect[0])
    assert build_state and build_state.group(1) != env["STATE_DIR"]


def test_dockerignore_keeps_local_state_and_secrets_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".git", ".venv", ".env", ".state-test"):
        assert entry in ignored, f".dockerignore must exclude {entry}"


# --- b. The settings code --------------------------------------------------------------------------------


def test_every_variable_the_code_reads_is_in_env_example():
    missing = sorted(variables_read_by_the_code() - set(env_example()))
    assert not missing, f"the code reads {missing}: document them in .env.example"


def test_the_source_scan_finds_the_variables_it_should():
    # Guards the regular expressions above: if they stop matching, the two tests before prove nothing.
    read = variables_read_by_the_code()
    for name in ("SECRET_KEY", "DATABASE_URL", "EMAIL_URL", "STATE_DIR", "PORT", "DJANGO_SETTINGS_MODULE"):
        assert name in read


# --- c. Each service's command, run here -----------------------------------------------------------------


def option_value(argv: Sequence[str], names: tuple[str, ...]) -> str:
    for index, part in enumerate(argv):
        if part in names:
            return argv[index + 1]
        for name in names:
            if name.startswith("--") and part.startswith(name + "="):
                return part.split("=", 1)[1]
    raise AssertionError(f"{shlex.join(argv)} has no {'/'.join(names)} option")


def with_option(argv: Sequence[str], names: tuple[str, ...], value: str) -> list[str]:
    option_value(argv, names)
    result = list(argv)
    for index, part in enumerate(result):
        if part in names:
            result[index + 1] = value
        elif any(n.startswith("--") and part.startswith(n + "=") for n in names):
            result[index] = part.split("=", 1)[0] + "=" + value
    return result


def local(argv: Sequence[str]) -> list[str]:
    """The container's command with this virtualenv's executables."""
    program, *rest = argv
    if program in ("python", "python3"):
        return [sys.executable, *rest]
    executable = Path(sys.executable).parent / program
    assert executable.exists(), f"{program} is not installed in {executable.parent}"
    return [str(executable), *rest]


def service_env(name: str, redis_url: str) -> dict[str, str]:
    """The compose environment with its trial defaults, pointed at the test database and Redis."""
    env = subprocess_env()
    for key, value in environment_of(name).items():
        # The compose host names do not resolve here; subprocess_env's STATE_DIR is the test one.
        if key not in ("DATABASE_URL", "REDIS_URL", "STATE_DIR"):
            env[key] = value
    env["REDIS_URL"] = redis_url
    # A fresh key rather than the trial one published in the compose file.
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    return env


class Process:
    """A subprocess whose merged output is collected line by line, so the test can wait for a line."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def failure(self, what: str) -> str:
        return f"{what}\n$ {shlex.join(self.argv)}\n{self.output()[-4000:]}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(self._lines))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(self.failure(f"no line matching {pattern!r} within {timeout}s"))
                self._changed.wait(min(remaining, 0.5))

    def wait_for_port(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.failure(f"exited with {self.proc.returncode} before listening"))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(self.failure(f"nothing listened on port {port} within {timeout}s"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@contextmanager
def running(argv: Sequence[str], env: Mapping[str, str]) -> Iterator[Process]:
    process = Process(argv, env)
    try:
        yield process
    finally:
        process.stop()


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def forget_in_redis(url: str, token: str) -> None:
    """Remove the queues and kombu bindings named after this test's unique token."""
    client = redis_client(url)
    try:
        for key in client.scan_iter(match=f"*{token}*"):
            client.delete(key)
        for key in client.scan_iter(match="_kombu.binding*"):
            if client.type(key) != b"set":
                continue
            for member in client.smembers(key):
                if token.encode() in member:
                    client.srem(key, member)
    finally:
        client.close()


def forget_sent_by(url: str, pid: int, queue: str = "celery") -> None:
    """Remove from the default queue what the process `pid` published there (kombu's origin gen<pid>@host)."""
    client = redis_client(url)
    try:
        for raw in client.lrange(queue, 0, -1):
            try:
                origin = json.loads(raw)["headers"].get("origin", "")
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if origin.startswith(f"gen{pid}@"):
                client.lrem(queue, 1, raw)
    finally:
        client.close()


@pytest.mark.services
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_migrate_command_exits_0():
    env = service_env("migrate", require_redis())
    result = subprocess.run(local(command_of("migrate")), cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.services
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_web_command_serves_healthz():
    port = free_port()
    argv = with_option(local(command_of("web")), ("-b", "--bind"), "127.0.0.1")
    argv = with_option(argv, ("-p", "--port"), str(port))
    with running(argv, service_env("web", require_redis())) as web:
        web.wait_for_port(port)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 200, web.failure(f"GET /healthz answered {response.status}: {body[:300]!r}")
        assert json.loads(body) == {"ok": True}
        # The compose healthcheck, pointed at this port, passes too.
        check = service("web")["healthcheck"]["test"]
        assert check[0] == "CMD", "exec-form healthcheck expected"
        argv = [part.replace("8000", str(port)) for part in local(check[1:])]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, web.failure(f"healthcheck failed: {result.stdout}{result.stderr}")


@pytest.mark.services
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_worker_command_answers_ping_and_runs_a_task():
    redis_url = require_redis()
    env = service_env("worker", redis_url)
    # A queue and node of its own: the worker takes nothing from the shared default queue, and nothing
    # another run sends reaches it except broadcasts.
    token = f"compose-test-{uuid.uuid4().hex[:12]}"
    nodename = f"{token}@localhost"
    isolation = ["-n", nodename, "-Q", token, "-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    argv = [*local(command_of("worker")), *isolation]
    celery = local(["celery"])[0]
    try:
        with running(argv, env) as worker:
            worker.wait_for(rf"{re.escape(nodename)} ready", timeout=60)
            ping = [celery, "-A", "config", "inspect", "ping", "-d", nodename, "-t", "3"]
            deadline = time.monotonic() + 30
            while True:
                result = subprocess.run(ping, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
                if result.returncode == 0 and "pong" in result.stdout:
                    break
                assert time.monotonic() < deadline, worker.failure(f"no pong: {result.stdout}{result.stderr}")
            call = [celery, "-A", "config", "call", "consumers.tasks.outbox_relay", "--queue", token]
            sent = subprocess.run(call, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            task_id = sent.stdout.strip().splitlines()[-1]
            worker.wait_for(rf"Task consumers\.tasks\.outbox_relay\[{re.escape(task_id)}\] succeeded", timeout=30)
    finally:
        forget_in_redis(redis_url, token)


@pytest.mark.services
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_beat_command_sends_outbox_relay(tmp_path):
    redis_url = require_redis()
    argv = with_option(local(command_of("beat")), ("-s", "--schedule"), str(tmp_path / "celerybeat-schedule"))
    pid = 0
    try:
        with running(argv, service_env("beat", redis_url)) as beat:
            pid = beat.proc.pid
            beat.wait_for(r"Sending due task outbox-relay \(consumers\.tasks\.outbox_relay\)", timeout=25)
    finally:
        # What beat queued goes to the shared default queue: take it back out.
        if pid:
            forget_sent_by(redis_url, pid)
