"""Web push sending core: one message, many subscriptions, one round of HTTP.

What belongs here: the wire side of web push -- payload encryption (RFC 8291, aes128gcm), VAPID
authentication (RFC 8292), the POST to each push service (RFC 8030) and the reading of its answer
(delivered, gone, slow down). What does not: Django, the ORM, deciding who gets a push, or deleting
subscriptions. The caller (a Celery task) picks the subscriptions, calls :func:`send_batch`, deletes
the rows whose outcome says ``gone`` and reschedules the ones with ``retry_after``.

Keeping this module free of Django imports lets it be tested against a local push service alone
(``tests/pushservice.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Neither package ships type information (pyproject.toml names them in a mypy override); their
# results are given a type where they enter our code, in _send_one and the _vapid_* helpers.
from py_vapid import Vapid02
from pywebpush import WebPusher

__all__ = [
    "PushMessage",
    "PushOutcome",
    "PushSession",
    "PushTarget",
    "Urgency",
    "send_batch",
    "send_batch_async",
    "vapid_keys_generate",
    "vapid_public_key",
]

Urgency = Literal["very-low", "low", "normal", "high"]

# RFC 8291 section 4: a push service only has to accept 4096 octets of body; one aes128gcm record
# of that size carries at most 3993 octets of plaintext (86 header + 16 tag + 1 delimiter).
MAX_PAYLOAD_BYTES: Final = 3993

# How long the VAPID token is valid. RFC 8292 allows at most 24 h; 12 h (pywebpush's default too)
# leaves room for clock skew between us and the push service, and a batch never lasts that long.
VAPID_TOKEN_LIFETIME: Final = 12 * 60 * 60

# RFC 6585 lets a 429 come without Retry-After; back off for a minute rather than hammer the service.
DEFAULT_RETRY_AFTER: Final = 60.0

_URGENCIES: Final[frozenset[str]] = frozenset({"very-low", "low", "normal", "high"})
# RFC 8030 section 5.4: a topic is at most 32 characters of the URL-safe base64 alphabet.
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_ERROR_BODY_CHARS: Final = 200


@dataclass(frozen=True)
class PushTarget:
    """One browser subscription, as stored from ``PushSubscription.toJSON()``."""

    id: int  # subscription row id, echoed back in the outcome
    endpoint: str
    p256dh: str  # base64url client public key (65-byte uncompressed P-256 point)
    auth: str  # base64url 16-byte auth secret
    # This target's own payload instead of the message's (a safety request carries each person's own link).
    payload: Mapping[str, object] | None = None
    # The VAPID public key the browser subscribed with ("": the current key); after a key rotation, a
    # subscription made with an older key is signed with that key's private half (see `vapid_previous_keys`).
    vapid_public_key: str = ""


@dataclass(frozen=True)
class PushMessage:
    """What to send. The payload is serialised once per batch and encrypted once per target."""

    payload: Mapping[str, object]
    ttl: int  # seconds the push service may hold the message for an offline device
    urgency: Urgency = "normal"
    # Replaces an undelivered message with the same topic on the push service, so a phone that
    # comes back online gets the latest state instead of a stack of stale ones.
    topic: str | None = None


@dataclass(frozen=True)
class PushOutcome:
    """What happened to one target. ``status`` is None when no HTTP answer came back."""

    target_id: int
    status: int | None
    ok: bool  # 2xx: the push service accepted the message
    gone: bool  # 404/410: the subscription is dead, the caller should delete it
    retry_after: float | None  # seconds, set on 429 only
    error: str | None


def vapid_keys_generate() -> tuple[str, str]:
    """Return a new VAPID key pair as ``(private, public)``.

    ``private`` is the base64url (no padding) raw 32-byte P-256 scalar; ``public`` is the base64url
    65-byte uncompressed point, which is what the browser wants as ``applicationServerKey``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    # to_bytes(32) keeps the leading zero byte that 1 in 256 scalars have; py_vapid and browsers
    # both expect exactly 32 bytes.
    private = _b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))
    return private, _public_point(key)


