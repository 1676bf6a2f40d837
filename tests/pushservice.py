"""A local web push service for tests, strict enough that passing it means a real one would accept us.

What belongs here: an aiohttp app that plays the push service side of RFC 8030 on 127.0.0.1 -- it
hands out subscriptions (an endpoint plus the browser's keys), verifies each POST the way a push
service does (aes128gcm, TTL, VAPID JWT signature and claims), decrypts the payload with the
subscription's private key as the browser would, records it, and answers with a status the test
chose (201, 404, 410, 429 with Retry-After, ...). It runs in a background thread with its own event
loop, so sync code under test can block on it.

Use as a context manager or from a fixture::

    @pytest.fixture
    def push_service() -> Iterator[LocalPushService]:
        with LocalPushService() as service:
            yield service
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypedDict
from urllib.parse import urlsplit

# http_ece ships no type information (see the mypy override in pyproject.toml); only decrypt() is used.
import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["LocalPushService", "ReceivedPush", "SubscriptionInfo"]

# RFC 8292 section 2: a push service rejects a token that expires more than 24 h from now.
MAX_TOKEN_LIFETIME: Final = 24 * 60 * 60
_URGENCIES: Final = frozenset({"very-low", "low", "normal", "high"})
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")


class SubscriptionKeys(TypedDict):
    p256dh: str
    auth: str


class SubscriptionInfo(TypedDict):
    """The shape of ``PushSubscription.toJSON()`` in a browser, minus ``expirationTime``."""

    endpoint: str
    keys: SubscriptionKeys


@dataclass
class ReceivedPush:
    """A push that passed every check."""

    path: str
    headers: dict[str, str]  # names lower-cased
    payload: bytes  # decrypted plaintext
    jwt_claims: dict[str, Any]
    ttl: int
    urgency: str | None


@dataclass
class _Subscription:
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    status: int
    retry_after: str | None
    delay: float


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LocalPushService:
    """A push service on ``base_url`` (``http://127.0.0.1:<random port>``), running while entered.

    Every POST to a subscription's endpoint must carry ``Content-Encoding: aes128gcm``, a ``TTL``
    and ``Authorization: vapid t=<jwt>, k=<public key>`` whose ES256 signature verifies with ``k``,
    whose ``aud`` is this service's origin, whose ``exp`` is in the future but within 24 h and whose
    ``sub`` is a mailto: or https: URL; the body must decrypt with the subscription's keys. If
    ``vapid_public_key`` is set, ``k`` must also equal it (as for a subscription made with that
    ``applicationServerKey``).

    A request failing a check gets 400 (malformed request or body), 401 (missing or unverifiable
    VAPID, or the wrong key), 403 (claims that do not hold) or 404 (unknown endpoint); its reason
    goes to ``rejected`` and nothing goes to ``received``. A request passing them all is recorded
    in ``received`` -- even when the test told the endpoint to answer 410 or 429, so a test can
    still inspect what was sent -- and then answered with the configured status.
    """

    def __init__(self, *, vapid_public_key: str | None = None) -> None:
        self.vapid_public_key = vapid_public_key
        self.base_url = ""
        self.received: list[ReceivedPush] = []
        self.rejected: list[str] = []
        # One condition guards received, rejected and the subscriptions: the server thread
        # writes them while the test thread reads and waits.
        self._changed = threading.Condition()
        self._subscriptions: dict[str, _Subscription] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind a free port on 127.0.0.1 and serve from a background thread."""
        if self._loop is not None:
            raise RuntimeError("LocalPushService is already running")
        # Binding here rather than passing port 0 to aiohttp gives us the port without reaching
        # into the site's private server object.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="local-push-service", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)
        except BaseException:
            self.stop()
            sock.close()
            raise

    def stop(self) -> None:
        """Stop serving and join the thread. Safe to call twice."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def new_subscription(self, *, respond: int = 201, retry_after: str | None = None) -> SubscriptionInfo:
        """Make a subscription as a browser would: a fresh P-256 key pair and 16-byte auth
        secret, with an endpoint on this service that answers ``respond`` (plus Retry-After)."""
        if not self.base_url:
            raise RuntimeError("start the service before making subscriptions")
        private_key = ec.generate_private_key(ec.SECP256R1())
        auth_secret = secrets.token_bytes(16)
        path = f"/push/{secrets.token_urlsafe(16)}"
        with self._changed:
            self._subscriptions[path] = _Subscription(
                private_key=private_key,
                auth_secret=auth_secret,
                status=respond,
                retry_after=retry_after,
                delay=0.0,
            )
        public = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{self.base_url}{path}",
            "keys": {"p256dh": _b64url_encode(public), "auth": _b64url_encode(auth_secret)},
        }

    def set_response(self, endpoint: str, status: int, retry_after: str | None = None, *, delay: float = 0.0) -> None:
        """Change how an endpoint answers. ``delay`` holds the answer back that many seconds,
        which lets a test make early targets finish last."""
        path = urlsplit(endpoint).path
        with self._changed:
            subscription = self._subscriptions[path]
            subscription.status = status
            subscription.retry_after = retry_after
            subscription.delay = delay

    def wait_for(self, n: int, timeout: float = 10) -> list[ReceivedPush]:
        """Block until at least ``n`` pushes were received; return a copy of them all.
        Raises AssertionError, listing the rejections, if they do not arrive in time."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= n, timeout=timeout):
                raise AssertionError(
                    f"expected {n} pushes within {timeout}s, received {len(self.received)}; rejected: {self.rejected}"
                )
            return list(self.received)

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_post("/push/{token}", self._handle)
        # A short shutdown timeout: a test that left a request hanging should not hold up
        # teardown for aiohttp's default minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            with self._changed:
                subscription = self._subscriptions.get(request.path)
                if subscription is None:
                    raise _Rejected(404, "unknown endpoint")
                status, retry_after, delay = (
                    subscription.status,
                    subscription.retry_after,
                    subscription.delay,
                )
            push = self._verify(request, body, subscription)
        except _Rejected as rejection:
            with self._changed:
                self.rejected.append(f"{request.path}: {rejection.reason}")
                self._changed.notify_all()
            return web.Response(status=rejection.status, text=rejection.reason)

        if delay:
            await asyncio.sleep(delay)
        with self._changed:
            self.received.append(push)
            self._changed.notify_all()
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if status == 201:
            # RFC 8030 section 5: a created push message has a Location.
            headers["Location"] = f"{self.base_url}/message/{secrets.token_urlsafe(8)}"
        return web.Response(status=status, headers=headers)

    def _verify(self, request: web.Request, body: bytes, subscription: _Subscription) -> ReceivedPush:
        headers = {name.lower(): value for name, value in request.headers.items()}

        if headers.get("content-encoding", "").lower() != "aes128gcm":
            raise _Rejected(400, f"Content-Encoding must be aes128gcm, got {headers.get('content-encoding')!r}")
        ttl_text = headers.get("ttl", "")
        if not (ttl_text.isascii() and ttl_text.isdigit()):
            raise _Rejected(400, f"TTL must be a non-negative integer, got {ttl_text!r}")
        urgency = headers.get("urgency")
        if urgency is not None and urgency not in _URGENCIES:
            raise _Rejected(400, f"unknown Urgency {urgency!r}")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC_RE.fullmatch(topic):
            raise _Rejected(400, f"bad Topic {topic!r}")

        token, key = _parse_vapid_authorization(headers.get("authorization"))
        if self.vapid_public_key is not None and key != self.vapid_public_key:
            raise _Rejected(401, "VAPID key k= is not the subscription's applicationServerKey")
        claims = _verify_jwt(token, key)
        if claims.get("aud") != self.base_url:
            raise _Rejected(403, f"aud {claims.get('aud')!r} is not {self.base_url!r}")
        exp = claims.get("exp")
        now = time.time()
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise _Rejected(403, f"exp must be an integer, got {exp!r}")
        if exp <= now:
            raise _Rejected(403, "token expired")
        if exp > now + MAX_TOKEN_LIFETIME:
            raise _Rejected(403, "exp is more than 24 h ahead")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _Rejected(403, f"sub must be a mailto: or https: URL, got {sub!r}")

        try:
            payload = http_ece.decrypt(
                body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth_secret,
                version="aes128gcm",
            )
        except Exception as exc:  # http_ece raises several unrelated types for a bad body
            raise _Rejected(400, f"cannot decrypt body: {type(exc).__name__}: {exc}") from exc

        return ReceivedPush(
            path=request.path,
            headers=headers,
            payload=bytes(payload),
            jwt_claims=claims,
            ttl=int(ttl_text),
            urgency=urgency,
        )


def _parse_vapid_authorization(value: str | None) -> tuple[str, str]:
    """Split ``vapid t=<jwt>, k=<key>`` (spaces after the comma optional) into (jwt, key)."""
    if not value:
        raise _Rejected(401, "no Authorization header")
    scheme, _, params = value.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise _Rejected(401, f"Authorization scheme must be vapid, got {scheme!r}")
    parts: dict[str, str] = {}
    for item in params.split(","):
        name, sep, param = item.strip().partition("=")
        if not sep:
            raise _Rejected(401, f"malformed Authorization parameter {item!r}")
        parts[name.strip().lower()] = param.strip()
    if "t" not in parts or "k" not in parts:
        raise _Rejected(401, "Authorization needs both t= and k=")
    return parts["t"], parts["k"]


def _verify_jwt(token: str, key: str) -> dict[str, Any]:
    """Check an ES256 JWT against a base64url P-256 point and return its claims.

    JOSE signs with the raw 64-byte r||s; ``cryptography`` verifies DER, hence the conversion.
    """
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_b64url_decode(header_b64))
        if not isinstance(header, dict) or header.get("alg") != "ES256":
            raise _Rejected(401, f"JWT alg must be ES256, header is {header!r}")
        signature = _b64url_decode(signature_b64)
        if len(signature) != 64:
            raise _Rejected(401, f"ES256 signature must be 64 bytes, got {len(signature)}")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url_decode(key))
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(_b64url_decode(claims_b64))
    except InvalidSignature as exc:
        raise _Rejected(401, "JWT signature does not verify with k=") from exc
    except (ValueError, binascii.Error) as exc:  # JSONDecodeError and bad points are ValueErrors
        raise _Rejected(401, f"malformed JWT or key: {exc}") from exc
    if not isinstance(claims, dict):
        raise _Rejected(401, "JWT claims are not an object")
    return claims


def _b64url_decode(value: str) -> bytes:
    data = value.encode("ascii")
    return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
