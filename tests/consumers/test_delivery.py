"""The delivery core end to end: subscriptions over REST, web push through a local push service that
decrypts and verifies, and e-mail batches over one SMTP connection in each reader's language."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from consumers.mail import MailMessage, mail_for_people, mail_send_batch
from consumers.models import PushSubscription
from consumers.push import push_send
from consumers.vapid import vapid_keys
from directory.services import notice_post
from tests import factories

pytestmark = pytest.mark.django_db


def subscribe(client, subscription) -> dict:
    response = client.post(
        "/acme/api/push/subscriptions/",
        subscription,
        content_type="application/json",
        HTTP_USER_AGENT="Mozilla/5.0 Test",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_vapid_public_key_is_served_and_private_key_never_is(org, employee_client):
    body = employee_client.get("/acme/api/push/key/").json()
    assert body == {"public_key": vapid_keys().public}
    assert vapid_keys().private not in repr(vapid_keys())


def test_subscribe_list_and_unsubscribe(org, employee, employee_client, push_service):
    sub = push_service.new_subscription()
    created = subscribe(employee_client, sub)
    again = subscribe(employee_client, sub)  # the same browser again: one row
    assert created["id"] == again["id"]
    listed = employee_client.get("/acme/api/push/subscriptions/").json()
    assert [s["user_agent"] for s in listed] == ["Mozilla/5.0 Test"]
    gone = employee_client.delete(
        "/acme/api/push/subscriptions/", {"id": created["id"]}, content_type="application/json"
    )
    assert gone.json() == {"deleted": 1}
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "ftp://x/push", "keys": {"p256dh": "x", "auth": "y"}},
        {"endpoint": "http://example.com/push", "keys": {"p256dh": "x", "auth": "y"}},
        {"endpoint": "https://push.example/1", "keys": {"p256dh": "short", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},
        {"endpoint": "https://push.example/1"},
        "not an object",
    ],
)
def test_bad_subscriptions_get_a_clear_400_and_store_nothing(org, employee_client, body):
    response = employee_client.post("/acme/api/push/subscriptions/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] in {"invalid", "bad_endpoint", "bad_keys"}
    assert not PushSubscription.objects.exists()


def test_notice_reaches_subscribed_browsers_encrypted_and_signed(
    org, admin, employee, employee_client, push_service, django_capture_on_commit_callbacks
):
    subscribe(employee_client, push_service.new_subscription())
    subscribe(employee_client, push_service.new_subscription())  # a second device
    with django_capture_on_commit_callbacks(execute=True):
        notice_post(author=admin, title="避難訓練", body="10時に集合\n詳細は後ほど")
    received = push_service.wait_for(2)
    payloads = [json.loads(r.payload) for r in received]
    assert all(p["title"] == "避難訓練" and p["body"] == "10時に集合" and p["url"] == "/acme/home/" for p in payloads)
    assert {r.urgency for r in received} == {"normal"} and all(r.ttl > 0 for r in received)
    assert received[0].headers["authorization"] == received[1].headers["authorization"]  # one signature per batch
    assert all(s.last_success_at for s in PushSubscription.objects.all())


def test_gone_subscriptions_are_removed_and_429_is_honoured(org, employee, push_service):
    subs = {
        status: push_service.new_subscription(respond=status, retry_after="120" if status == 429 else None)
        for status in (201, 404, 410, 429)
    }
    rows = {
        status: PushSubscription.objects.create(
            user=employee, endpoint=s["endpoint"], p256dh=s["keys"]["p256dh"], auth=s["keys"]["auth"]
        )
        for status, s in subs.items()
    }
    retry = push_send(
        subscription_ids=[r.id for r in rows.values()], notification={"title": "t"}, ttl=60, urgency="high"
    )
    assert retry == [rows[429].id]
    assert set(PushSubscription.objects.values_list("id", flat=True)) == {rows[201].id, rows[429].id}
    delayed = PushSubscription.objects.get(id=rows[429].id)
    assert timezone.now() + timedelta(seconds=100) < delayed.retry_after < timezone.now() + timedelta(seconds=130)
    # until Retry-After has passed nothing more is sent to it, but it is handed back to be retried, not lost
    before = len(push_service.received)
    assert push_send(subscription_ids=[rows[429].id], notification={"title": "t"}, ttl=60, urgency="high") == [
        rows[429].id
    ]
    assert len(push_service.received) == before


def test_absurd_retry_after_is_clamped_not_a_crash(org, employee, push_service):
    sub = push_service.new_subscription(respond=429, retry_after="100000000000000")
    row = PushSubscription.objects.create(
        user=employee, endpoint=sub["endpoint"], p256dh=sub["keys"]["p256dh"], auth=sub["keys"]["auth"]
    )
    assert push_send(subscription_ids=[row.id], notification={"title": "t"}, ttl=60, urgency="normal") == [row.id]
    row.refresh_from_db()
    assert row.retry_after < timezone.now() + timedelta(days=1, minutes=1)


def test_one_refused_recipient_does_not_stop_the_batch(org, smtp_server, monkeypatch):
    from aiosmtpd.smtp import SMTP

    real_rcpt = SMTP.smtp_RCPT

    async def refuse_one(self, arg):
        if arg and "refused@" in arg:
            await self.push("550 no such user")
            return None
        return await real_rcpt(self, arg)

    monkeypatch.setattr(SMTP, "smtp_RCPT", refuse_one)
    messages = [MailMessage(to=[f"{name}@example.com"], subject="s", body="b") for name in ("a", "refused", "c", "d")]
    assert mail_send_batch(messages) == 3
    assert sorted(m["To"] for m in smtp_server.messages) == ["a@example.com", "c@example.com", "d@example.com"]


def test_push_endpoints_on_this_machine_or_private_network_are_refused(org, employee_client, settings):
    settings.PUSH_ALLOW_LOOPBACK_HTTP = False
    keys = {"p256dh": "B" + "A" * 86, "auth": "A" * 22}
    for endpoint in ("https://127.0.0.1/push", "https://10.0.0.8/push", "https://localhost/x", "http://127.0.0.1/x"):
        response = employee_client.post(
            "/acme/api/push/subscriptions/", {"endpoint": endpoint, "keys": keys}, content_type="application/json"
        )
        assert response.status_code == 400 and response.json()["code"] == "bad_endpoint", endpoint


def test_mail_batch_uses_one_connection_and_each_readers_language(org, smtp_server):
    ja = factories.person(org, "ja", language="ja", email="ja@example.com")
    en = factories.person(org, "en", language="en", email="en@example.com")
    en.email2 = "en-home@example.com"
    from django.utils.translation import gettext

    messages = mail_for_people([ja, en], lambda p: (gettext("Reset your password"), gettext("Password")))
    assert mail_send_batch(messages) == 2
    assert len(smtp_server.sessions) == 1
    by_to = {m["To"]: m for m in smtp_server.messages}
    assert by_to["ja@example.com"]["Subject"] == "パスワードの再設定"
    assert by_to["en@example.com, en-home@example.com"]["Subject"] == "Reset your password"
    assert by_to["ja@example.com"].get_body(("plain",)).get_content().strip() == "パスワード"
    assert mail_send_batch([]) == 0


def test_mail_with_html_still_has_a_plain_text_part(org, smtp_server):
    mail_send_batch([MailMessage(to=["x@example.com"], subject="s", body="plain", html="<p>rich</p>")])
    (message,) = smtp_server.messages
    assert message.get_body(("plain",)).get_content().strip() == "plain"
    assert "rich" in message.get_body(("html",)).get_content()