def vapid_public_key(private_key: str) -> str:
    """Derive the base64url public key (65-byte point) from a private key made by
    :func:`vapid_keys_generate`. Raises ValueError if the private key is not a valid P-256 scalar."""
    return _public_point(_vapid_private_key(private_key))


def send_batch(
    targets: Sequence[PushTarget],
    message: PushMessage,
    *,
    vapid_private_key: str,
    vapid_subject: str,
    vapid_previous_keys: Sequence[str] = (),
    concurrency: int = 50,
    timeout: float = 10.0,
) -> list[PushOutcome]:
    """Send one message to many subscriptions and return one outcome per target, in input order.

    One aiohttp session for the whole batch, one VAPID signature per push-service audience
    (``scheme://host[:port]`` of the endpoint) and signing key, aes128gcm encryption per target and
    at most ``concurrency`` requests in flight. ``timeout`` bounds each request, so the batch cannot hang.

    ``vapid_private_key`` is the current key. ``vapid_previous_keys`` are the private keys of earlier
    pairs, kept after a key rotation: a target whose ``vapid_public_key`` belongs to one of them is
    signed with it (a push service accepts only the key the browser subscribed with). A target with
    no ``vapid_public_key``, or one that matches no key given, is signed with the current key.

    Runs its own event loop, so it is meant for sync callers such as a Celery task; async code
    awaits :func:`send_batch_async` instead.

    A single target's failure (bad keys, refused connection, timeout, any HTTP status) never
    raises: it becomes that target's outcome. Raises ValueError, before any request is made, for
    mistakes that would fail every target alike: a bad VAPID key or subject, a payload that is not
    JSON or too large, an invalid TTL, urgency or topic, or a non-positive concurrency or timeout.
    """
    return asyncio.run(
        send_batch_async(
            targets,
            message,
            vapid_private_key=vapid_private_key,
            vapid_subject=vapid_subject,
            vapid_previous_keys=vapid_previous_keys,
            concurrency=concurrency,
            request_timeout=timeout,
        )
    )


async def send_batch_async(
    targets: Sequence[PushTarget],
    message: PushMessage,
    *,
    vapid_private_key: str,
    vapid_subject: str,
    vapid_previous_keys: Sequence[str] = (),
    concurrency: int = 50,
    request_timeout: float = 10.0,
    session: aiohttp.ClientSession | None = None,
) -> list[PushOutcome]:
    """The coroutine behind :func:`send_batch`, for callers that already run an event loop.

    ``request_timeout`` is :func:`send_batch`'s ``timeout``: it bounds each request, not the batch.
    ``session``: send over the caller's session (and its open connections) instead of a new one.
    """
    signers = _vapid_signers(vapid_private_key, vapid_previous_keys, vapid_subject)
    current = next(iter(signers))
    body = _serialise_payload(message.payload)
    own_bodies = [None if t.payload is None else _serialise_payload(t.payload) for t in targets]
    extra_headers = _message_headers(message)
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if request_timeout <= 0:
        raise ValueError(f"timeout must be positive, got {request_timeout}")
    if not targets:
        return []

    # Sign once per (audience, key) up front. A signature costs about a third of one target's encryption
    # (~50 vs ~130 us here), so signing per target would add a third to the CPU of a large batch,
    # and the push service would have to verify thousands of distinct tokens instead of one. After a key
    # rotation a batch has at most a few keys, so this stays a handful of signatures.
    expires = int(time.time()) + VAPID_TOKEN_LIFETIME
    authorization: dict[tuple[str, str], str | Exception] = {}
    signing_keys: list[str] = []
    for target in targets:
        key = _signing_key(target.vapid_public_key, signers, current)
        signing_keys.append(key)
        try:
            audience = _audience(target.endpoint)
        except ValueError:
            continue  # reported per target in _send_one
        if (audience, key) not in authorization:
            try:
                authorization[(audience, key)] = _vapid_authorization(
                    signers[key], audience=audience, subject=vapid_subject, expires=expires
                )
            except Exception as exc:
                # py_vapid raises its own VapidException, e.g. for an IPv6 literal host, which its
                # audience check rejects. Only the targets on that push service fail.
                authorization[(audience, key)] = exc

    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    outcomes: list[PushOutcome | None] = [None] * len(targets)
    # One shared iterator feeds a fixed pool of workers, so a batch of 10,000 makes
    # `concurrency` coroutines rather than 10,000 tasks waiting on a semaphore.
    pending = iter(range(len(targets)))

    async def worker(session: aiohttp.ClientSession) -> None:
        for index in pending:
            outcomes[index] = await _send_one(
                session,
                targets[index],
                body=own_bodies[index] or body,
                headers=extra_headers,
                authorization=authorization,
                signing_key=signing_keys[index],
                ttl=message.ttl,
                client_timeout=client_timeout,
            )

    workers = min(concurrency, len(targets))
    if session is not None:
        await asyncio.gather(*(worker(session) for _ in range(workers)))
    else:
        # The connector limit equals the worker count: a request never queues for a connection,
        # so its timeout measures the push service, not our own pool.
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as own:
            await asyncio.gather(*(worker(own) for _ in range(workers)))

    done = [outcome for outcome in outcomes if outcome is not None]
    if len(done) != len(targets):  # _send_one never raises, so every slot is filled
        raise RuntimeError(f"{len(targets) - len(done)} targets got no outcome")
    return done


