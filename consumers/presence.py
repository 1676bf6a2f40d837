"""Who is online: a key per person, refreshed by the process that holds their sockets.

Each web process refreshes the keys of the people connected to it every third of PRESENCE_TTL_SECONDS, so a
process that dies takes its people offline within the TTL. Talk asks it who is not connected (they get a
web push instead) and the room view shows it.

A person's key is a Redis hash of the processes holding their sockets, so closing the laptop does not take
them offline while their phone is connected to another process; a dead process's field goes with the key's
TTL. Asking about a room of 1,000 (on every message) is one pipelined round trip of EXISTS, with nothing to
unpickle. Without Redis (the embedded default) the cache holds the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache


def _key(user_id: int) -> str:
    return f"presence:{user_id}"


def _redis() -> Any | None:
    client = getattr(cache, "_cache", None)
    get_client = getattr(client, "get_client", None)
    return get_client(write=True) if get_client is not None else None


def presence_touch(user_ids: Iterable[int], *, process: str) -> None:
    """These people have a socket on `process` (a web process's hub): online for PRESENCE_TTL_SECONDS."""
    ids = list(user_ids)
    if not ids:
        return
    ttl = settings.PRESENCE_TTL_SECONDS
    redis = _redis()
    if redis is None:
        for uid in ids:
            processes = cache.get(_key(uid)) or {}
            processes[process] = 1
            cache.set(_key(uid), processes, timeout=ttl)
        return
    with redis.pipeline(transaction=False) as pipe:
        for uid in ids:
            pipe.hset(_key(uid), process, b"1")
            pipe.expire(_key(uid), ttl)
        pipe.execute()


def presence_leave(user_id: int, *, process: str) -> None:
    """The person's last socket on `process` closed; they stay online while another process has one."""
    redis = _redis()
    if redis is None:
        processes = cache.get(_key(user_id)) or {}
        processes.pop(process, None)
        if processes:
            cache.set(_key(user_id), processes, timeout=settings.PRESENCE_TTL_SECONDS)
        else:
            cache.delete(_key(user_id))
        return
    redis.hdel(_key(user_id), process)  # the hash goes when its last field does


def online_user_ids(user_ids: Iterable[int]) -> set[int]:
    ids = list(user_ids)
    if not ids:
        return set()
    redis = _redis()
    if redis is None:
        found = cache.get_many([_key(uid) for uid in ids])
        return {uid for uid in ids if found.get(_key(uid))}
    with redis.pipeline(transaction=False) as pipe:
        for uid in ids:
            pipe.exists(_key(uid))
        values = pipe.execute()
    return {uid for uid, value in zip(ids, values, strict=True) if value}


def presence_forget(user_id: int) -> None:
    """Drop the person's presence on every process (clean-up of benchmarks and tests)."""
    redis = _redis()
    if redis is None:
        cache.delete(_key(user_id))
    else:
        redis.delete(_key(user_id))
