"""The push endpoint of bench.jma_latency, in a process of its own: the strict local push service of the tests
(tests/pushservice.py: checks the VAPID JWT's signature and claims and the headers, decrypts every body with the
subscription's private key), which also notes, for every push it accepts, when its request arrived (before the
checks) and which incident its decrypted payload names.

    python -m bench._jma_latency_push --count 1001 --vapid-public-key <key>

Writes one subscription per line as JSON (`{"endpoint", "keys": {"p256dh", "auth"}}`), then `ready <url>`, then
answers commands read from stdin, one per line, with one JSON line each:

- `reset`: forget what was received;
- `wait N SECONDS`: block until N pushes were accepted (or SECONDS passed), then answer as `stats`;
- `stats`: `{"received", "rejected", "distinct", "first", "last", "incidents", "titles", "reasons"}`: `first` and
  `last` are the wall-clock arrival times (time.time()) of the first and the last accepted push, `incidents`
  the incident ids the payloads named, `titles` the distinct titles (at most five);
- `quit`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from aiohttp import web

from tests.pushservice import LocalPushService


class ArrivalPushService(LocalPushService):
    """LocalPushService that keeps each accepted push's arrival time and its payload's incident and title."""

    def __init__(self, *, vapid_public_key: str | None = None) -> None:
        super().__init__(vapid_public_key=vapid_public_key)
        self.arrivals: list[float] = []
        self.incidents: set[int] = set()
        self.titles: set[str] = set()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()  # the request's head is in; its body, the checks and the decryption follow
        response = await super()._handle(request)
        # Every subscription here answers 201 once a push passes the checks; a rejection is 4xx. Nothing awaits
        # between super()'s append and this line, so the last received push is this request's.
        with self._changed:
            if response.status == 201:
                self.arrivals.append(arrived)
                try:
                    payload = json.loads(self.received[-1].payload)
                    self.incidents.add(int(payload.get("incident") or 0))
                    if len(self.titles) < 5:
                        self.titles.add(str(payload.get("title", "")))
                except (ValueError, TypeError, AttributeError):
                    self.incidents.add(-1)
        return response

    def reset(self) -> None:
        with self._changed:
            self.received.clear()
            self.rejected.clear()
            self.arrivals.clear()
            self.incidents.clear()
            self.titles.clear()

    def stats(self) -> dict[str, Any]:
        with self._changed:
            return {
                "received": len(self.received),
                "rejected": len(self.rejected),
                "distinct": len({push.path for push in self.received}),
                "first": min(self.arrivals, default=0.0),
                "last": max(self.arrivals, default=0.0),
                "incidents": sorted(self.incidents),
                "titles": sorted(self.titles),
                "reasons": sorted({reason.split(": ", 1)[-1] for reason in self.rejected})[:5],
            }

    def wait(self, count: int, seconds: float) -> dict[str, Any]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.received) >= count, timeout=seconds)
        return self.stats()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--vapid-public-key", required=True)
    args = parser.parse_args()
    out = sys.stdout
    with ArrivalPushService(vapid_public_key=args.vapid_public_key) as service:
        for _ in range(args.count):
            out.write(json.dumps(service.new_subscription()) + "\n")
        out.write(f"ready {service.base_url}\n")
        out.flush()
        for line in sys.stdin:
            command, *rest = line.split()
            if command == "reset":
                service.reset()
                out.write('{"ok": true}\n')
            elif command == "stats":
                out.write(json.dumps(service.stats()) + "\n")
            elif command == "wait" and len(rest) == 2:
                out.write(json.dumps(service.wait(int(rest[0]), float(rest[1]))) + "\n")
            elif command == "quit":
                break
            else:
                out.write(json.dumps({"error": f"unknown command {line.strip()!r}"}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
