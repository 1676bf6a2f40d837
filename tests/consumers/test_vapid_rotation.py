"""VAPID key rotation with a plan (issue 9): a new pair becomes current, a browser subscribed with the old one is
still reached (its pushes are signed with the key it subscribed with, which a push service insists on) until it
re-subscribes, and the old pair is kept exactly as long as a subscription uses it.

The push service here checks each subscription's own applicationServerKey (`KeyedPushService`), as FCM, Mozilla
and Apple do: a push signed with any other key is refused with 401, whatever its JWT says."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import translation

from consumers import vapid
from consumers.models import PushSubscription
from consumers.push import push_send
from consumers.tasks import vapid_prune as vapid_prune_task
from consumers.vapid import (
    VapidRotationRefused,
    vapid_keys,
    vapid_previous,
    vapid_private_for,
    vapid_prune,
    vapid_rotate,
    vapid_usage,
)
from consumers.webpush import PushMessage, PushTarget, send_batch, vapid_keys_generate, vapid_public_key
from tests import pushservice
from tests.pushservice import LocalPushService, SubscriptionInfo
from tests.services import ROOT, subprocess_env

pytestmark = pytest.mark.django_db


class KeyedPushService(LocalPushService):
    """The local push service, checking every push against the key its subscription was made with."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}

    def subscribe(self, application_server_key: str) -> SubscriptionInfo:
        subscription = self.new_subscription()
        self.keys[urlsplit(subscription["endpoint"]).path] = application_server_key
        return subscription

    def _verify(self, request: Any, body: bytes, subscription: Any) -> pushservice.ReceivedPush:
        _token, key = pushservice._parse_vapid_authorization(request.headers.get("Authorization"))
        if key != self.keys.get(request.path):
            raise pushservice._Rejected(401, "VAPID key k= is not the subscription's applicationServerKey")
        return super()._verify(request, body, subscription)

    def signed_with(self) -> dict[str, str]:
        """endpoint path -> the k= of the push that arrived there."""
        return {r.path: _vapid_k(r.headers["authorization"]) for r in self.received}


def _vapid_k(authorization: str) -> str:
    return pushservice._parse_vapid_authorization(authorization)[1]


@pytest.fixture
def keyed_push() -> Iterator[KeyedPushService]:
    with KeyedPushService() as service:
        yield service


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Path:
    """State-file mode in a directory of this test's own (the keys of the rest of the suite stay as they are)."""
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    settings.VAPID_PRIVATE_KEY = settings.VAPID_PUBLIC_KEY = settings.VAPID_PREVIOUS_PRIVATE_KEYS = ""
    return tmp_path / "vapid.json"


def post_subscription(client: Any, subscription: SubscriptionInfo, key: str | None) -> Any:
    body: dict[str, Any] = dict(subscription)
    if key is not None:
        body["vapid_public_key"] = key
    return client.post("/acme/api/push/subscriptions/", body, content_type="application/json")


def stored_previous(path: Path) -> list[str]:
    return [p["public"] for p in json.loads(path.read_text())["previous"]]


def private_keys_in(path: Path) -> list[str]:
    stored = json.loads(path.read_text())
    return [stored["private"], *(p["private"] for p in stored["previous"])]


# --- The plan, end to end --------------------------------------------------------------------------------


