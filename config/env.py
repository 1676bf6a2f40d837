"""Reading settings from the environment.

Every setting the service takes comes through one of these readers, so that a bad value stops start-up
with a message that names the variable (and never prints a secret's value).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}; got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def env_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if not value:
        return value
    return check_url(name, value, schemes)


def check_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name} must be a URL with scheme {', '.join(schemes)}; got scheme {parts.scheme!r}"
        )
    try:
        parts.port  # noqa: B018  (reading it validates it)
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    if parts.scheme in ("http", "https", "redis", "rediss", "postgres", "postgresql") and not parts.hostname:
        raise ImproperlyConfigured(f"{name} must name a host")
    return value


def state_dir() -> Path:
    """Where the service keeps what it generates on first run (secret key, VAPID keys, embedded database).

    Outside the repository by default, so generated secrets are never committed."""
    raw = env_str("STATE_DIR")
    if raw:
        path = Path(raw).expanduser()
    else:
        base = Path(env_str("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        path = base / "tsunagu"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ImproperlyConfigured(f"STATE_DIR {str(path)!r} cannot be created: {exc.strerror}") from None
    return path


def generated_secret(filename: str, make: Callable[[], str] | None = None) -> str:
    """Return a secret kept in the state directory, creating it (mode 0600) on first use."""
    path = state_dir() / filename
    if not path.exists():
        write_once(path, (make() if make else secrets.token_urlsafe(50)) + "\n")
    return path.read_text().strip()


def write_once(path: Path, content: str) -> None:
    """Create `path` (mode 0600) with `content` unless another process got there first.

    Written to a private temporary file and linked into place, so a reader never sees half a file and
    processes starting together agree on one value."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def email_settings(name: str, default: str) -> dict[str, object]:
    """Turn an e-mail URL into Django e-mail settings.

    smtp://user:pass@host:25, smtp+tls://… (STARTTLS), smtps://… (implicit TLS), console://, locmem://,
    optional ?timeout=10."""
    url = env_url(name, default, ("smtp", "smtp+tls", "smtps", "console", "locmem"))
    parts = urlsplit(url)
    options: dict[str, object] = {}
    if parts.scheme == "console":
        options["EMAIL_BACKEND"] = "django.core.mail.backends.console.EmailBackend"
        return options
    if parts.scheme == "locmem":
        options["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
        return options
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    if not parts.hostname:
        raise ImproperlyConfigured(f"{name} must name a host, like smtp://mail.example.com:25")
    query = parse_qs(parts.query)
    timeout_raw = query.get("timeout", ["30"])[0]
    try:
        timeout = int(timeout_raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a non-integer timeout") from None
    options.update(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST=parts.hostname,
        EMAIL_PORT=port or (465 if parts.scheme == "smtps" else 587 if parts.scheme == "smtp+tls" else 25),
        EMAIL_HOST_USER=unquote(parts.username or ""),
        EMAIL_HOST_PASSWORD=unquote(parts.password or ""),
        EMAIL_USE_TLS=parts.scheme == "smtp+tls",
        EMAIL_USE_SSL=parts.scheme == "smtps",
        EMAIL_TIMEOUT=timeout,
    )
    return options
