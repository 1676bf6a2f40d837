"""The Redis cache with one connection pool per process.

Django keeps a cache object per thread or request context, and its RedisCache makes a connection pool per
object, so under ASGI every request opened a Redis connection of its own and dropped it (Django ticket
#35651): about 2.5 ms of CPU per request. redis-py's pool is thread-safe, so one client and its pools serve
every cache object of the process with the same settings."""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_clients: dict[tuple[tuple[str, ...], str], RedisCacheClient] = {}
_lock = threading.Lock()


class RedisCache(DjangoRedisCache):
    """Django's RedisCache, with the client (and so the connection pools) shared by the whole process."""

    # RedisCache's own attributes (set in its __init__), which the stubs do not declare.
    _servers: list[str]
    _options: dict[str, Any]

    @cached_property
    def _cache(self) -> RedisCacheClient:
        key = (tuple(self._servers), repr(sorted(self._options.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = RedisCacheClient(self._servers, **self._options)
                client.get_client(write=True)  # its pool made here, under the lock, not by two threads at once
        return client


__all__ = ["RedisCache"]


def beat_stamp(task: str) -> None:
    """Called by a periodic task each time it runs, for `manage.py health` (safety/health.py) to see that beat
    and the workers are alive. Never raises: a cache outage must not stop the task."""
    import logging
    import time

    from django.core.cache import cache

    try:
        cache.set(f"health:beat:{task}", time.time(), None)
    except Exception as exc:
        logging.getLogger(__name__).warning("could not stamp %s in the cache: %s", task, exc)