def test_rotation_keeps_old_subscriptions_reachable_until_they_resubscribe(
    state, org, employee, employee_client, keyed_push
):
    old = vapid_keys()
    phone = keyed_push.subscribe(old.public)
    assert post_subscription(employee_client, phone, old.public).status_code == 201

    new, retired = vapid_rotate()
    assert retired == old and vapid_keys() == new and new.public != old.public
    assert [k.public for k in vapid_previous()] == [old.public]
    assert stored_previous(state) == [old.public]
    assert oct(state.stat().st_mode & 0o777) == "0o600"

    # A browser subscribing now uses the new key; one that does not say which key it used counts as the current.
    laptop = keyed_push.subscribe(new.public)
    tablet = keyed_push.subscribe(new.public)
    assert post_subscription(employee_client, laptop, new.public).status_code == 201
    assert post_subscription(employee_client, tablet, None).status_code == 201
    assert dict(PushSubscription.objects.values_list("endpoint", "vapid_public_key")) == {
        phone["endpoint"]: old.public,
        laptop["endpoint"]: new.public,
        tablet["endpoint"]: new.public,
    }

    # One batch, each push signed with its own subscription's key: all three verify and arrive.
    ids = list(PushSubscription.objects.values_list("id", flat=True))
    assert push_send(subscription_ids=ids, notification={"title": "訓練"}, ttl=60, urgency="high") == []
    keyed_push.wait_for(3)
    assert keyed_push.rejected == []
    path = {
        name: urlsplit(s["endpoint"]).path for name, s in (("phone", phone), ("laptop", laptop), ("tablet", tablet))
    }
    assert keyed_push.signed_with() == {
        path["phone"]: old.public,
        path["laptop"]: new.public,
        path["tablet"]: new.public,
    }
    assert not PushSubscription.objects.filter(failure_count__gt=0).exists()

    # The old key stays while the phone's subscription uses it...
    assert vapid_prune() == []
    assert [k.public for k in vapid_previous()] == [old.public]
    # ...the phone re-subscribes with the new key on its next visit (app.js: POST the new one, DELETE the old one)...
    renewed = keyed_push.subscribe(new.public)
    assert post_subscription(employee_client, renewed, new.public).status_code == 201
    gone = employee_client.delete(
        "/acme/api/push/subscriptions/", {"endpoint": phone["endpoint"]}, content_type="application/json"
    )
    assert gone.status_code == 200 and gone.json() == {"deleted": 1}
    # ...and then the old key is dropped: from the file too, and nothing signs with it any more.
    assert vapid_prune() == [old]
    assert vapid_previous() == [] and stored_previous(state) == []
    assert old.private not in private_keys_in(state)
    assert vapid_private_for(old.public) == new.private


def test_a_safety_check_after_a_rotation_reaches_phones_subscribed_with_either_key(state, org, keyed_push):
    from directory.models import Role
    from safety import services
    from safety.models import Delivery
    from tests import factories

    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    people = [factories.person(org, f"p{n}", anpi_login_id=f"anpi-p{n}") for n in range(2)]
    old = vapid_keys()
    before = keyed_push.subscribe(old.public)
    PushSubscription.objects.create(
        user=people[0],
        endpoint=before["endpoint"],
        p256dh=before["keys"]["p256dh"],
        auth=before["keys"]["auth"],
        vapid_public_key=old.public,
    )
    new, _old = vapid_rotate()
    after = keyed_push.subscribe(new.public)
    PushSubscription.objects.create(
        user=people[1],
        endpoint=after["endpoint"],
        p256dh=after["keys"]["p256dh"],
        auth=after["keys"]["auth"],
        vapid_public_key=new.public,
    )
    incident = services.incident_create(
        organization=org, actor=crisis, title="地震", message="安否を回答してください。"
    )
    dispatch = services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [p.id for p in people]}
    )
    services.dispatch_run(dispatch_id=dispatch.id)
    keyed_push.wait_for(2)
    assert keyed_push.rejected == []
    assert keyed_push.signed_with() == {
        urlsplit(before["endpoint"]).path: old.public,
        urlsplit(after["endpoint"]).path: new.public,
    }
    assert set(Delivery.objects.filter(channel="push").values_list("state", flat=True)) == {"sent"}


def test_a_push_signed_with_the_wrong_key_is_refused_by_the_push_service(state, org, employee, keyed_push):
    """The check the test above relies on: without the old key, a push to an old subscription does not arrive."""
    old = vapid_keys()
    phone = keyed_push.subscribe(old.public)
    target = PushTarget(
        id=1,
        endpoint=phone["endpoint"],
        p256dh=phone["keys"]["p256dh"],
        auth=phone["keys"]["auth"],
        vapid_public_key=old.public,
    )
    new, _old = vapid_rotate()
    message = PushMessage(payload={"title": "t"}, ttl=60)
    [refused] = send_batch([target], message, vapid_private_key=new.private, vapid_subject="mailto:ops@example.com")
    assert refused.status == 401 and "applicationServerKey" in (refused.error or "")
    [sent] = send_batch(
        [target],
        message,
        vapid_private_key=new.private,
        vapid_previous_keys=[old.private],
        vapid_subject="mailto:ops@example.com",
    )
    assert sent.ok and keyed_push.signed_with() == {urlsplit(phone["endpoint"]).path: old.public}


