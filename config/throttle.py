"""A small fixed-window counter in the cache, for forms that send e-mail to addresses typed by anyone."""

from __future__ import annotations

import logging

from django.core.cache import cache

logger = logging.getLogger(__name__)


def throttle_allow(key: str, *, limit: int, window_seconds: int, fail_open: bool = False) -> bool:
    """Count one hit on `key`; False once it has had `limit` hits in the current window.

    `fail_open`: allow the hit when the cache cannot be reached (Redis restarting) instead of raising. For answers
    to a safety check, which must not fail with a 500 while the database is up (issue 10, fault 2); forms that
    send e-mail keep failing closed."""
    cache_key = f"throttle:{key}"
    try:
        cache.add(cache_key, 0, timeout=window_seconds)
        try:
            hits = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.set(cache_key, 1, timeout=window_seconds)
            hits = 1
    except Exception:
        if not fail_open:
            raise
        logger.warning("throttle %s not counted: the cache is unavailable", key.split(":", 1)[0], exc_info=True)
        return True
    return hits <= limit
