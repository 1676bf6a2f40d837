"""The delivery status of an incident, GET /<slug>/api/safety/incidents/<id>/deliveries/.

Every person asked, with a row per channel: queued, sent (the push service or SMTP server accepted it),
delivered, opened, answered or failed, with its times, round and error (an address in an error is masked). The
counts per channel and state, filters by state, channel, department subtree and name, paging; department managers
see their own subtree only, in the counts too; anyone else gets 403 or 404; bad parameters are a 400, never a 500.

Real parts: PostgreSQL, the local push service and aiosmtpd."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from directory.importer import user_search_text
from directory.models import Organization, Role, User
from safety.api_deliveries import DeliveryFilter, delivery_status, error_mask
from safety.models import Delivery, DeliveryState, Incident
from tests import factories
from tests.conftest import signed_in
from tests.pushservice import LocalPushService
from tests.safety.conftest import Tree, answer, incident_make, safety_person, send, subscribe

pytestmark = pytest.mark.django_db


class Sent:
    """本社 › 営業部 › 東日本営業課, and 工場. One incident sent to five people, on their channels:

    - 青木 (東日本, push + mail): push delivered (the service worker said so), mail opened;
    - 石川 (東日本, push that answers 410, mail): push failed, mail sent;
    - 上田 (営業部, mail only): answered;
    - 江藤 (工場, push + mail): mail bounced (an address in the error), push sent;
    - 小川 (工場, nothing but in-app), asked by a second send that has not run: in-app sent only."""

    def __init__(self, org: Organization, crisis: User, tree: Tree, push: LocalPushService) -> None:
        def person(login: str, last: str, kana: str, department: Any, **kw: Any) -> User:
            user = safety_person(org, login, department=department, **kw)
            user.last_name, user.first_name, user.last_name_kana = last, "太郎", kana
            user.search_text = user_search_text(user)
            user.save()
            return user

        self.aoki = person("aoki", "青木", "アオキ", tree.east)
        self.ishikawa = person("ishikawa", "石川", "イシカワ", tree.east)
        self.ueda = person("ueda", "上田", "ウエダ", tree.sales)
        self.eto = person("eto", "江藤", "エトウ", tree.plant, email="eto.private@example.net")
        subscribe(push, self.aoki)
        subscribe(push, self.ishikawa, respond=410)
        subscribe(push, self.eto)
        self.incident = incident_make(org, crisis)
        send(self.incident, crisis)
        self.ogawa = person("ogawa", "小川", "オガワ", tree.plant, email="")
        send(self.incident, crisis, {"mode": "chosen", "person_ids": [self.ogawa.id]}, run=False)
        now = timezone.now()
        mine = Delivery.objects.filter(incident=self.incident)
        mine.filter(person=self.aoki, channel="push").update(state=DeliveryState.DELIVERED, delivered_at=now)
        mine.filter(person=self.aoki, channel="email").update(state=DeliveryState.OPENED, opened_at=now)
        mine.filter(person=self.eto, channel="email").update(
            state=DeliveryState.FAILED, error="bounced: 5.1.1 550 5.1.1 <eto.private@example.net>: User unknown"
        )
        answer(self.incident, self.ueda)
        self.incident.refresh_from_db()


@pytest.fixture
def sent(org: Organization, crisis: User, tree: Tree, push_service: LocalPushService, smtp_server: Any) -> Sent:
    return Sent(org, crisis, tree, push_service)


def url(incident: Incident, query: str = "") -> str:
    return f"/acme/api/safety/incidents/{incident.id}/deliveries/{query}"


def names(body: dict[str, Any]) -> list[str]:
    return [r["person"]["name"].split()[0] for r in body["results"]]


def test_every_person_and_channel_with_its_state(sent: Sent, crisis_client: Client) -> None:
    response = crisis_client.get(url(sent.incident))
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 5 and (body["limit"], body["offset"]) == (50, 0)
    assert names(body) == [
        "上田",
        "青木",
        "石川",
        "江藤",
        "小川",
    ]  # directory order (営業部 › 東日本 › 工場), then kana
    rows = {r["person"]["id"]: r for r in body["results"]}
    aoki = rows[sent.aoki.id]["channels"]
    assert {c: d["state"] for c, d in aoki.items()} == {"push": "delivered", "email": "opened", "inapp": "sent"}
    assert aoki["push"]["delivered_at"] and aoki["email"]["opened_at"] and aoki["push"]["round"] == 1
    assert aoki["push"]["sent_at"] and aoki["push"]["error"] == "" and aoki["push"]["reason"] is None
    ishikawa = rows[sent.ishikawa.id]["channels"]
    assert ishikawa["push"]["state"] == "failed" and ishikawa["push"]["error"].startswith("410")
    assert ishikawa["push"]["reason"] == "push_gone" and ishikawa["email"]["state"] == "sent"
    assert {d["state"] for d in rows[sent.ueda.id]["channels"].values()} == {"answered"}
    assert rows[sent.ueda.id]["status"] == "safe" and "push" not in rows[sent.ueda.id]["channels"]
    eto = rows[sent.eto.id]["channels"]
    assert eto["email"]["state"] == "failed" and eto["email"]["reason"] == "email_bounced"
    # The address in the bounce is masked; nothing in the answer holds one.
    assert eto["email"]["error"] == "bounced: 5.1.1 550 5.1.1 *** User unknown"
    assert "@" not in response.content.decode()
    assert rows[sent.ogawa.id]["channels"] == {"inapp": rows[sent.ogawa.id]["channels"]["inapp"]}
    assert rows[sent.ogawa.id]["channels"]["inapp"]["state"] == "sent"
    # The counts per channel and state.
    assert body["counts"] == {
        "push": {"delivered": 1, "failed": 1, "sent": 1},
        "email": {"opened": 1, "sent": 1, "answered": 1, "failed": 1},
        "inapp": {"sent": 4, "answered": 1},
    }


def test_a_queued_delivery_and_a_later_round(sent: Sent, crisis: User, crisis_client: Client) -> None:
    send(sent.incident, crisis, {"mode": "chosen", "person_ids": [sent.aoki.id]}, run=False)
    body = crisis_client.get(url(sent.incident, f"?q={sent.aoki.login_id}")).json()
    [row] = body["results"]
    assert {c: (d["state"], d["round"]) for c, d in row["channels"].items()} == {
        "push": ("queued", 2),
        "email": ("queued", 2),
        "inapp": ("sent", 2),
    }
    assert row["channels"]["push"]["sent_at"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?state=failed", ["石川", "江藤"]),
        ("?state=failed&channel=push", ["石川"]),
        ("?state=failed&channel=email", ["江藤"]),
        ("?state=answered", ["上田"]),
        ("?state=delivered", ["青木"]),
        ("?state=opened&channel=push", []),
        ("?channel=push", ["青木", "石川", "江藤"]),
        ("?channel=inapp&state=sent", ["青木", "石川", "江藤", "小川"]),
        ("?state=queued", []),
        ("?department={sales}", ["上田", "青木", "石川"]),  # with the subtree
        ("?department={east}&state=failed", ["石川"]),
        ("?department={plant}", ["江藤", "小川"]),
        ("?q=イシカワ", ["石川"]),
        ("?q=いしかわ", ["石川"]),
        ("?q=nobody-by-this-name", []),
        ("?limit=2", ["上田", "青木"]),
        ("?limit=2&offset=2", ["石川", "江藤"]),
        ("?limit=2&offset=4", ["小川"]),
        ("?offset=99", []),
    ],
)
def test_filters_and_paging(sent: Sent, tree: Tree, crisis_client: Client, query: str, expected: list[str]) -> None:
    query = query.format(sales=tree.sales.id, east=tree.east.id, plant=tree.plant.id)
    response = crisis_client.get(url(sent.incident, query))
    assert response.status_code == 200, response.content
    body = response.json()
    assert names(body) == expected
    if "limit" not in query and "offset" not in query:
        assert body["total"] == len(expected)
    # The counts are the whole incident's (the caller's scope), whatever the filter.
    assert sum(sum(c.values()) for c in body["counts"].values()) == 12


@pytest.mark.parametrize(
    "query",
    [
        "?state=nonsense",
        "?state=FAILED",
        "?channel=sms",
        "?department=abc",
        "?department=-1",
        "?department=1.5",
        "?department=" + "9" * 19,
        "?department=%EF%BC%91",  # a full-width 1
    ],
)
def test_a_bad_filter_is_a_400(sent: Sent, crisis_client: Client, query: str) -> None:
    response = crisis_client.get(url(sent.incident, query))
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "bad_filter" and response.json()["message"]


@pytest.mark.parametrize(
    "query",
    [
        "?limit=abc",
        "?limit=-5",
        "?limit=0",
        "?limit=100000",
        "?offset=-1",
        "?offset=" + "9" * 18,
        "?offset=" + "9" * 40,
        "?q=" + "x" * 5000,
        "?q=%F0%9F%98%80",
        "?department=0",
        "?department=999999999999999999",
        "?state=&channel=&department=&q=",
    ],
)
def test_odd_parameters_are_never_a_500(sent: Sent, crisis_client: Client, query: str) -> None:
    response = crisis_client.get(url(sent.incident, query))
    assert response.status_code == 200, response.content
    assert response.json()["limit"] <= 200


@pytest.mark.parametrize("query", ["?q=%00%00", "?q=a%00b", "?state=%00", "?department=1%00"])
def test_a_nul_character_is_refused_before_the_database_sees_it(sent: Sent, crisis_client: Client, query: str) -> None:
    response = crisis_client.get(url(sent.incident, query))
    assert response.status_code == 400 and response.json()["message"]


def test_department_managers_see_their_subtree_only(sent: Sent, org: Organization, tree: Tree) -> None:
    sales_manager = signed_in(factories.person(org, "sm", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales))
    body = sales_manager.get(url(sent.incident)).json()
    assert names(body) == ["上田", "青木", "石川"]
    assert body["counts"] == {
        "push": {"delivered": 1, "failed": 1},
        "email": {"opened": 1, "sent": 1, "answered": 1},
        "inapp": {"sent": 2, "answered": 1},
    }
    # A department outside their subtree shows nobody (as the results do), and a filter cannot widen it.
    assert sales_manager.get(url(sent.incident, f"?department={tree.plant.id}")).json()["results"] == []
    assert names(sales_manager.get(url(sent.incident, "?q=江藤")).json()) == []
    plant_manager = signed_in(factories.person(org, "pm", roles=(Role.DEPARTMENT_MANAGER,), department=tree.plant))
    assert names(plant_manager.get(url(sent.incident)).json()) == ["江藤", "小川"]
    # A department manager without a department sees nobody.
    lost = signed_in(factories.person(org, "lost", roles=(Role.DEPARTMENT_MANAGER,)))
    assert lost.get(url(sent.incident)).json() == {"counts": {}, "total": 0, "limit": 50, "offset": 0, "results": []}


def test_who_may_read_it(sent: Sent, org: Organization, other_org: Organization) -> None:
    assert Client().get(url(sent.incident)).status_code in (401, 403)
    employee = signed_in(factories.person(org, "emp"))
    assert employee.get(url(sent.incident)).status_code == 403
    manager = signed_in(factories.person(org, "mgr", roles=(Role.MANAGER,)))
    assert manager.get(url(sent.incident)).json()["total"] == 5
    admin = signed_in(factories.person(org, "anpi", roles=(Role.ADMIN_ANPI,)))
    assert admin.get(url(sent.incident)).status_code == 200
    stranger = signed_in(factories.person(other_org, "boss", roles=(Role.CRISIS_MANAGER,)))
    assert stranger.get(url(sent.incident)).status_code == 404
    assert stranger.get(f"/globex/api/safety/incidents/{sent.incident.id}/deliveries/").status_code == 404
    crisis_client = signed_in(User.objects.get(login_id="crisis", organization=org))
    assert crisis_client.get("/acme/api/safety/incidents/999999/deliveries/").status_code == 404
    assert crisis_client.post(url(sent.incident), {}).status_code == 405


def test_one_page_is_four_queries(sent: Sent, django_assert_num_queries: Any) -> None:
    """The counts, the number matching, the page, and the page's deliveries: whatever the page size."""
    with django_assert_num_queries(4):
        body = delivery_status(incident=sent.incident, scope=None, filters=DeliveryFilter(state="failed"))
    assert body["total"] == 2


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("", ""),
        ("410 Gone", "410 Gone"),
        ("bounced: 5.1.1 550 <a.b@c.example>: User unknown", "bounced: 5.1.1 550 *** User unknown"),
        ("refused: x@y.example, z@w.example", "refused: *** ***"),
        ("to someone@", "to ***"),
    ],
)
def test_addresses_in_errors_are_masked(error: str, shown: str) -> None:
    assert error_mask(error) == shown
