"""A small fixed-window counter in the cache, for forms that send e-mail to addresses typed by anyone."""

from __future__ import annotations

from django.core.cache import cache


def throttle_allow(key: str, *, limit: int, window_seconds: int) -> bool:
    """Count one hit on `key`; False once it has had `limit` hits in the current window."""
    cache_key = f"throttle:{key}"
    cache.add(cache_key, 0, timeout=window_seconds)
    try:
        hits = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=window_seconds)
        hits = 1
    return hits <= limit
