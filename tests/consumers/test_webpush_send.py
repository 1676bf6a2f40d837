"""consumers.webpush against a local push service: what a phone would receive, and what the caller
is told about each subscription. No Django and no database: the sending core stands alone."""

from __future__ import annotations

import base64
import email.utils
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from py_vapid.jwt import decode as jwt_decode
from pywebpush import WebPusher

from consumers import webpush
from consumers.webpush import (
    PushMessage,
    PushOutcome,
    PushTarget,
    send_batch,
    vapid_keys_generate,
    vapid_public_key,
)
from tests.pushservice import LocalPushService, SubscriptionInfo

pytestmark = pytest.mark.timeout(30)

SUBJECT = "mailto:safety-ops@example.com"
PAYLOAD = {
    "type": "safety.request",
    "title": "安否確認のお願い",
    "body": "震度6弱の地震が発生しました。無事かどうか回答してください。",
    "url": "/answer/8f3a?lang=ja",
    "incident": 42,
}


@pytest.fixture
def push_service() -> Iterator[LocalPushService]:
    with LocalPushService() as service:
        yield service


@pytest.fixture
def second_push_service() -> Iterator[LocalPushService]:
    with LocalPushService() as service:
        yield service


@pytest.fixture
def vapid() -> tuple[str, str]:
    return vapid_keys_generate()


def target(subscription: SubscriptionInfo, id: int) -> PushTarget:
    return PushTarget(
        id=id,
        endpoint=subscription["endpoint"],
        p256dh=subscription["keys"]["p256dh"],
        auth=subscription["keys"]["auth"],
    )


