"""The safety app. In the embedded default (no Redis, no beat) it polls JMA's feeds from one daemon thread."""

from __future__ import annotations

import logging
import threading

from django.apps import AppConfig

from config.beat_thread import is_server_process

logger = logging.getLogger(__name__)

_poller_started = False
_poller_lock = threading.Lock()


def _poll_forever(interval: int) -> None:
    from django.db import close_old_connections

    from safety.jma.poller import poll_all

    stop = threading.Event()
    delay = min(5, interval)  # first poll soon after start-up, then every interval
    while not stop.wait(delay):
        delay = interval
        try:
            poll_all()
        except Exception:
            logger.exception("in-process JMA poll failed")
        finally:
            close_old_connections()


class SafetyConfig(AppConfig):
    name = "safety"

    def ready(self) -> None:
        global _poller_started
        from django.conf import settings

        if not settings.JMA_POLL_IN_PROCESS or not settings.JMA_FEED_URLS or not is_server_process():
            return
        with _poller_lock:
            if _poller_started:
                return
            _poller_started = True
        threading.Thread(
            target=_poll_forever, args=(settings.JMA_POLL_SECONDS,), name="jma-poller", daemon=True
        ).start()
        logger.info("polling JMA feeds in-process every %s s", settings.JMA_POLL_SECONDS)
