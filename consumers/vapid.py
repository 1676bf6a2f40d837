"""VAPID key pairs: the current one, earlier ones kept after a key rotation, the rotation and the pruning.

Two modes. Environment: VAPID_PRIVATE_KEY (and optionally VAPID_PUBLIC_KEY) is the current pair and
VAPID_PREVIOUS_PRIVATE_KEYS (comma-separated) the earlier ones; the operator rotates by changing them (the
plan is printed by `manage.py vapid_rotate`). State file: without VAPID_PRIVATE_KEY the pair is generated once
into STATE_DIR/vapid.json, which also keeps a "previous" list; `vapid_rotate()` rewrites it.

The plan of a rotation (issue 9): a new pair becomes current, so every new subscription uses it; a browser whose
subscription was made with an earlier key re-subscribes on its next visit (app.js); until then pushes to it are
signed with the key it subscribed with (`vapid_private_for`), and the earlier key is kept until no subscription
uses it (`vapid_prune`, hourly).

Every process notices a rotation made by another: the state file is stat()ed on each call and read again only
when it changed. The private keys are never logged or shown; only public keys leave this module's callers.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count
from django.utils import timezone

from config.env import state_dir, write_once
from consumers.webpush import vapid_keys_generate, vapid_public_key

logger = logging.getLogger(__name__)

STATE_FILE = "vapid.json"


@dataclass(frozen=True)
class VapidKeys:
    private: str
    public: str

    def __repr__(self) -> str:  # never print the private key
        return f"VapidKeys(public={self.public!r})"


@dataclass(frozen=True)
class VapidKeyring:
    """The current pair and the earlier ones still kept, newest first. `from_env`: set by the environment, so
    only the operator can rotate (no file to rewrite)."""

    current: VapidKeys
    previous: tuple[VapidKeys, ...]
    from_env: bool

    def private_for(self, public_key: str) -> str:
        wanted = _normalise(public_key)
        for keys in self.previous:
            if keys.public == wanted:
                return keys.private
        return self.current.private

    def knows(self, public_key: str) -> bool:
        wanted = _normalise(public_key)
        return wanted == self.current.public or any(k.public == wanted for k in self.previous)


@dataclass(frozen=True)
class VapidKeyUse:
    keys: VapidKeys
    current: bool
    subscriptions: int


@dataclass(frozen=True)
class VapidUsage:
    keys: list[VapidKeyUse]  # the current key first, then the earlier ones, newest first
    unknown: int  # subscriptions made with a key no longer kept


class VapidRotationRefused(Exception):
    """The keys come from the environment: the operator rotates them. `plan` says how."""

    def __init__(self, plan: str) -> None:
        super().__init__(plan)
        self.plan = plan


# The keyring with what it was read from: the environment's values, or the state file's identity (inode, mtime,
# size; a rotation replaces the file, so its inode changes even within one mtime tick).
_cached: tuple[tuple[object, ...], VapidKeyring] | None = None


def vapid_keys() -> VapidKeys:
    """The current pair: every new subscription is made with its public key."""
    return vapid_keyring().current


def vapid_previous() -> list[VapidKeys]:
    """Earlier pairs kept after a rotation, newest first."""
    return list(vapid_keyring().previous)


def vapid_private_for(public_key: str) -> str:
    """The private key to sign a push to a subscription made with `public_key`: the matching earlier key, else the
    current one (for "", the current key itself, or a key no longer kept)."""
    return vapid_keyring().private_for(public_key)


class VapidSigning(TypedDict):
    vapid_private_key: str
    vapid_previous_keys: list[str]
    vapid_subject: str


def vapid_signing() -> VapidSigning:
    """The keyword arguments of `webpush.send_batch` / `PushSession.send` that sign each target with the key it
    subscribed with: `pusher.send(targets, message, **vapid_signing())`."""
    keyring = vapid_keyring()
    return {
        "vapid_private_key": keyring.current.private,
        "vapid_previous_keys": [keys.private for keys in keyring.previous],
        "vapid_subject": settings.VAPID_SUBJECT,
    }


def vapid_keyring() -> VapidKeyring:
    global _cached
    if settings.VAPID_PRIVATE_KEY or settings.VAPID_PUBLIC_KEY:
        stamp: tuple[object, ...] = (
            "env",
            settings.VAPID_PRIVATE_KEY,
            settings.VAPID_PUBLIC_KEY,
            settings.VAPID_PREVIOUS_PRIVATE_KEYS,
        )
        if _cached is None or _cached[0] != stamp:
            _cached = (stamp, _keyring_from_env())
        return _cached[1]
    path = _state_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        state_dir()  # (re)creates the directory
        new_private, new_public = vapid_keys_generate()
        write_once(path, json.dumps({"private": new_private, "public": new_public, "previous": []}))
        info = path.stat()
    stamp = ("file", str(path), info.st_ino, info.st_mtime_ns, info.st_size, settings.VAPID_PREVIOUS_PRIVATE_KEYS)
    if _cached is None or _cached[0] != stamp:
        _cached = (stamp, _keyring_from_file(path))
    return _cached[1]


def vapid_rotate() -> tuple[VapidKeys, VapidKeys]:
    """Make a new pair current and keep the one it replaces as the newest previous pair. Returns (new, old).

    State-file mode only: the file is replaced atomically under a lock, so concurrent rotations do not lose a key
    and readers never see half a file. With keys from the environment, raises VapidRotationRefused with the plan."""
    keyring = vapid_keyring()
    if keyring.from_env:
        raise VapidRotationRefused(_env_rotation_plan(keyring))
    path = _state_path()
    with _locked(path):
        stored = _read_state(path)
        old = VapidKeys(private=stored["private"], public=stored["public"])
        new_private, new_public = vapid_keys_generate()
        now = timezone.now().isoformat(timespec="seconds")
        previous = [{"private": old.private, "public": old.public, "retired_at": now}]
        previous += [p for p in stored.get("previous", []) if p.get("public") != old.public]
        _write_state(path, {"private": new_private, "public": new_public, "created_at": now, "previous": previous})
    logger.info("VAPID key rotated: new public key %s, previous %s kept", new_public[:16], old.public[:16])
    return VapidKeys(private=new_private, public=new_public), old


def vapid_usage() -> VapidUsage:
    """Each kept key (current first) with how many subscriptions use it. A subscription stored without a key
    counts as the current key's; one made with a key no longer kept is counted apart (`unknown`): pushes to it
    are signed with the current key and refused, until the browser re-subscribes."""
    from consumers.models import PushSubscription

    keyring = vapid_keyring()
    counts: dict[str, int] = {}
    unknown = 0
    for row in PushSubscription.objects.values("vapid_public_key").annotate(n=Count("id")):
        key = _normalise(row["vapid_public_key"]) or keyring.current.public
        if keyring.knows(key):
            counts[key] = counts.get(key, 0) + row["n"]
        else:
            unknown += row["n"]
    uses = [VapidKeyUse(keys=keyring.current, current=True, subscriptions=counts.get(keyring.current.public, 0))]
    uses += [VapidKeyUse(keys=k, current=False, subscriptions=counts.get(k.public, 0)) for k in keyring.previous]
    return VapidUsage(keys=uses, unknown=unknown)


def vapid_prune() -> list[VapidKeys]:
    """Drop the earlier keys no subscription uses any more; returns them.

    Keys kept in the state file are removed from it. Keys from VAPID_PREVIOUS_PRIVATE_KEYS cannot be removed
    here: they are returned too (and logged by public key) for the operator to take out of the variable."""
    unused = [use.keys for use in vapid_usage().keys if not use.current and use.subscriptions == 0]
    if not unused:
        return []
    from_env = {k.public for k in _env_previous()}
    drop = {k.public for k in unused if k.public not in from_env}
    if drop and not vapid_keyring().from_env:
        path = _state_path()
        with _locked(path):
            stored = _read_state(path)
            kept = [p for p in stored.get("previous", []) if p["public"] not in drop]
            if len(kept) != len(stored.get("previous", [])):
                _write_state(path, {**stored, "previous": kept})
    for keys in unused:
        if keys.public in drop:
            logger.info("VAPID previous key %s dropped: no subscription uses it", keys.public[:16])
        else:
            logger.info(
                "VAPID previous key %s is used by no subscription: remove it from VAPID_PREVIOUS_PRIVATE_KEYS",
                keys.public[:16],
            )
    return unused


# --- Reading and writing ---------------------------------------------------------------------------------

_state_paths: dict[tuple[str | None, str | None], Path] = {}


def _state_path() -> Path:
    # state_dir() makes the directory: once per STATE_DIR, not on every call of vapid_keys().
    where = (os.environ.get("STATE_DIR"), os.environ.get("XDG_STATE_HOME"))
    if where not in _state_paths:
        _state_paths[where] = state_dir() / STATE_FILE
    return _state_paths[where]


def _normalise(public_key: str) -> str:
    """A public key as base64url without padding (what browsers and vapid_keys_generate write)."""
    return public_key.strip().rstrip("=").replace("+", "-").replace("/", "_")


def _env_previous() -> list[VapidKeys]:
    keys = []
    for number, private in enumerate((p.strip() for p in settings.VAPID_PREVIOUS_PRIVATE_KEYS.split(",")), start=1):
        if not private:
            continue
        try:
            keys.append(VapidKeys(private=private, public=vapid_public_key(private)))
        except Exception:
            raise ImproperlyConfigured(
                f"VAPID_PREVIOUS_PRIVATE_KEYS: key {number} is not a base64url P-256 private key (32 bytes)"
            ) from None
    return keys


def _keyring(current: VapidKeys, previous: list[VapidKeys], *, from_env: bool) -> VapidKeyring:
    kept: list[VapidKeys] = []
    for keys in previous:  # the current key listed as a previous one too, or a key listed twice: keep it once
        if keys.public != current.public and all(k.public != keys.public for k in kept):
            kept.append(keys)
    return VapidKeyring(current=current, previous=tuple(kept), from_env=from_env)


def _keyring_from_env() -> VapidKeyring:
    private, public = settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY
    if not private:
        raise ImproperlyConfigured("VAPID_PRIVATE_KEY must be set when VAPID_PUBLIC_KEY is")
    try:
        derived = vapid_public_key(private)
    except Exception:
        raise ImproperlyConfigured("VAPID_PRIVATE_KEY is not a base64url P-256 private key (32 bytes)") from None
    if public and _normalise(public) != derived:
        raise ImproperlyConfigured("VAPID_PUBLIC_KEY does not belong to VAPID_PRIVATE_KEY")
    return _keyring(VapidKeys(private=private, public=derived), _env_previous(), from_env=True)


def _keyring_from_file(path: Path) -> VapidKeyring:
    stored = _read_state(path)
    current = VapidKeys(private=stored["private"], public=stored["public"])
    previous = [VapidKeys(private=p["private"], public=p["public"]) for p in stored.get("previous", [])]
    return _keyring(current, previous + _env_previous(), from_env=False)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict) or not stored.get("private") or not stored.get("public"):
            raise ValueError("no current key pair")
        previous = stored.get("previous", [])
        if not isinstance(previous, list) or not all(
            isinstance(p, dict) and p.get("private") and p.get("public") for p in previous
        ):
            raise ValueError('"previous" is not a list of key pairs')
    except (OSError, ValueError) as exc:
        # The message names the file, never its content.
        raise ImproperlyConfigured(f"{path} is not a readable VAPID key file: {exc.__class__.__name__}") from None
    return stored


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the file atomically (mode 0600): a reader sees the old keys or the new, never half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.rotate.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(state, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for a read-modify-write of the state file, across processes."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _env_rotation_plan(keyring: VapidKeyring) -> str:
    previous = len(keyring.previous)
    return "\n".join(
        [
            "The VAPID keys come from the environment (VAPID_PRIVATE_KEY), so they are rotated there:",
            "  1. Make a new pair (prints the private key, then the public key; keep them in your secret store):",
            '       python -c "from consumers.webpush import vapid_keys_generate as g; print(*g(), sep=chr(10))"',
            "  2. Append the current VAPID_PRIVATE_KEY (public key "
            f"{keyring.current.public[:16]}…) to VAPID_PREVIOUS_PRIVATE_KEYS, comma-separated"
            f" (it holds {previous} key{'s' if previous != 1 else ''} now).",
            "  3. Set VAPID_PRIVATE_KEY to the new private key and VAPID_PUBLIC_KEY to the new public key",
            "     (or leave VAPID_PUBLIC_KEY unset).",
            "  4. Restart the web and worker processes. Browsers re-subscribe with the new key on their next visit;",
            "     pushes to the others are signed with the key they subscribed with meanwhile.",
            "  5. Run `manage.py vapid_status` now and then: once an earlier key has no subscriptions left, remove it",
            "     from VAPID_PREVIOUS_PRIVATE_KEYS (`manage.py vapid_rotate --prune` names the ones to remove).",
        ]
    )
