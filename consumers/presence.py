"""Who is online: a cache key per person, refreshed by the process that holds their sockets.

Each web process refreshes the keys of the people connected to it every third of PRESENCE_TTL_SECONDS, so a
process that dies takes its people offline within the TTL. Talk asks it who is not connected (they get a
web push instead) and the room view shows it."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache


def _key(user_id: int) -> str:
    return f"presence:{user_id}"


def presence_touch(user_ids: Iterable[int]) -> None:
    keys = {_key(uid): 1 for uid in user_ids}
    if keys:
        cache.set_many(keys, timeout=settings.PRESENCE_TTL_SECONDS)


def presence_clear(user_id: int) -> None:
    cache.delete(_key(user_id))


def online_user_ids(user_ids: Iterable[int]) -> set[int]:
    ids = list(user_ids)
    if not ids:
        return set()
    found = cache.get_many([_key(uid) for uid in ids])
    return {uid for uid in ids if _key(uid) in found}
