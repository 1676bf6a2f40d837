"""The delivery status section of the incident page (配信状況), the people nobody could reach on the live board
(連絡がつかない人), and the escalation setting under the incident list.

Through the Django test client: the incident page embeds the first page of GET …/deliveries/ (the counts per
channel and state and a row per person) and draws it, department managers get their subtree only, and the
escalation setting is shown to those who manage incidents only. In a real headless Chromium against daphne:
the section on a phone (filtered to the failed deliveries with one tap on a count), the board of a department
manager on a laptop with the person whose push and mail failed and the call links, a bounce that arrives while
the board is open, and the setting saved from the incident list. Screenshots:
test-artifacts/screenshots/incident-delivery-status-phone.png (and -laptop), board-unreachable-laptop.png,
incidents-escalation-phone.png."""

from __future__ import annotations

import re
from typing import Any

import pytest

from consumers.bounces import Bounce, bounce_record
from consumers.models import BounceSource
from consumers.push import subscription_upsert
from directory.models import Department, Organization, Role, User
from safety import services
from safety.models import Delivery, DeliveryState, Incident, SafetySettings
from tests import factories
from tests.conftest import signed_in
from tests.frontend.test_safety_pages import page_data
from tests.pushservice import LocalPushService


def _named(user: User, last: str, first: str, **fields: Any) -> User:
    user.last_name, user.first_name = last, first
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()
    return user


def _department(org: Organization, code: str, name: str, parent: Department | None = None) -> Department:
    department = factories.department(org, code, parent)
    department.name = name
    department.save(update_fields=["name"])
    return department


