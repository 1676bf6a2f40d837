"""manage.py vapid_rotate [--prune]: rotate the VAPID key pair, or drop the earlier keys no subscription uses.

Rotation (state-file mode): a new pair becomes current and the old one is kept, so pushes to the browsers that
subscribed with it still verify; each browser re-subscribes with the new key on its next visit, and the old key
is dropped once no subscription uses it (`--prune`, or the hourly `consumers.tasks.vapid_prune`). With keys from
the environment the command changes nothing: it prints the steps for the operator and exits 1.

Prints public keys only, never a private key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from consumers.vapid import VapidRotationRefused, vapid_keyring, vapid_prune, vapid_rotate, vapid_usage


class Command(BaseCommand):
    help = "Rotate the VAPID key pair (the old one is kept until no subscription uses it), or --prune unused keys."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prune",
            action="store_true",
            help="do not rotate: drop the earlier keys that no subscription uses any more (the plan's last step)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["prune"]:
            self._prune()
            return
        try:
            new, old = vapid_rotate()
        except VapidRotationRefused as refused:
            raise CommandError(f"Not rotated.\n{refused.plan}") from None
        waiting = next((u.subscriptions for u in vapid_usage().keys if u.keys.public == old.public), 0)
        self.stdout.write(f"New current public key: {new.public}")
        self.stdout.write(f"Kept as a previous key: {old.public} ({waiting} subscriptions use it)")
        self.stdout.write(
            "Every process uses the new key from its next push or page on (no restart needed). Browsers re-subscribe\n"
            "with it on their next visit; until then pushes to them are signed with the key they subscribed with.\n"
            "The previous key is dropped once no subscription uses it (hourly, or `manage.py vapid_rotate --prune`);\n"
            "`manage.py vapid_status` shows how many are left."
        )

    def _prune(self) -> None:
        dropped = vapid_prune()
        if not dropped:
            self.stdout.write("Nothing to prune: every earlier key is still used by a subscription (or none is kept).")
            return
        still_kept = {k.public for k in vapid_keyring().previous}  # from VAPID_PREVIOUS_PRIVATE_KEYS
        gone = [k for k in dropped if k.public not in still_kept]
        named = [k for k in dropped if k.public in still_kept]
        if gone:
            self.stdout.write("Dropped the earlier keys no subscription used:")
            for keys in gone:
                self.stdout.write(f"  {keys.public}")
        if named:
            self.stdout.write("No subscription uses these keys any more; remove them from VAPID_PREVIOUS_PRIVATE_KEYS:")
            for keys in named:
                self.stdout.write(f"  {keys.public}")