class PushSession:
    """One event loop and one aiohttp session for many :func:`send_batch_async` calls from sync code, such as
    a task sending a large send batch after batch: the connections to the push services stay open between
    batches instead of being made again for each. Use as a context manager; not thread-safe."""

    def __init__(self, *, concurrency: int = 50, timeout: float = 10.0) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency, self.timeout = concurrency, timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    def __enter__(self) -> PushSession:
        self._loop = asyncio.new_event_loop()

        async def open_session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=self.concurrency)
            return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))

        self._session = self._loop.run_until_complete(open_session())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is None:
            return
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        self._loop.close()
        self._loop = self._session = None

    def send(
        self,
        targets: Sequence[PushTarget],
        message: PushMessage,
        *,
        vapid_private_key: str,
        vapid_subject: str,
        vapid_previous_keys: Sequence[str] = (),
        meanwhile: Callable[[], object] | None = None,
        every: float = 10.0,
    ) -> list[PushOutcome]:
        """:func:`send_batch` over this session's open connections. While the batch takes longer than `every`
        seconds, `meanwhile()` is called between slices of it, outside the event loop (so it may use the
        database): a caller keeps its claim on the batch fresh with it."""
        if self._loop is None or self._session is None:
            raise RuntimeError("use PushSession as a context manager")
        task = self._loop.create_task(
            send_batch_async(
                targets,
                message,
                vapid_private_key=vapid_private_key,
                vapid_subject=vapid_subject,
                vapid_previous_keys=vapid_previous_keys,
                concurrency=self.concurrency,
                request_timeout=self.timeout,
                session=self._session,
            )
        )
        while True:
            done, _pending = self._loop.run_until_complete(asyncio.wait({task}, timeout=every))
            if done:
                return task.result()
            if meanwhile is not None:
                meanwhile()