def test_one_signature_per_push_service_and_key(keyed_push):
    """Signing stays cheap after a rotation: one token per (audience, key), not one per target."""
    current, older = vapid_keys_generate(), vapid_keys_generate()
    current_public, older_public = vapid_public_key(current[0]), vapid_public_key(older[0])
    targets = []
    for n, key in enumerate([older_public, current_public, older_public, "", current_public]):
        sub = keyed_push.subscribe(key or current_public)
        targets.append(
            PushTarget(
                id=n,
                endpoint=sub["endpoint"],
                p256dh=sub["keys"]["p256dh"],
                auth=sub["keys"]["auth"],
                vapid_public_key=key,
            )
        )
    outcomes = send_batch(
        targets,
        PushMessage(payload={"title": "t"}, ttl=60),
        vapid_private_key=current[0],
        vapid_previous_keys=[older[0]],
        vapid_subject="mailto:ops@example.com",
    )
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert len({r.headers["authorization"] for r in keyed_push.received}) == 2


def test_prune_counts_subscriptions_without_a_key_as_the_current_keys(state, org, employee):
    old = vapid_keys()
    PushSubscription.objects.create(user=employee, endpoint="https://push.example/a", p256dh="x", auth="y")
    vapid_rotate()
    usage = vapid_usage()
    assert [(u.current, u.subscriptions) for u in usage.keys] == [(True, 1), (False, 0)]
    assert vapid_prune_task.delay().get() == 1  # the hourly beat task
    assert vapid_previous() == [] and vapid_private_for(old.public) == vapid_keys().private


def test_two_rotations_keep_both_earlier_keys_until_each_is_unused(state, org, employee):
    first = vapid_keys()
    PushSubscription.objects.create(
        user=employee, endpoint="https://push.example/1", p256dh="x", auth="y", vapid_public_key=first.public
    )
    second, _ = vapid_rotate()
    PushSubscription.objects.create(
        user=employee, endpoint="https://push.example/2", p256dh="x", auth="y", vapid_public_key=second.public
    )
    third, _ = vapid_rotate()
    assert [k.public for k in vapid_previous()] == [second.public, first.public]  # newest first
    assert {vapid_private_for(k.public) for k in (first, second, third)} == {
        first.private,
        second.private,
        third.private,
    }
    PushSubscription.objects.filter(endpoint="https://push.example/2").delete()
    assert vapid_prune() == [second]
    assert [k.public for k in vapid_previous()] == [first.public]


# --- Every process notices a rotation ---------------------------------------------------------------------


