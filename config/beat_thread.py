"""The beat schedule run from a thread of the web process, for the embedded default (no Redis, no beat).

`BEAT_IN_PROCESS=true` (bin/run sets it) runs every CELERY_BEAT_SCHEDULE entry with a fixed interval here,
eagerly, in the web process: outbox relay, talk-log archive, retention. The JMA poll keeps its own switch
(JMA_POLL_IN_PROCESS). A deployment with beat and workers leaves this off."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

logger = logging.getLogger(__name__)

_started = False
_lock = threading.Lock()
SKIP = frozenset({"jma-poll"})


def is_server_process() -> bool:
    """False under pytest, manage.py / django-admin commands and Celery: only a web server polls in-process."""
    if "pytest" in sys.modules:
        return False
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return not (program in ("manage.py", "django-admin") or "celery" in program or "pytest" in program)


def beat_entries() -> dict[str, tuple[str, float]]:
    """name -> (task, interval in seconds) for the entries this thread runs."""
    from django.conf import settings

    return {
        name: (str(entry["task"]), float(entry["schedule"]))
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        if name not in SKIP and isinstance(entry["schedule"], (int, float))
    }


def beat_tick(entries: dict[str, tuple[str, float]], due: dict[str, float], now: float) -> list[str]:
    """Run the entries that are due at `now` and schedule their next run. Returns the names that ran."""
    from django.db import close_old_connections

    from config.celery import app

    app.loader.import_default_modules()  # autodiscovery is lazy: make sure every task is registered
    ran = []
    for name, (task, interval) in entries.items():
        if now < due.get(name, 0.0):
            continue
        due[name] = now + interval
        ran.append(name)
        try:
            app.tasks[task].apply()
        except Exception:
            logger.exception("in-process beat entry %s failed", name)
        finally:
            close_old_connections()
    return ran


def _run_forever() -> None:
    entries = beat_entries()
    due = {name: time.monotonic() + min(30.0, interval) for name, (_task, interval) in entries.items()}
    while True:
        time.sleep(1.0)
        beat_tick(entries, due, time.monotonic())


def start_beat_thread() -> None:
    global _started
    with _lock:
        if _started:
            return
        _started = True
    threading.Thread(target=_run_forever, name="beat-in-process", daemon=True).start()
    logger.info("running the beat schedule in-process")
