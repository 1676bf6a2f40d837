"""manage.py vapid_status: the current VAPID public key, the earlier keys still kept with how many subscriptions
use each, and what to do next in a key rotation. Prints public keys only."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from consumers.vapid import vapid_keyring, vapid_usage


class Command(BaseCommand):
    help = "Show the VAPID keys, how many subscriptions use each, and the next step of a key rotation."

    def handle(self, *args: Any, **options: Any) -> None:
        keyring = vapid_keyring()
        usage = vapid_usage()
        current, *previous = usage.keys
        source = "the environment (VAPID_PRIVATE_KEY)" if keyring.from_env else "the state file (STATE_DIR/vapid.json)"
        self.stdout.write(f"Keys from {source}.")
        self.stdout.write(f"Current public key: {current.keys.public}")
        self.stdout.write(f"  used by {current.subscriptions} subscriptions")
        if previous:
            self.stdout.write("Previous keys (kept until no subscription uses them), newest first:")
            for use in previous:
                self.stdout.write(f"  {use.keys.public}")
                self.stdout.write(f"    used by {use.subscriptions} subscriptions")
        else:
            self.stdout.write("Previous keys: none.")
        if usage.unknown:
            self.stdout.write(
                f"{usage.unknown} subscriptions were made with a key no longer kept: pushes to them fail until the"
                " browser re-subscribes on its next visit."
            )
        self.stdout.write("")
        self.stdout.write("Next: " + self._next_step(keyring.from_env, [u.subscriptions for u in previous]))

    @staticmethod
    def _next_step(from_env: bool, waiting: list[int]) -> str:
        if not waiting:
            return "nothing to do. To rotate the key pair: `manage.py vapid_rotate`."
        in_use = sum(waiting)
        unused = sum(1 for n in waiting if n == 0)
        steps = []
        if in_use:
            steps.append(
                f"{in_use} subscriptions still use earlier keys; each browser re-subscribes with the current key on"
                " its next visit, so keep those keys until then."
            )
        if unused:
            if from_env:
                steps.append(
                    f"Earlier keys no subscription uses: {unused}. Remove them from VAPID_PREVIOUS_PRIVATE_KEYS"
                    " (`manage.py vapid_rotate --prune` lists them)."
                )
            else:
                steps.append(
                    f"Earlier keys no subscription uses: {unused}. They are dropped within the hour, or now with"
                    " `manage.py vapid_rotate --prune`."
                )
        return " ".join(steps)