def send(
    targets: list[PushTarget], vapid: tuple[str, str], message: PushMessage | None = None, **kwargs: Any
) -> list[PushOutcome]:
    return send_batch(
        targets,
        message or PushMessage(payload=PAYLOAD, ttl=3600),
        vapid_private_key=vapid[0],
        vapid_subject=SUBJECT,
        **kwargs,
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- what the phone receives ---------------------------------------------------------------------


def test_payload_arrives_decrypted_and_equal_to_the_json(
    push_service: LocalPushService, vapid: tuple[str, str]
) -> None:
    targets = [target(push_service.new_subscription(), id=i) for i in range(3)]

    outcomes = send(targets, vapid)

    assert [(o.ok, o.status, o.gone, o.error) for o in outcomes] == [(True, 201, False, None)] * 3
    received = push_service.wait_for(3)
    assert [json.loads(push.payload) for push in received] == [PAYLOAD] * 3
    # Serialised once: every phone gets the same plaintext bytes, in compact UTF-8 JSON.
    assert {push.payload for push in received} == {
        json.dumps(PAYLOAD, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    }
    # ...but encrypted per target: each subscription decrypted its own, distinct, ciphertext.
    assert len({push.path for push in received}) == 3


def test_ttl_urgency_and_topic_headers_arrive(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    subscription = push_service.new_subscription()
    message = PushMessage(payload=PAYLOAD, ttl=86_400, urgency="high", topic="incident-42")

    [outcome] = send([target(subscription, id=1)], vapid, message)

    assert outcome.ok
    [push] = push_service.wait_for(1)
    assert push.ttl == 86_400
    assert push.urgency == "high"
    assert push.headers["topic"] == "incident-42"
    assert push.headers["content-encoding"] == "aes128gcm"


def test_default_urgency_is_normal_and_no_topic_is_sent(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    send([target(push_service.new_subscription(), id=1)], vapid, PushMessage(payload=PAYLOAD, ttl=0))

    [push] = push_service.wait_for(1)
    assert push.ttl == 0
    assert push.urgency == "normal"
    assert "topic" not in push.headers


# --- VAPID ---------------------------------------------------------------------------------------


def test_jwt_verifies_with_our_public_key_and_names_the_push_service(
    push_service: LocalPushService, vapid: tuple[str, str]
) -> None:
    # As for a subscription made with our applicationServerKey: the service checks k= against it.
    push_service.vapid_public_key = vapid[1]
    before = int(time.time())

    [outcome] = send([target(push_service.new_subscription(), id=1)], vapid)

    assert outcome.ok, outcome.error
    [push] = push_service.wait_for(1)
    assert push.jwt_claims["aud"] == push_service.base_url
    assert push.jwt_claims["sub"] == SUBJECT
    assert before + 12 * 3600 <= push.jwt_claims["exp"] <= int(time.time()) + 12 * 3600
    # A second, independent verifier (py_vapid's) agrees with the local service's.
    scheme, params = push.headers["authorization"].split(" ", 1)
    parts = dict(param.strip().split("=", 1) for param in params.split(","))
    assert scheme == "vapid"
    assert parts["k"] == vapid[1]
    assert jwt_decode(parts["t"], parts["k"]) == push.jwt_claims


def test_one_signature_per_audience_per_batch(
    push_service: LocalPushService, second_push_service: LocalPushService, vapid: tuple[str, str]
) -> None:
    # Interleave two push services (different ports, so different audiences) in one batch.
    targets = [target((push_service if i % 2 else second_push_service).new_subscription(), id=i) for i in range(40)]

    outcomes = send(targets, vapid)

    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    first = push_service.wait_for(20)
    second = second_push_service.wait_for(20)
    # ECDSA signatures are randomised, so identical headers mean one signature, not twenty.
    assert len({push.headers["authorization"] for push in first}) == 1
    assert len({push.headers["authorization"] for push in second}) == 1
    assert first[0].headers["authorization"] != second[0].headers["authorization"]
    assert {push.jwt_claims["aud"] for push in first} == {push_service.base_url}
    assert {push.jwt_claims["aud"] for push in second} == {second_push_service.base_url}
    assert push_service.base_url != second_push_service.base_url


def test_a_new_batch_signs_again(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    send([target(push_service.new_subscription(), id=1)], vapid)
    send([target(push_service.new_subscription(), id=2)], vapid)

    first, second = push_service.wait_for(2)
    assert first.headers["authorization"] != second.headers["authorization"]


def test_one_client_session_per_batch(
    push_service: LocalPushService,
    second_push_service: LocalPushService,
    vapid: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sessions_made = 0
    original_init = aiohttp.ClientSession.__init__

    def counting_init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        nonlocal sessions_made
        sessions_made += 1
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting_init)
    targets = [target(push_service.new_subscription(), id=i) for i in range(15)]
    targets += [target(second_push_service.new_subscription(), id=i) for i in range(15, 30)]

    outcomes = send(targets, vapid)

    assert sum(o.ok for o in outcomes) == 30
    assert sessions_made == 1


# --- what the caller is told ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "ok", "gone"),
    [
        (201, True, False),
        (202, True, False),
        (400, False, False),
        (404, False, True),
        (410, False, True),
        (413, False, False),
        (500, False, False),
    ],
)
def test_status_decides_ok_and_gone(
    push_service: LocalPushService, vapid: tuple[str, str], status: int, ok: bool, gone: bool
) -> None:
    [outcome] = send([target(push_service.new_subscription(respond=status), id=7)], vapid)

    assert (outcome.target_id, outcome.status, outcome.ok, outcome.gone) == (7, status, ok, gone)
    assert outcome.retry_after is None
    assert (outcome.error is None) is ok
    if not ok:
        assert outcome.error is not None and outcome.error.startswith(f"HTTP {status}")


def _http_date(seconds_from_now: int) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(None, 60.0, id="absent"),
        pytest.param("soon", 60.0, id="unreadable"),
        pytest.param(_http_date(-3600), 0.0, id="date-in-the-past"),
    ],
)
def test_429_retry_after(
    push_service: LocalPushService, vapid: tuple[str, str], retry_after: str | None, expected: float
) -> None:
    subscription = push_service.new_subscription(respond=429, retry_after=retry_after)

    [outcome] = send([target(subscription, id=3)], vapid)

    assert (outcome.status, outcome.ok, outcome.gone) == (429, False, False)
    assert outcome.retry_after == expected


def test_429_retry_after_http_date_gives_the_delta(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    subscription = push_service.new_subscription(respond=429, retry_after=_http_date(300))

    [outcome] = send([target(subscription, id=3)], vapid)

    # HTTP dates have whole seconds, and a little time passes while sending.
    assert outcome.retry_after == pytest.approx(300, abs=3)


@pytest.mark.parametrize(
    ("p256dh", "auth"),
    [
        pytest.param("not base64 at all!", None, id="p256dh-not-base64"),
        pytest.param(b64url(b"\x04" + b"\x01" * 30), None, id="p256dh-too-short"),
        pytest.param(b64url(b"\x04" + b"\x00" * 64), None, id="p256dh-not-on-curve"),
        pytest.param(b64url(b"\x02" + b"\x00" * 64), None, id="p256dh-not-uncompressed"),
        pytest.param("", None, id="p256dh-empty"),
        pytest.param(None, b64url(b"\x00" * 8), id="auth-too-short"),
        pytest.param(None, "日本語", id="auth-not-ascii"),
    ],
)
def test_garbage_subscription_keys_fail_that_target_only(
    push_service: LocalPushService, vapid: tuple[str, str], p256dh: str | None, auth: str | None
) -> None:
    good_before = target(push_service.new_subscription(), id=1)
    real = push_service.new_subscription()  # None above means "keep this subscription's real key"
    bad = PushTarget(
        id=2,
        endpoint=real["endpoint"],
        p256dh=real["keys"]["p256dh"] if p256dh is None else p256dh,
        auth=real["keys"]["auth"] if auth is None else auth,
    )
    good_after = target(push_service.new_subscription(), id=3)

    outcomes = send([good_before, bad, good_after], vapid)

    assert [o.target_id for o in outcomes] == [1, 2, 3]
    assert outcomes[0].ok and outcomes[2].ok
    assert (outcomes[1].ok, outcomes[1].status, outcomes[1].gone) == (False, None, False)
    assert outcomes[1].error is not None and outcomes[1].error.startswith("invalid subscription keys")
    assert {push.path for push in push_service.wait_for(2)} == {
        good_before.endpoint.removeprefix(push_service.base_url),
        good_after.endpoint.removeprefix(push_service.base_url),
    }
    assert len(push_service.received) == 2


def test_well_formed_keys_of_another_browser_are_refused_by_the_push_service(
    push_service: LocalPushService, vapid: tuple[str, str]
) -> None:
    # A valid point, but not the one the endpoint's owner can decrypt with: only the push service
    # (or the phone) can notice, and that must still come back as an outcome, not an exception.
    subscription = push_service.new_subscription()
    stranger = push_service.new_subscription()
    mixed = PushTarget(
        id=9,
        endpoint=subscription["endpoint"],
        p256dh=stranger["keys"]["p256dh"],
        auth=stranger["keys"]["auth"],
    )

    [outcome] = send([mixed], vapid)

    assert (outcome.status, outcome.ok, outcome.gone) == (400, False, False)
    assert outcome.error is not None and "cannot decrypt" in outcome.error
    assert push_service.received == []


def test_outcomes_come_back_in_input_order(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    statuses = [201, 410, 202, 404, 429, 201, 500, 201, 410, 201, 201, 404]
    ids = [501, 7, 88, 12, 3000, 4, 65, 19, 2, 777, 31, 9]
    targets = []
    for index, (status, id) in enumerate(zip(statuses, ids, strict=True)):
        subscription = push_service.new_subscription(respond=status)
        if index < 3:
            # The first targets answer last, so completion order is not input order.
            push_service.set_response(subscription["endpoint"], status, delay=0.4 - index * 0.1)
        targets.append(target(subscription, id=id))

    outcomes = send(targets, vapid, concurrency=20)

    assert [o.target_id for o in outcomes] == ids
    assert [o.status for o in outcomes] == statuses
    assert [o.gone for o in outcomes] == [s in (404, 410) for s in statuses]
    # The service saw the slow ones last, which is what made the order worth checking.
    assert [push.path for push in push_service.wait_for(12)][-3:] == [
        t.endpoint.removeprefix(push_service.base_url) for t in reversed(targets[:3])
    ]


def test_concurrency_of_one_still_sends_everything_in_order(
    push_service: LocalPushService, vapid: tuple[str, str]
) -> None:
    targets = [target(push_service.new_subscription(), id=i) for i in range(5)]

    outcomes = send(targets, vapid, concurrency=1)

    assert [(o.target_id, o.ok) for o in outcomes] == [(i, True) for i in range(5)]
    # One worker sends one at a time, so the service receives them in input order too.
    assert [push.path for push in push_service.wait_for(5)] == [
        t.endpoint.removeprefix(push_service.base_url) for t in targets
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_refused_connection_is_an_outcome_with_no_status(
    push_service: LocalPushService, vapid: tuple[str, str]
) -> None:
    good = target(push_service.new_subscription(), id=1)
    dead = PushTarget(id=2, endpoint=f"http://127.0.0.1:{_free_port()}/push/x", p256dh=good.p256dh, auth=good.auth)

    outcomes = send([dead, good], vapid)

    assert (outcomes[0].status, outcomes[0].ok, outcomes[0].gone) == (None, False, False)
    assert outcomes[0].error is not None and outcomes[0].error.startswith("network: ")
    assert outcomes[1].ok


def test_a_push_service_that_never_answers_times_out(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    good = target(push_service.new_subscription(), id=1)
    # A listening socket nobody accepts from: the kernel completes the handshake, then silence.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        stuck = PushTarget(
            id=2,
            endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}/push/x",
            p256dh=good.p256dh,
            auth=good.auth,
        )
        started = time.monotonic()

        outcomes = send([stuck, good], vapid, timeout=0.5)

        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert (outcomes[0].status, outcomes[0].ok) == (None, False)
    assert outcomes[0].error is not None and "Timeout" in outcomes[0].error
    assert outcomes[1].ok


def test_wrong_vapid_key_is_refused_with_401(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    push_service.vapid_public_key = vapid_keys_generate()[1]  # the subscription was made with another key

    [outcome] = send([target(push_service.new_subscription(), id=1)], vapid)

    assert (outcome.status, outcome.ok, outcome.gone) == (401, False, False)
    assert push_service.received == []
    assert len(push_service.rejected) == 1 and "applicationServerKey" in push_service.rejected[0]


def test_unusable_endpoint_fails_that_target_only(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    good = target(push_service.new_subscription(), id=1)
    bad = [
        PushTarget(id=2, endpoint="ftp://push.example/x", p256dh=good.p256dh, auth=good.auth),
        PushTarget(id=3, endpoint="not a url", p256dh=good.p256dh, auth=good.auth),
        # py_vapid refuses to sign for an IPv6 literal audience; only this target may suffer.
        PushTarget(id=4, endpoint="http://[::1]:9/push/x", p256dh=good.p256dh, auth=good.auth),
    ]

    outcomes = send([*bad, good], vapid)

    assert [o.target_id for o in outcomes] == [2, 3, 4, 1]
    assert [o.ok for o in outcomes] == [False, False, False, True]
    assert all(o.status is None and o.error for o in outcomes[:3])


def test_empty_batch_sends_nothing(vapid: tuple[str, str]) -> None:
    assert send([], vapid) == []


@pytest.mark.parametrize(
    ("message", "subject", "match"),
    [
        # One byte over: '{"x":""}' is 8 bytes of JSON around the string.
        (PushMessage(payload={"x": "a" * (webpush.MAX_PAYLOAD_BYTES - 7)}, ttl=60), SUBJECT, "limit"),
        (PushMessage(payload={"x": "あ" * 1400}, ttl=60), SUBJECT, "limit"),
        (PushMessage(payload={"x": float("nan")}, ttl=60), SUBJECT, "JSON"),
        (PushMessage(payload={"x": object()}, ttl=60), SUBJECT, "JSON"),
        (PushMessage(payload=PAYLOAD, ttl=-1), SUBJECT, "ttl"),
        (PushMessage(payload=PAYLOAD, ttl=60, topic="has spaces"), SUBJECT, "topic"),
        (PushMessage(payload=PAYLOAD, ttl=60, topic="x" * 33), SUBJECT, "topic"),
        # An urgency outside the Literal, as untyped callers (JSON, settings) could pass.
        (PushMessage(payload=PAYLOAD, ttl=60, urgency="urgent"), SUBJECT, "urgency"),
        (PushMessage(payload=PAYLOAD, ttl=60), "ops@example.com", "subject"),
    ],
)
def test_batch_wide_mistakes_raise_before_anything_is_sent(
    push_service: LocalPushService, vapid: tuple[str, str], message: PushMessage, subject: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        send_batch(
            [target(push_service.new_subscription(), id=1)],
            message,
            vapid_private_key=vapid[0],
            vapid_subject=subject,
        )
    assert push_service.received == [] and push_service.rejected == []


def test_https_subject_with_a_path_is_accepted(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    # py_vapid's strict check would refuse this RFC 8292-valid contact; we must not.
    [outcome] = send_batch(
        [target(push_service.new_subscription(), id=1)],
        PushMessage(payload=PAYLOAD, ttl=60),
        vapid_private_key=vapid[0],
        vapid_subject="https://safety.example.co.jp/contact",
    )

    assert outcome.ok, outcome.error
    assert push_service.wait_for(1)[0].jwt_claims["sub"] == "https://safety.example.co.jp/contact"


def test_largest_allowed_payload_is_delivered(push_service: LocalPushService, vapid: tuple[str, str]) -> None:
    filler = webpush.MAX_PAYLOAD_BYTES - len(b'{"x":""}')
    message = PushMessage(payload={"x": "a" * filler}, ttl=60)

    [outcome] = send([target(push_service.new_subscription(), id=1)], vapid, message)

    assert outcome.ok, outcome.error
    [push] = push_service.wait_for(1)
    assert len(push.payload) == webpush.MAX_PAYLOAD_BYTES
    # RFC 8030 only promises 4096 bytes of body; one aes128gcm record must fit in it.
    assert int(push.headers["content-length"]) <= 4096


@pytest.mark.parametrize(
    ("endpoint", "audience"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        (
            "https://updates.push.services.mozilla.com:443/wpush/v2/x",
            "https://updates.push.services.mozilla.com",
        ),
        ("HTTPS://Web.Push.Apple.com/QGx", "https://web.push.apple.com"),
        ("https://user:pw@push.example:8443/p", "https://push.example:8443"),
        ("http://127.0.0.1:8080/push/x", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:80/push/x", "http://127.0.0.1"),
    ],
)
def test_audience_is_the_endpoint_origin(endpoint: str, audience: str) -> None:
    assert webpush._audience(endpoint) == audience


# --- VAPID keys ----------------------------------------------------------------------------------


def test_vapid_public_key_matches_generate() -> None:
    private, public = vapid_keys_generate()

    assert vapid_public_key(private) == public
    raw_private = base64.urlsafe_b64decode(private + "=" * (-len(private) % 4))
    raw_public = base64.urlsafe_b64decode(public + "=" * (-len(public) % 4))
    assert (len(raw_private), len(raw_public), raw_public[0]) == (32, 65, 0x04)
    assert "=" not in private + public
    # py_vapid, reading the private key the way pywebpush callers do, derives the same point.
    py_vapid_public = Vapid02.from_raw(private.encode()).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert b64url(py_vapid_public) == public
    assert vapid_keys_generate() != (private, public)


@pytest.mark.parametrize(
    "private",
    ["", "abc!", b64url(b"\x01" * 31), b64url(b"\x00" * 32), b64url(b"\xff" * 32)],
    ids=["empty", "not-base64", "short", "zero", "above-curve-order"],
)
def test_vapid_public_key_rejects_bad_private_keys(private: str) -> None:
    with pytest.raises(ValueError):
        vapid_public_key(private)


# --- the local push service itself: its checks are what make the tests above mean something ------


def _post(
    service: LocalPushService,
    *,
    claims: dict[str, Any] | None = None,
    authorization: str | None = None,
    content_encoding: str = "aes128gcm",
    subscription: SubscriptionInfo | None = None,
) -> requests.Response:
    """Send one push by hand with pywebpush's sync path, with whatever VAPID header we like."""
    subscription = subscription or service.new_subscription()
    if authorization is None:
        signer = Vapid02.from_raw(vapid_keys_generate()[0].encode())
        signer.conf = {"no-strict": True}
        default = {"aud": service.base_url, "exp": int(time.time()) + 600, "sub": SUBJECT}
        authorization = signer.sign({**default, **(claims or {})})["Authorization"]
    headers = {"Authorization": authorization} if authorization else {}
    response: requests.Response = WebPusher(subscription).send(
        b'{"x":1}', headers, ttl=60, content_encoding=content_encoding, timeout=5
    )
    return response


def test_local_push_service_accepts_a_correct_push(push_service: LocalPushService) -> None:
    response = _post(push_service)

    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{push_service.base_url}/message/")
    assert push_service.wait_for(1)[0].payload == b'{"x":1}'


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"claims": {"aud": "https://fcm.googleapis.com"}}, 403, "aud"),
        ({"claims": {"exp": int(time.time()) - 10}}, 403, "expired"),
        ({"claims": {"exp": int(time.time()) + 25 * 3600}}, 403, "24 h"),
        ({"claims": {"sub": "ops@example.com"}}, 403, "sub"),
        ({"authorization": ""}, 401, "no Authorization"),
        ({"authorization": "WebPush abc.def.ghi"}, 401, "scheme"),
        ({"content_encoding": "aesgcm"}, 400, "Content-Encoding"),
    ],
    ids=["wrong-aud", "expired", "too-far-ahead", "bad-sub", "no-auth", "old-scheme", "old-encoding"],
)
def test_local_push_service_rejects_what_a_real_one_would(
    push_service: LocalPushService, kwargs: dict[str, Any], status: int, reason: str
) -> None:
    response = _post(push_service, **kwargs)

    assert response.status_code == status
    assert push_service.received == []
    assert len(push_service.rejected) == 1 and reason in push_service.rejected[0]


def test_local_push_service_rejects_a_signature_from_another_key(push_service: LocalPushService) -> None:
    signer = Vapid02.from_raw(vapid_keys_generate()[0].encode())
    claims = {"aud": push_service.base_url, "exp": int(time.time()) + 600, "sub": SUBJECT}
    token = signer.sign(claims)["Authorization"].split("t=", 1)[1].split(",", 1)[0]
    # A valid token, presented with someone else's public key.
    forged = f"vapid t={token}, k={vapid_keys_generate()[1]}"

    response = _post(push_service, authorization=forged)

    assert response.status_code == 401
    assert push_service.received == []
    assert "does not verify" in push_service.rejected[0]