async def _send_one(
    session: aiohttp.ClientSession,
    target: PushTarget,
    *,
    body: bytes,
    headers: Mapping[str, str],
    authorization: Mapping[tuple[str, str], str | Exception],
    signing_key: str,
    ttl: int,
    client_timeout: aiohttp.ClientTimeout,
) -> PushOutcome:
    """Encrypt and POST to one target. Returns an outcome for every failure instead of raising."""

    def failed(error: str) -> PushOutcome:
        return PushOutcome(target_id=target.id, status=None, ok=False, gone=False, retry_after=None, error=error)

    try:
        audience = _audience(target.endpoint)
    except ValueError as exc:
        return failed(f"invalid endpoint: {exc}")
    auth_header = authorization[(audience, signing_key)]
    if isinstance(auth_header, Exception):
        return failed(f"cannot sign VAPID token for {audience}: {auth_header}")
    try:
        subscription = _subscription_info(target)
    except ValueError as exc:
        return failed(f"invalid subscription keys: {exc}")

    try:
        pusher = WebPusher(subscription, aiohttp_session=session)
        response = cast(
            aiohttp.ClientResponse,
            await pusher.send_async(
                body,
                {**headers, "Authorization": auth_header},
                ttl=ttl,
                content_encoding="aes128gcm",
                timeout=client_timeout,
            ),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return failed(f"network: {type(exc).__name__}: {exc}")
    except Exception as exc:
        # Broad on purpose: one target must never sink the batch.
        # pywebpush and http_ece raise bare ValueError/binascii.Error/their own exceptions for
        # keys that passed our checks but still cannot be used; name the type to tell them apart.
        return failed(f"{type(exc).__name__}: {exc}")

    status = response.status
    ok = 200 <= status < 300
    retry_after: float | None = None
    if status == 429:
        parsed = _parse_retry_after(response.headers.get("Retry-After"))
        retry_after = DEFAULT_RETRY_AFTER if parsed is None else parsed
    error: str | None = None
    if not ok:
        # pywebpush has already read the body, so this returns the cached text.
        text = await response.text(errors="replace")
        error = f"HTTP {status} {response.reason or ''}".rstrip()
        if text:
            error += f": {text[:_ERROR_BODY_CHARS]}"
    return PushOutcome(
        target_id=target.id,
        status=status,
        ok=ok,
        gone=status in (404, 410),
        retry_after=retry_after,
        error=error,
    )


def _serialise_payload(payload: Mapping[str, object]) -> bytes:
    try:
        # ensure_ascii=False: Japanese text is 3 bytes in UTF-8 but 6 as \uXXXX, and the size
        # limit is tight. allow_nan=False: the service worker's JSON.parse rejects NaN.
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {exc}") from exc
    if len(body) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload is {len(body)} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}")
    return body


def _message_headers(message: PushMessage) -> dict[str, str]:
    """Urgency and Topic headers; pywebpush has no parameters for them and passes headers through."""
    if message.ttl < 0:
        raise ValueError(f"ttl must not be negative, got {message.ttl}")
    if message.urgency not in _URGENCIES:
        raise ValueError(f"urgency must be one of {sorted(_URGENCIES)}, got {message.urgency!r}")
    headers: dict[str, str] = {"Urgency": message.urgency}
    if message.topic is not None:
        if not _TOPIC_RE.fullmatch(message.topic):
            raise ValueError(f"topic must be 1-32 URL-safe base64 characters, got {message.topic!r}")
        headers["Topic"] = message.topic
    return headers


def _audience(endpoint: str) -> str:
    """The VAPID ``aud`` for an endpoint: its origin, serialised as RFC 6454 does.

    Lower-case scheme and host, no user info, no default port -- a push service compares ``aud``
    with its own origin, so ``https://push.example:443/x`` must give ``https://push.example``.
    """
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"endpoint has no host: {endpoint!r}")
    port = parts.port  # raises ValueError for a port out of range or not a number
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _subscription_info(target: PushTarget) -> dict[str, object]:
    """Check the browser's keys and return them in the shape pywebpush wants.

    pywebpush's own check (``len != 65 and raw[0] != "\\x04"``) compares a byte with a str and so
    lets most bad keys through to fail deep inside http_ece; checking here gives a clear error.
    The keys go on correctly padded, because pywebpush's re-padding adds the wrong number of '='.
    """
    p256dh = _b64url_decode(target.p256dh, "p256dh")
    if len(p256dh) != 65 or p256dh[0] != 0x04:
        raise ValueError(f"p256dh must be a 65-byte uncompressed point, got {len(p256dh)} bytes")
    # Raises ValueError when the point is not on the curve, which an ECDH would only find later.
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    auth = _b64url_decode(target.auth, "auth")
    if len(auth) != 16:
        raise ValueError(f"auth must be 16 bytes, got {len(auth)}")
    return {
        "endpoint": target.endpoint,
        "keys": {
            "p256dh": base64.urlsafe_b64encode(p256dh).decode("ascii"),
            "auth": base64.urlsafe_b64encode(auth).decode("ascii"),
        },
    }


