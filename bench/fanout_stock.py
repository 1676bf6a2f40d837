"""The stock-Channels baseline of `bench.chat_fanout`: the textbook group broadcast, nothing of ours.

One `AsyncWebsocketConsumer` joins the group "bench" on connect; a `bench.message` event sends its text on.
The channel layer is channels-redis with the host options our settings use. Served by daphne in its own
process:

    FANOUT_REDIS_URL=redis://127.0.0.1:6379/13 FANOUT_STOCK_PREFIX=fanoutstock \\
        .venv/bin/python -m daphne -b 127.0.0.1 -p 8001 bench.fanout_stock:application

The benchmark imports this module (after its own Django set-up) for `GROUP` and `layer_config`, to send
with a layer of the same configuration.
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

GROUP = "bench"
EVENT_TYPE = "bench.message"


def layer_config(redis_url: str, prefix: str) -> dict[str, Any]:
    """As config/settings/base.py configures channels-redis: idle sockets kept, pool sized for bursts."""
    return {
        "hosts": [{"address": redis_url, "socket_timeout": None, "max_connections": 1000}],
        "prefix": prefix,
        "capacity": 1000,
        "expiry": 60,
        "group_expiry": 86400,
    }


if not settings.configured:  # in the daphne process; the benchmark itself has configured Django already
    settings.configure(
        DEBUG=False,
        SECRET_KEY="fanout-stock-" + "x" * 40,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": layer_config(
                    os.environ.get("FANOUT_REDIS_URL", "redis://127.0.0.1:6379/13"),
                    os.environ.get("FANOUT_STOCK_PREFIX", "fanoutstock"),
                ),
            }
        },
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402


class BenchConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({"websocket": BenchConsumer.as_asgi()})
