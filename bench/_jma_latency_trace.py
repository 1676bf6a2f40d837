"""`bench.jma_latency --trace`: where a worker's time goes, printed to its log. Installed by
bench/_jma_latency_settings.py when BENCH_JMA_TRACE is set (off by default: the measured worker runs the project's
code untouched). Each line is `bench-trace <pid> <what> <start> <end>` in wall-clock seconds (time.time()):

- `task:<name>`: a task's run in the child process (Celery's task_prerun to task_postrun);
- `<function>`: a call of one of the functions below (wrapped in their modules on the first task of a process,
  when Django's apps are ready), so the parts of jma_decide and dispatch_run show.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from celery.signals import task_postrun, task_prerun

WRAPPED = {
    "safety.autodispatch": ("_decide_for", "decision_execute", "_incident_open", "people_specs"),
    "safety.services": (
        "dispatch_create",
        "target_clean",
        "target_people_ids",
        "delivery_rows",
        "_open",
        "_incident_changed",
        "_claim",
        "_send_push",
        "_notification",
        "_dispatch_finish",
        "incident_admins_notify",
    ),
}
_started: dict[str, float] = {}
_installed = False


def _line(what: str, start: float, end: float) -> None:
    print(f"bench-trace {os.getpid()} {what} {start:.6f} {end:.6f}", flush=True)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    quiet = name == "_notification"  # one per push: summed per batch by _send_push's line instead

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            if not quiet:
                _line(name, start, time.time())

    return call


def _wrap() -> None:
    import importlib

    from consumers import webpush

    for module_name, names in WRAPPED.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, _timed(name, getattr(module, name)))
    send = webpush.PushSession.send

    def session_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return send(self, *args, **kwargs)
        finally:
            _line("PushSession.send", start, time.time())

    webpush.PushSession.send = session_send  # type: ignore[method-assign]


def install() -> None:
    @task_prerun.connect(weak=False)
    def prerun(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
        global _installed
        if not _installed:
            _installed = True
            _wrap()
        _started[str(task_id)] = time.time()

    @task_postrun.connect(weak=False)
    def postrun(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
        start = _started.pop(str(task_id), None)
        if start is not None:
            _line(f"task:{getattr(task, 'name', '?').rsplit('.', 1)[-1]}", start, time.time())
