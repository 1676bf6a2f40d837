"""The VAPID key pair: from VAPID_PRIVATE_KEY / VAPID_PUBLIC_KEY, or generated once into the state directory.

The private key is never logged or shown; only the public key leaves this module's callers."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.env import state_dir, write_once
from consumers.webpush import vapid_keys_generate, vapid_public_key


@dataclass(frozen=True)
class VapidKeys:
    private: str
    public: str

    def __repr__(self) -> str:  # never print the private key
        return f"VapidKeys(public={self.public!r})"


@functools.cache
def vapid_keys() -> VapidKeys:
    private, public = settings.VAPID_PRIVATE_KEY, settings.VAPID_PUBLIC_KEY
    if private or public:
        if not private:
            raise ImproperlyConfigured("VAPID_PRIVATE_KEY must be set when VAPID_PUBLIC_KEY is")
        try:
            derived = vapid_public_key(private)
        except Exception:
            raise ImproperlyConfigured("VAPID_PRIVATE_KEY is not a base64url P-256 private key (32 bytes)") from None
        if public and public != derived:
            raise ImproperlyConfigured("VAPID_PUBLIC_KEY does not belong to VAPID_PRIVATE_KEY")
        return VapidKeys(private=private, public=derived)
    path = state_dir() / "vapid.json"
    if not path.exists():
        new_private, new_public = vapid_keys_generate()
        write_once(path, json.dumps({"private": new_private, "public": new_public}))
    stored = json.loads(path.read_text())
    return VapidKeys(private=stored["private"], public=stored["public"])
