"""The operators' health page in Django admin, in Chromium against a real daphne: signed in as a site operator,
the admin index links to it, and it shows every check with a failing one marked."""

from __future__ import annotations

import pickle
import time

import pytest
import redis

from tests.browser.test_pwa import chromium, daphne_env, open_tab, person, sign_in, while_browsing
from tests.services import daphne, require_redis

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def test_an_operator_opens_system_health_from_the_admin_index(org) -> None:
    operator = person(org, "operator")
    operator.is_staff = operator.is_superuser = True
    operator.save(update_fields=["is_staff", "is_superuser"])
    env = daphne_env()
    # daphne's cache is Redis (Django pickles the float stamp): make the outbox relay look stopped, and the scan fresh.
    client = redis.Redis.from_url(require_redis())
    prefix = env["CACHE_KEY_PREFIX"]
    client.set(f"{prefix}:1:health:beat:safety_scan", pickle.dumps(time.time()))
    client.set(f"{prefix}:1:health:beat:outbox_relay", pickle.dumps(time.time() - 900))
    try:
        with daphne(env) as base, chromium() as browser:
            tab = open_tab(browser, base, viewport="desktop")
            sign_in(tab, operator)
            page = tab.page
            page.goto("/admin/")
            page.locator("#system-health a").click()
            page.wait_for_url("**/admin/health/")
            rows = page.locator("#health-checks tbody tr")
            names = while_browsing(lambda: [rows.nth(i).locator("th").inner_text() for i in range(rows.count())])
            assert "database" in names and "beat outbox_relay" in names and "beat safety_scan" in names
            assert page.locator("tr.health-fail th").all_inner_texts() == ["beat outbox_relay"]
            assert page.locator("tr.health-ok", has_text="beat safety_scan").count() == 1
            assert page.locator("#health-status").get_attribute("class") == "error"
            tab.shot("admin_health")
            assert tab.errors == []
    finally:
        client.delete(f"{prefix}:1:health:beat:safety_scan", f"{prefix}:1:health:beat:outbox_relay")
        client.close()
