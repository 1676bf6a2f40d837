"""The rate limit when Redis is down: answers and confirmations go through (the database is what counts), other
limited forms fail closed. Against a Redis address where nothing listens."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from config.throttle import throttle_allow
from safety.models import Answer, AnswerSource
from tests.services import free_port, require_redis


@pytest.fixture
def dead_cache(settings: Any) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "config.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }


@pytest.fixture
def live_cache(settings: Any) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "config.cache.RedisCache", "LOCATION": require_redis(), "KEY_PREFIX": "throttle-test"}
    }


def test_a_reachable_cache_counts_and_refuses_past_the_limit(live_cache: None) -> None:
    from django.core.cache import cache

    cache.delete("throttle:probe")
    hits = [throttle_allow("probe", limit=2, window_seconds=60, fail_open=True) for _ in range(3)]
    assert hits == [True, True, False]
    cache.delete("throttle:probe")


def test_an_unreachable_cache_fails_closed_unless_asked_to_fail_open(dead_cache: None) -> None:
    with pytest.raises(RedisConnectionError):
        throttle_allow("mail", limit=3, window_seconds=60)
    assert throttle_allow("answer", limit=3, window_seconds=60, fail_open=True) is True


@pytest.mark.django_db
def test_the_answer_page_without_javascript_records_an_answer_while_redis_is_down(
    dead_cache: None, client: Any, org: Any
) -> None:
    from tests.frontend.test_answer_pages import link
    from tests.safety.conftest import incident_make, safety_person, send

    hanako = safety_person(org, "hanako")
    incident = incident_make(org, None)
    send(incident, None, run=False)
    url = link(incident, hanako)
    response = client.post(url, {"safety": "safe", "help": "no"})
    assert response.status_code == 302, response.content[:500]
    answer = Answer.objects.get(incident=incident, person=hanako)
    assert (answer.source, answer.values["safety"]) == (AnswerSource.LINK, "safe")