# --- the pages through the test client ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_incident_page_draws_the_delivery_status_in_the_callers_scope(
    org: Organization, push_service: LocalPushService, smtp_server: Any
) -> None:
    hq = _department(org, "HQ", "本社")
    sales = _department(org, "SALES", "営業部", hq)
    plant = _department(org, "PLANT", "工場")
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,), department=hq)
    aoki = _named(factories.person(org, "aoki", department=sales, anpi_login_id="a1"), "青木", "怜奈")
    kato = _named(factories.person(org, "kato", department=plant, anpi_login_id="a2", email=""), "加藤", "翔")
    info = push_service.new_subscription(respond=410)
    subscription_upsert(user=kato, endpoint=info["endpoint"], p256dh=info["keys"]["p256dh"], auth=info["keys"]["auth"])
    incident = services.incident_create(organization=org, actor=crisis, title="震度6強", message="回答してください")
    dispatch = services.dispatch_create(incident=incident, actor=crisis, target={"mode": "everyone"})
    services.dispatch_run(dispatch_id=dispatch.id)

    response = signed_in(crisis).get(f"/acme/safety/incidents/{incident.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    data = page_data(response)
    assert data["deliveries"]["total"] == 2
    assert data["deliveries"]["counts"] == {"push": {"failed": 1}, "email": {"sent": 1}, "inapp": {"sent": 2}}
    assert data["delivery_states"] == ["queued", "sent", "delivered", "opened", "answered", "failed"]
    assert set(data["labels"]["delivery"]) == set(data["delivery_states"])
    assert data["labels"]["reason"]["push_gone"]
    section = html[html.index('id="delivery-status"') : html.index('id="tally-section"')]
    assert "青木" in section and "加藤" in section
    assert 'class="dchip dchip-failed"' in section and 'class="dchip dchip-sent"' in section
    assert "@" not in section

    manager = factories.person(org, "pm", roles=(Role.DEPARTMENT_MANAGER,), department=plant)
    scoped = signed_in(manager).get(f"/acme/safety/incidents/{incident.id}/")
    scoped_data = page_data(scoped)
    assert [r["person"]["id"] for r in scoped_data["deliveries"]["results"]] == [kato.id]
    assert aoki.id not in {r["person"]["id"] for r in scoped_data["results"]["results"]}
    assert scoped_data["deliveries"]["counts"] == {"push": {"failed": 1}, "inapp": {"sent": 1}}
    assert "青木" not in scoped.content.decode()


@pytest.mark.django_db
def test_the_escalation_setting_is_on_the_incident_list_for_those_who_manage_incidents(org: Organization) -> None:
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    SafetySettings.objects.create(organization=org, escalate_after_minutes=45)
    page = signed_in(crisis).get("/acme/safety/incidents/")
    html = page.content.decode()
    assert 'id="escalation-form"' in html and 'value="45"' in html
    assert page_data(page)["escalation"] == {"minutes": 45, "max": 1440}
    manager = factories.person(org, "manager", roles=(Role.MANAGER,))
    other = signed_in(manager).get("/acme/safety/incidents/")
    assert other.status_code == 200 and 'id="escalation-form"' not in other.content.decode()
    assert page_data(other)["escalation"] is None


# --- in Chromium --------------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_delivery_status_and_the_unreachable_on_the_board_in_chromium(
    push_service: LocalPushService, smtp_server: Any
) -> None:
    from playwright.sync_api import expect

    from tests.browser.test_board_browser import open_laptop
    from tests.browser.test_pwa import (
        SLUG,
        chromium,
        daphne_env,
        layout_problems,
        open_tab,
        person,
        sign_in,
        while_browsing,
    )
    from tests.services import daphne, require_postgres, require_redis

    require_postgres()
    require_redis()
    org = factories.organization(slug=SLUG, name="ACME株式会社")
    Organization.objects.filter(id=org.id).update(phone_url_scheme="tel:")
    hq = _department(org, "HQ", "東京本社")
    sales = _department(org, "SALES", "営業部", hq)
    plant = _department(org, "PLANT", "大阪工場")
    crisis = person(org, "crisis", last="危機", first="管理", roles=(Role.CRISIS_MANAGER,), department=hq)
    boss = person(org, "boss", last="営業", first="部長", roles=(Role.DEPARTMENT_MANAGER,), department=sales)

    def employee(login: str, last: str, first: str, department: Department, push: int | None, **fields: Any) -> User:
        user = person(org, login, last=last, first=first, department=department, anpi_login_id=f"anpi-{login}")
        _named(user, last, first, **fields)
        if push is not None:
            info = push_service.new_subscription(respond=push)
            subscription_upsert(
                user=user, endpoint=info["endpoint"], p256dh=info["keys"]["p256dh"], auth=info["keys"]["auth"]
            )
        return user

    gone = employee(
        "gone", "青木", "怜奈", sales, 410, email="", phone_number="03-1234-5678", mobile_phone_number="090-1111-2222"
    )
    bounced = employee(
        "bounced", "石川", "悠真", sales, None, email="yuma.ishikawa@example.com", mobile_phone_number="080-5555-6666"
    )
    fine = employee("fine", "上田", "美咲", sales, 201, email="misaki@example.com")
    employee("far", "江藤", "翔", plant, None, email="")  # neither channel: on the plant's board, not on sales'
    employee("ok", "小川", "陽菜", plant, 201, email="hina@example.com")
    incident = services.incident_create(
        organization=org, actor=crisis, title="【地震】震度6強 安否確認", message="全員、安否を回答してください。"
    )
    dispatch = services.dispatch_create(incident=incident, actor=crisis, target={"mode": "everyone"})
    services.dispatch_run(dispatch_id=dispatch.id)
    Delivery.objects.filter(incident=incident, person=fine, channel="push").update(state=DeliveryState.OPENED)
    assert Delivery.objects.get(incident=incident, person=gone, channel="push").state == DeliveryState.FAILED
    incident = Incident.objects.get(id=incident.id)

    with daphne(daphne_env()) as base, chromium() as browser:
        # 1. The crisis manager reads the delivery status on a phone and taps the failed push count.
        phone = open_tab(browser, base)
        sign_in(phone, crisis)
        page = phone.page
        page.goto(f"/{SLUG}/safety/incidents/{incident.id}/")
        section = page.locator("#delivery-status")
        expect(section.locator("h2")).to_have_text(re.compile("配信状況|Delivery status"))
        expect(page.locator("#delivery-body tr")).to_have_count(5)
        failed_push = section.locator('.count-filter[data-channel="push"][data-state="failed"]')
        expect(failed_push).to_contain_text("1")
        failed_push.click()
        expect(page.locator("#d-state")).to_have_value("failed")
        expect(page.locator("#delivery-body tr")).to_have_count(1)
        row = page.locator(f'#delivery-body tr[data-person="{gone.id}"]')
        expect(row.locator('td[data-channel="push"] .dchip.dchip-failed')).to_be_visible()
        expect(row.locator('td[data-channel="push"] .dchip-reason')).not_to_be_empty()
        assert "@" not in section.inner_text()
        assert layout_problems(page) == [], layout_problems(page)
        page.select_option("#d-state", "")
        page.select_option("#d-channel", "push")
        expect(page.locator("#delivery-body tr")).to_have_count(3)
        page.select_option("#d-channel", "")
        expect(page.locator("#delivery-body tr")).to_have_count(5)
        section.scroll_into_view_if_needed()
        phone.shot("incident-delivery-status-phone")
        laptop_tab = open_laptop(browser, base)
        sign_in(laptop_tab, crisis)
        laptop_tab.page.goto(f"/{SLUG}/safety/incidents/{incident.id}/")
        expect(laptop_tab.page.locator("#delivery-body tr")).to_have_count(5)
        laptop_tab.page.locator("#delivery-status").screenshot(path=str(_shot("incident-delivery-status-laptop")))

        # 2. The sales department manager's board: the person whose push is gone, with call links.
        board_tab = open_laptop(browser, base)
        sign_in(board_tab, boss)
        board = board_tab.page
        board.goto(f"/{SLUG}/safety/incidents/{incident.id}/board/")
        board.wait_for_function("() => document.getElementById('board')?.dataset.liveState === 'live'")
        card = board.locator("#board-unreachable-card")
        expect(card).to_be_visible()
        expect(card.locator("h2")).to_contain_text(re.compile("連絡がつかない人|Could not be reached"))
        item = card.locator(f'li.unr[data-person="{gone.id}"]')
        expect(item).to_contain_text("青木 怜奈")
        expect(item.locator("a.unr-call")).to_have_count(2)
        expect(item.locator("a.unr-call").first).to_have_attribute("href", "tel:0312345678")
        expect(card.locator("li.unr")).to_have_count(1)  # not the plant's person, not the ones reachable
        board.evaluate("window.notReloaded = true")

        # 3. Ishikawa's mail bounces while the board is open: the board lists him too, without a reload.
        while_browsing(
            bounce_record,
            bounces=[
                Bounce(
                    address="yuma.ishikawa@example.com",
                    action="failed",
                    status="5.1.1",
                    diagnostic="550 5.1.1 <yuma.ishikawa@example.com>: User unknown",
                )
            ],
            source=BounceSource.DSN,
        )
        expect(card.locator(f'li.unr[data-person="{bounced.id}"]')).to_be_visible(timeout=15_000)
        expect(card.locator("#board-unreachable-count")).to_have_text("2")
        assert board.evaluate("window.notReloaded") is True
        assert "@" not in card.inner_text()
        expect(card.locator(f'li.unr[data-person="{bounced.id}"] a.unr-call')).to_have_attribute(
            "href", "tel:08055556666"
        )
        board_tab.shot("board-unreachable-laptop")

        # 4. The escalation setting under the incident list, on a phone.
        page.goto(f"/{SLUG}/safety/incidents/")
        page.fill("#escalation-minutes", "2000")
        page.locator("#escalation-save").click()
        expect(page.locator("#escalation-error")).to_be_visible()
        page.fill("#escalation-minutes", "15")
        page.locator("#escalation-save").click()
        expect(page.locator("#escalation-status")).to_be_visible()
        expect(page.locator("#escalation-state")).to_contain_text("15")
        assert while_browsing(lambda: SafetySettings.objects.get(organization=org).escalate_after_minutes) == 15
        assert layout_problems(page) == [], layout_problems(page)
        page.locator("#escalation").scroll_into_view_if_needed()
        phone.shot("incidents-escalation-phone")
        assert phone.errors == [] and board_tab.errors == [] and laptop_tab.errors == []


def _shot(name: str) -> Any:
    from tests.browser.test_pwa import SHOTS

    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{name}.png"
