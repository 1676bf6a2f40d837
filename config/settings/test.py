"""Test profile: the base settings as the environment gives them, made fast and loud.

PostgreSQL and Redis are used when DATABASE_URL / REDIS_URL are set (always in CI), else the embedded default.
"""

import os

os.environ.setdefault("STATE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", ".state-test"))

from .base import *  # noqa: F403

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not memory, so daphne and Celery subprocesses started by tests see the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(STATE_DIR / "test.sqlite3")}  # noqa: F405
# The test process opens and drops the test database; a pool would hold connections across that.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "directory.hashers.InitialPasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
PUSH_ALLOW_LOOPBACK_HTTP = True
# Per-process cache: a test's cache.clear() must never flush the shared Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# A private prefix so a test run never sees another process's channel-layer traffic.
if CHANNEL_REDIS_URLS:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"test{os.getpid()}"  # noqa: F405

# The tests ingest real JMA messages from years ago as if they had just arrived.
JMA_DISPATCH_MAX_AGE_MINUTES = 0
