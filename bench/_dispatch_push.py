"""The push endpoint of bench.dispatch, in a process of its own: the strict local push service of the tests
(tests/pushservice.py: checks the VAPID JWT's signature and claims and the headers, decrypts every body with the
subscription's private key), which also notes when it accepted the first and the last push.

    python -m bench._dispatch_push --count 10000 --vapid-public-key <key>

Writes one subscription per line as JSON (`{"endpoint", "keys": {"p256dh", "auth"}}`), then `ready <url>`, then
answers commands read from stdin, one JSON line each:

- `reset`: forget what was received;
- `stats`: `{"received", "rejected", "distinct", "first", "last", "reasons"}` (wall-clock times, time.time());
- `quit`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from aiohttp import web

from tests.pushservice import LocalPushService


class TimedPushService(LocalPushService):
    """LocalPushService that also keeps the wall-clock time of its first and last accepted push."""

    def __init__(self, *, vapid_public_key: str | None = None) -> None:
        super().__init__(vapid_public_key=vapid_public_key)
        self.first = 0.0
        self.last = 0.0

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        if response.status == 201:
            now = time.time()
            self.first = self.first or now
            self.last = now
        return response

    def reset(self) -> None:
        with self._changed:
            self.received.clear()
            self.rejected.clear()
            self.first = self.last = 0.0

    def stats(self) -> dict[str, object]:
        with self._changed:
            return {
                "received": len(self.received),
                "rejected": len(self.rejected),
                "distinct": len({push.path for push in self.received}),
                "first": self.first,
                "last": self.last,
                "reasons": sorted({reason.split(": ", 1)[-1] for reason in self.rejected})[:5],
            }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--vapid-public-key", required=True)
    args = parser.parse_args()
    out = sys.stdout
    with TimedPushService(vapid_public_key=args.vapid_public_key) as service:
        for _ in range(args.count):
            out.write(json.dumps(service.new_subscription()) + "\n")
        out.write(f"ready {service.base_url}\n")
        out.flush()
        for line in sys.stdin:
            command = line.strip()
            if command == "reset":
                service.reset()
                out.write('{"ok": true}\n')
            elif command == "stats":
                out.write(json.dumps(service.stats()) + "\n")
            elif command == "quit":
                break
            else:
                out.write(json.dumps({"error": f"unknown command {command!r}"}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
