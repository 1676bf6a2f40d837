"""Issue 10, scale-out: the disaster scenario of bench.disaster with 2 daphne processes and 2 Celery workers on one
Redis, against 1 of each, on this machine. The figure is the ratio of answers/s the servers take in a closed loop
after the scenario (`bench.disaster --capacity`: N more people answer over `--concurrency` kept-alive connections
spread over the daphne processes); the scenario's own figures are compared too (time to the last push, answer to
board, the instruction pushes, the send's end). Target: at least 0.9x, with every answer of both capacity loops
answered 200 (the scenario's own errors are bench.disaster's verdict; both runs print theirs, and the table shows
them side by side).

Why 0.9x and not more: this machine has 2 cores, shared by every process of the scenario (daphne, the workers,
PostgreSQL, Redis, the push endpoint that decrypts every push, the board sockets and the answering client) and by
whatever else runs on it. A second daphne can use the second core only where the first one left it idle, so on 2
cores scaling out is expected to help little; what this checks is that it costs nothing (a 10% band for a noisy
machine), that nothing is lost or doubled when answers, sockets and tasks are spread over processes, and what
the numbers are. What limits it and how it grows on more machines: docs/operations.md ("Scaling out").

Each run is `python -m bench.disaster` in a process of its own (its own throwaway database, Redis prefixes and
task queue), one after the other, the baseline (1 + 1) first; both print their whole output here.

    .venv/bin/python -m bench.scaleout            # 2 full disaster runs + 3,000 answers each: 6 to 10 minutes
    .venv/bin/python -m bench.scaleout --quick    # 500 people each: checks the harness (about 80 s)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import verdict

ROOT = Path(__file__).resolve().parent.parent
CAPACITY = 3000
QUICK_CAPACITY = 200
TARGET_RATIO = 0.9
SETUPS = ((1, 1), (2, 2))  # (daphne processes, workers): the baseline first


def disaster_run(daphnes: int, workers: int, args: argparse.Namespace, extra: Sequence[str]) -> dict[str, Any]:
    """One bench.disaster run in its own process; its output goes straight to ours. Returns its outcome."""
    with tempfile.NamedTemporaryFile(prefix="tsunagu-scaleout-", suffix=".json") as out:
        argv = [sys.executable, "-m", "bench.disaster", "--daphnes", str(daphnes), "--workers", str(workers)]
        argv += ["--capacity", str(args.capacity), "--concurrency", str(args.concurrency), "--json", out.name]
        argv += ["--quick"] if args.quick else []
        argv += list(extra)
        print(f"\n===== {daphnes} daphne + {workers} worker: {' '.join(argv[1:])}", flush=True)
        started = time.perf_counter()
        code = run_bounded(argv, args.timeout)
        text = Path(out.name).read_text() if os.path.getsize(out.name) else ""
        result: dict[str, Any] = json.loads(text) if text else {"errors": 1, "problems": ["no outcome written"]}
        result["exit"] = code
        result["wall"] = time.perf_counter() - started
        return result


def run_bounded(argv: list[str], timeout: float) -> int:
    """Run a benchmark in a session of its own. Past `timeout`, SIGTERM first (bench.disaster turns it into SystemExit:
    its finally blocks stop its servers and workers and drop its database); whatever is left of its process group is
    killed a minute later."""
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"the run took more than {timeout:g} s: interrupted", flush=True)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return -1
    finally:
        if proc.poll() is None:  # this process was interrupted itself
            os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)


def ratio(new: float, old: float) -> float:
    return new / old if old and not math.isnan(old) and not math.isnan(new) else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="bench.disaster --quick for both runs")
    parser.add_argument("--capacity", type=int, default=None, help=f"closed-loop answers per run ({CAPACITY:,})")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds one run may take")
    args, extra = parser.parse_known_args(argv)
    if args.capacity is None:
        args.capacity = QUICK_CAPACITY if args.quick else CAPACITY
    target = f"(target ≥ {TARGET_RATIO:g}x, every capacity answer HTTP 200)"
    print(
        f"scaleout: the disaster scenario with {' and '.join(f'{d} daphne + {w} worker' for d, w in SETUPS)}, then "
        f"{args.capacity:,} answers in a closed loop over {args.concurrency} connections; {os.cpu_count()} cores, "
        f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        flush=True,
    )
    runs = [disaster_run(d, w, args, extra) for d, w in SETUPS]
    base, out = runs
    rows = (
        ("capacity answers/s (closed loop)", "capacity_rate", 1.0, "{:.1f}"),
        ("capacity HTTP p95, ms", "capacity_p95", 1000.0, "{:.0f}"),
        ("time to the last push, s", "last_push", 1.0, "{:.2f}"),
        ("time to the first push, s", "first_push", 1.0, "{:.2f}"),
        ("send finished (with e-mails), s", "send_finished", 1.0, "{:.1f}"),
        ("answers HTTP p95 (scenario), ms", "answers_p95", 1000.0, "{:.0f}"),
        ("answer -> board p95, ms", "board_p95", 1000.0, "{:.0f}"),
        ("board frames/s (busiest)", "fps_mean", 1.0, "{:.2f}"),
        ("instruction -> board p95, ms", "instruction_board_p95", 1000.0, "{:.0f}"),
        ("last instruction push, s", "instruction_push_last", 1.0, "{:.1f}"),
        ("daphne CPU (all processes), s", "daphne_cpu", 1.0, "{:.0f}"),
        ("machine busy", "machine_busy", 100.0, "{:.0f}%"),
        ("errors", "errors", 1.0, "{:.0f}"),
    )
    print("\n===== compared (2 + 2 against 1 + 1, same machine, one after the other)")
    print(f"  {'':<36} {'1 + 1':>10} {'2 + 2':>10} {'ratio':>7}")
    for label, key, scale, fmt in rows:
        a = float(base.get(key, float("nan"))) * scale
        b = float(out.get(key, float("nan"))) * scale
        r = ratio(b, a)
        shown = "—" if math.isnan(r) else f"{r:.2f}x"
        print(f"  {label:<36} {fmt.format(a):>10} {fmt.format(b):>10} {shown:>7}")
    for name, run in (("1 + 1", base), ("2 + 2", out)):
        for text in run.get("problems", []):
            print(f"FAIL ({name}): {text}")
    figure = ratio(float(out.get("capacity_rate", float("nan"))), float(base.get("capacity_rate", float("nan"))))
    # The figure counts only if every capacity answer got HTTP 200 in both runs; the scenario's own errors are
    # bench.disaster's verdict, shown here and in each run's output.
    failed = int(base.get("capacity_failed", 1)) + int(out.get("capacity_failed", 1))
    ok = failed == 0 and not math.isnan(figure) and figure >= TARGET_RATIO
    return verdict(
        f"scaleout: {figure:.2f}x answers/s (2+2 vs 1+1: {out.get('capacity_rate', float('nan')):.0f} vs "
        f"{base.get('capacity_rate', float('nan')):.0f}/s, {failed} failed; scenario errors "
        f"{base.get('errors')} vs {out.get('errors')}) {target}",
        ok,
    )


if __name__ == "__main__":
    sys.exit(main())