def test_a_rotation_by_another_process_is_noticed_without_restarting(state, monkeypatch):
    before = vapid_keys()
    reads = []
    real_read = vapid._keyring_from_file

    def counted_read(path: Path) -> vapid.VapidKeyring:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(vapid, "_keyring_from_file", counted_read)
    for _ in range(200):
        assert vapid_keys() == before
    assert reads == [], "an unchanged file is not read again"

    result = subprocess.run(
        [sys.executable, "manage.py", "vapid_rotate"],
        cwd=ROOT,
        env=subprocess_env(STATE_DIR=str(state.parent)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    after = vapid_keys()
    assert after.public != before.public and after.public in result.stdout
    assert vapid_previous() == [before] and len(reads) == 1
    # The command printed public keys only.
    assert not any(private in result.stdout + result.stderr for private in private_keys_in(state))


# --- Keys from the environment ------------------------------------------------------------------------------


@pytest.fixture
def env_keys(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    current, older, oldest = (vapid_keys_generate()[0] for _ in range(3))
    settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY = current, ""
    settings.VAPID_PREVIOUS_PRIVATE_KEYS = f"{older}, {oldest},{current}"  # the current one listed too: ignored
    return {"current": current, "older": older, "oldest": oldest}


def test_env_mode_uses_previous_keys_and_refuses_to_rotate_with_the_plan(env_keys, org, employee, caplog):
    current, older, oldest = env_keys["current"], env_keys["older"], env_keys["oldest"]
    assert vapid_keys().private == current
    assert [k.private for k in vapid_previous()] == [older, oldest]
    assert vapid_private_for(vapid_public_key(oldest)) == oldest
    assert vapid_private_for("") == vapid_private_for("BAAA") == current

    with pytest.raises(VapidRotationRefused) as refused:
        vapid_rotate()
    plan = refused.value.plan
    assert "VAPID_PREVIOUS_PRIVATE_KEYS" in plan and "VAPID_PRIVATE_KEY" in plan
    with pytest.raises(CommandError) as command:
        call_command("vapid_rotate")
    assert "Not rotated" in str(command.value)
    assert vapid_keys().private == current  # nothing changed
    assert not (Path(os.environ["STATE_DIR"]) / "vapid.json").exists()

    # Prune cannot edit the environment: it names the unused keys (by public key) for the operator.
    PushSubscription.objects.create(
        user=employee, endpoint="https://push.example/1", p256dh="x", auth="y", vapid_public_key=vapid_public_key(older)
    )
    with caplog.at_level(logging.INFO, logger="consumers.vapid"):
        assert [k.private for k in vapid_prune()] == [oldest]
    assert [k.private for k in vapid_previous()] == [older, oldest]
    out = StringIO()
    call_command("vapid_status", stdout=out)
    status = out.getvalue()
    assert vapid_public_key(older) in status and "used by 1 subscriptions" in status
    assert "Remove them from VAPID_PREVIOUS_PRIVATE_KEYS" in status
    for private in env_keys.values():
        assert private not in plan + str(command.value) + status + caplog.text


def test_a_bad_previous_key_stops_start_up_naming_the_variable_not_the_value(env_keys, settings):
    settings.VAPID_PREVIOUS_PRIVATE_KEYS = f"{env_keys['older']},not-a-key-at-all"
    with pytest.raises(ImproperlyConfigured) as error:
        vapid_keys()
    assert "VAPID_PREVIOUS_PRIVATE_KEYS: key 2" in str(error.value)
    assert env_keys["older"] not in str(error.value) and "not-a-key-at-all" not in str(error.value)


# --- Subscribing with a key ---------------------------------------------------------------------------------


def test_a_subscription_made_with_an_unknown_key_is_refused_and_stores_nothing(state, org, employee_client, keyed_push):
    stranger = vapid_public_key(vapid_keys_generate()[0])
    response = post_subscription(employee_client, keyed_push.subscribe(stranger), stranger)
    assert response.status_code == 400 and response.json()["code"] == "vapid_key_unknown"
    with translation.override("ja"):  # the person's language
        assert response.json()["message"] == translation.gettext(
            "This browser subscribed with a key that is no longer in use. Turn notifications on again."
        )
    assert not PushSubscription.objects.exists()


def test_a_subscription_made_with_a_previous_key_is_kept_and_shown_as_pending_renewal(
    state, org, employee_client, keyed_push
):
    old = vapid_keys()
    vapid_rotate()
    # Padded standard base64 is the same key.
    padded = old.public.replace("-", "+").replace("_", "/") + "="
    response = post_subscription(employee_client, keyed_push.subscribe(old.public), padded)
    assert response.status_code == 201, response.content
    assert PushSubscription.objects.get().vapid_public_key == old.public
    [listed] = employee_client.get("/acme/api/push/subscriptions/").json()
    assert listed["key_renewal_pending"] is True and listed["failing"] is False


def test_status_and_rotate_commands_say_what_to_do_next(state, org, employee):
    out = StringIO()
    call_command("vapid_status", stdout=out)
    assert "Previous keys: none." in out.getvalue() and "vapid_rotate" in out.getvalue()
    old = vapid_keys()
    PushSubscription.objects.create(
        user=employee, endpoint="https://push.example/1", p256dh="x", auth="y", vapid_public_key=old.public
    )
    out = StringIO()
    call_command("vapid_rotate", stdout=out)
    assert f"Kept as a previous key: {old.public} (1 subscriptions use it)" in out.getvalue()
    out = StringIO()
    call_command("vapid_status", stdout=out)
    status = out.getvalue()
    assert f"Current public key: {vapid_keys().public}" in status and old.public in status
    assert "1 subscriptions still use earlier keys" in status
    out = StringIO()
    call_command("vapid_rotate", "--prune", stdout=out)
    assert "Nothing to prune" in out.getvalue()
    PushSubscription.objects.all().delete()
    out = StringIO()
    call_command("vapid_rotate", "--prune", stdout=out)
    assert "Dropped" in out.getvalue() and old.public in out.getvalue()
    assert not any(private in out.getvalue() for private in private_keys_in(state))