def _vapid_private_key(private_key: str) -> ec.EllipticCurvePrivateKey:
    raw = _b64url_decode(private_key, "VAPID private key")
    if len(raw) != 32:
        raise ValueError(f"VAPID private key must be a raw 32-byte scalar, got {len(raw)} bytes")
    # derive_private_key raises ValueError for 0 or a scalar not below the curve order.
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def _vapid_signers(current: str, previous: Sequence[str], subject: str) -> dict[str, Any]:
    """One py_vapid signer per key, by its base64url public key; the current key's comes first.
    Raises ValueError for a bad key (naming which, never showing it) or subject."""
    signers = {vapid_public_key(current): _vapid_signer(current, subject)}
    for number, private_key in enumerate(previous, start=1):
        try:
            public = vapid_public_key(private_key)
        except ValueError as exc:
            raise ValueError(f"previous VAPID key {number}: {exc}") from None
        signers.setdefault(public, _vapid_signer(private_key, subject))
    return signers


def _signing_key(subscribed_with: str, signers: Mapping[str, Any], current: str) -> str:
    """The public key to sign a target with: the one it subscribed with when we hold it, else the current one."""
    if not subscribed_with or subscribed_with in signers:
        return subscribed_with or current
    try:  # the same key written another way (padding, standard base64)
        normalised = _b64url_encode(_b64url_decode(subscribed_with, "VAPID public key"))
    except ValueError:
        return current
    return normalised if normalised in signers else current


def _vapid_signer(private_key: str, subject: str) -> Any:
    """A py_vapid signer for the batch. Raises ValueError for a bad key or subject."""
    # RFC 8292 section 2.1 asks for a mailto: or https: contact. py_vapid's stricter regex would
    # also reject good subjects such as an https URL with a path, so we check the scheme here and
    # run py_vapid in "no-strict" mode, where it only insists that a subject exists.
    if not subject.startswith(("mailto:", "https:")):
        raise ValueError(f"VAPID subject must be a mailto: or https: URL, got {subject!r}")
    return Vapid02(private_key=_vapid_private_key(private_key), conf={"no-strict": True})


def _vapid_authorization(vapid: Any, *, audience: str, subject: str, expires: int) -> str:
    """``vapid t=<jwt>,k=<public key>`` (RFC 8292 section 3), as py_vapid's Vapid02 formats it."""
    headers = vapid.sign({"aud": audience, "exp": expires, "sub": subject})
    return str(headers["Authorization"])


MAX_RETRY_AFTER = 86400.0


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date (RFC 9110 10.2.3).
    None when absent or unreadable; a date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Clamped: a push service's Retry-After of years must not overflow our date arithmetic.
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def _b64url_decode(value: str, what: str) -> bytes:
    """Decode base64url with or without padding. Raises ValueError naming ``what`` if it is not."""
    try:
        # Browsers send unpadded base64url; some clients send standard base64. Accept both, but
        # reject anything else instead of silently skipping the stray characters.
        data = value.strip().rstrip("=").replace("+", "-").replace("/", "_").encode("ascii")
        return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"{what} is not base64url: {exc}") from exc


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_point(key: ec.EllipticCurvePrivateKey) -> str:
    return _b64url_encode(
        key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
