"""All settings, read from the environment with documented defaults (see `.env.example`).

With no environment at all this is the embedded default: SQLite in the state directory, Channels'
in-memory layer, Celery tasks run in-process, e-mail printed to the console, VAPID keys generated on
first run. Setting DATABASE_URL, REDIS_URL, EMAIL_URL and the VAPID keys turns it into production.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from config.env import (
    check_url,
    email_settings,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_str,
    env_url,
    generated_secret,
    state_dir,
)
from config.security import DEFAULT_PERMISSIONS_POLICY, csp_policy

# Lets generic Django classes (ModelAdmin[Model]) be subscripted at run time, as the type checker sees them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
STATE_DIR = state_dir()

SECRET_KEY = env_str("SECRET_KEY") or generated_secret("secret_key")
# Earlier keys, still accepted for signatures (sessions, answer links, password-reset links) while a rotation
# settles; new signatures always use SECRET_KEY. docs/operations.md, "Key rotation".
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Public base URL used in links that leave the site (e-mails, push notifications).
SITE_URL = env_url("SITE_URL", "http://127.0.0.1:8000", ("http", "https")).rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "channels",
    "directory",
    "consumers",
    "chat",
    "safety",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Permissions-Policy; before WhiteNoise, so static files carry them too.
    "config.security.security_headers_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.middleware.reject_nul_middleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "directory.middleware.person_language_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------
DATABASE_URL = env_url(
    "DATABASE_URL", f"sqlite:///{STATE_DIR / 'db.sqlite3'}", ("sqlite", "postgres", "postgresql", "pgsql")
)
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0, minimum=0))}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 8, minimum=0)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded database is shared by daphne's threads and in-process tasks; wait instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
elif DB_POOL_MAX_SIZE and not DATABASES["default"]["CONN_MAX_AGE"]:
    # PostgreSQL under ASGI: a psycopg pool (Django's advice) rather than a new connection for every sync hop;
    # a burst of 500 WebSocket connects otherwise spends its handshake time opening connections.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": 30,
    }
# HTTP requests one web process runs at once (config/concurrency.py); the rest wait in order, on the event loop,
# up to HTTP_QUEUE_SECONDS, then get a 503 with Retry-After. 0 turns the limit off. Default: the database pool's
# size less two, which the crisis team's lane, the WebSocket handshakes and the board ticker share.
HTTP_CONCURRENCY = env_int("HTTP_CONCURRENCY", max(2, DB_POOL_MAX_SIZE - 2) if DB_POOL_MAX_SIZE else 0, minimum=0)
# Under a reverse proxy's usual 60 s read timeout: a queued answer is slow, not lost.
HTTP_QUEUE_SECONDS = env_int("HTTP_QUEUE_SECONDS", 50, minimum=1, maximum=300)
# The crisis team's own lane (instructions, sends, the board's API, JMA reports pushed in): never behind answers.
HTTP_PRIORITY_CONCURRENCY = env_int("HTTP_PRIORITY_CONCURRENCY", 2, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache ---------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", "", ("redis", "rediss", "unix"))
# Extra channel-layer hosts to shard groups over (comma-separated); channels-redis has no Redis Cluster.
CHANNEL_REDIS_URLS = env_list("CHANNEL_REDIS_URLS", [REDIS_URL] if REDIS_URL else [])
for _url in CHANNEL_REDIS_URLS:
    check_url("CHANNEL_REDIS_URLS", _url, ("redis", "rediss", "unix"))
CHANNEL_REDIS_MAX_CONNECTIONS = env_int("CHANNEL_REDIS_MAX_CONNECTIONS", 1000, minimum=10)
CHANNEL_REDIS_PREFIX = env_str("CHANNEL_REDIS_PREFIX", "asgi")

CHANNEL_LAYERS: dict[str, dict[str, Any]]
CACHES: dict[str, dict[str, Any]]
if CHANNEL_REDIS_URLS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": url,
                        # redis-py 8 closes idle sockets after its default timeout; a WebSocket may idle for hours.
                        "socket_timeout": None,
                        # Sized for bursts of connects: every group_add borrows a connection at once.
                        "max_connections": CHANNEL_REDIS_MAX_CONNECTIONS,
                    }
                    for url in CHANNEL_REDIS_URLS
                ],
                "prefix": CHANNEL_REDIS_PREFIX,
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000, minimum=10),
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
    CACHES = {
        "default": {
            # One Redis connection pool per process, not one per request (config/cache.py). When every connection
            # is in use a request waits for one (up to 10 s) instead of failing: redis-py's plain pool raises past
            # its max_connections (100 by default), and a process serves more requests than that at once in a burst.
            "BACKEND": "config.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "cache"),
            "OPTIONS": {
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": 100,
                "timeout": 10,
                # An unreachable Redis costs a request 2 s, not redis-py's 5 (rate limits fail open for answers).
                "socket_connect_timeout": 2,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = None
# Without a broker the embedded default runs every task in-process, at the moment it is queued.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = env_bool("CELERY_TASK_EAGER_PROPAGATES", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)}
# Run the beat schedule from a thread of the web process (the embedded default without beat; bin/run sets it).
BEAT_IN_PROCESS = env_bool("BEAT_IN_PROCESS", False)
CELERY_BEAT_SCHEDULE = {
    "outbox-relay": {"task": "consumers.tasks.outbox_relay", "schedule": 5.0},
    "outbox-prune": {"task": "consumers.tasks.outbox_prune", "schedule": 3600.0},
}

# --- Auth, accounts, lockout ----------------------------------------------------------------------------
AUTH_USER_MODEL = "directory.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "directory.auth.OrganisationLoginBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    # One-time initial passwords from a directory import; replaced at first sign-in (directory/hashers.py).
    "directory.hashers.InitialPasswordHasher",
]
# The login ID is unique per organisation, not site-wide; our backend authenticates on (organisation, login ID).
SILENCED_SYSTEM_CHECKS = ["auth.W004"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3600, minimum=300)
LOGIN_URL = "/"
# Organisation settings pages ask for the password again after this long ("sudo mode").
SUDO_MODE_SECONDS = env_int("SUDO_MODE_SECONDS", 15 * 60, minimum=60)

# django-axes: ten failures for one (organisation:login ID, client) pair lock that pair; a client that fails
# across many IDs is locked after AXES_CLIENT_FAILURE_LIMIT. Never by login ID alone, so a stranger cannot
# lock out a crisis manager on a disaster day.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10, minimum=3)
AXES_CLIENT_FAILURE_LIMIT = env_int("AXES_CLIENT_FAILURE_LIMIT", 50, minimum=AXES_FAILURE_LIMIT)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_HANDLER = "directory.auth.LockoutHandler"
AXES_USERNAME_CALLABLE = "directory.auth.lockout_username"
AXES_LOCKOUT_CALLABLE = "directory.auth.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False
# How many reverse proxies in front of daphne append to X-Forwarded-For. 0 trusts only the socket address,
# so a client cannot dodge the lockout by sending its own X-Forwarded-For.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=5)
AXES_CLIENT_IP_CALLABLE = "directory.auth.client_ip"

# --- Sessions and security headers ----------------------------------------------------------------------
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600, minimum=300)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if TRUSTED_PROXY_COUNT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
# Load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy (config/security.py): only this origin, no inline script or style. CSP_EXTRA adds
# sources, e.g. "img-src https://cdn.example.jp; connect-src wss://ws.example.jp"; CSP_REPORT_ONLY=true sends
# the policy as Content-Security-Policy-Report-Only instead (trying out a change); CSP_REPORT_URI collects
# violation reports. The names and shape are Django 6's, whose own middleware can replace ours.
_CSP = csp_policy(extra=env_str("CSP_EXTRA"), report_uri=env_url("CSP_REPORT_URI", "", ("https", "http")))
CSP_REPORT_ONLY = env_bool("CSP_REPORT_ONLY", False)
SECURE_CSP: dict[str, list[str]] = {} if CSP_REPORT_ONLY else _CSP
SECURE_CSP_REPORT_ONLY: dict[str, list[str]] = _CSP if CSP_REPORT_ONLY else {}
PERMISSIONS_POLICY = DEFAULT_PERMISSIONS_POLICY

# --- Languages ------------------------------------------------------------------------------------------
LANGUAGE_CODE = env_choice("LANGUAGE_CODE", "ja", ("ja", "en"))
LANGUAGES = [("ja", _("Japanese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "config" / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Tokyo")
USE_I18N = True
USE_TZ = True

# --- Static files and uploads ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or STATE_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from the apps when collectstatic has not run (the embedded default).
WHITENOISE_USE_FINDERS = True
STORAGES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": Path(env_str("MEDIA_ROOT") or STATE_DIR / "media")},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGO_MAX_BYTES = 512 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024, minimum=1024)

# --- E-mail ---------------------------------------------------------------------------------------------
for _key, _value in email_settings("EMAIL_URL", "console://").items():
    globals()[_key] = _value
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Tsunagu <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Bearer token of POST /api/mail/bounces/ (the mail server or a provider reports bounces); empty turns it off.
MAIL_BOUNCE_TOKEN = env_str("MAIL_BOUNCE_TOKEN")

# --- Web push -------------------------------------------------------------------------------------------
VAPID_SUBJECT = env_url("VAPID_SUBJECT", "mailto:admin@localhost", ("mailto", "https"))
VAPID_PRIVATE_KEY = env_str("VAPID_PRIVATE_KEY")
VAPID_PUBLIC_KEY = env_str("VAPID_PUBLIC_KEY")
# Key rotation: earlier VAPID private keys (comma-separated) still used for the subscriptions made with them,
# until those are gone (`manage.py vapid_status` shows how many remain).
VAPID_PREVIOUS_PRIVATE_KEYS = env_str("VAPID_PREVIOUS_PRIVATE_KEYS")
# How long the confirmation link of a private contact address, and a contact check's link, stay valid.
PRIVATE_CONTACT_CONFIRM_SECONDS = env_int("PRIVATE_CONTACT_CONFIRM_SECONDS", 7 * 24 * 3600, minimum=600)
CONTACT_CHECK_LINK_SECONDS = env_int("CONTACT_CHECK_LINK_SECONDS", 14 * 24 * 3600, minimum=600)
PUSH_DEFAULT_TTL = env_int("PUSH_DEFAULT_TTL", 24 * 3600, minimum=0, maximum=28 * 24 * 3600)
PUSH_ALLOW_LOOPBACK_HTTP = env_bool("PUSH_ALLOW_LOOPBACK_HTTP", False)
PUSH_CONCURRENCY = env_int("PUSH_CONCURRENCY", 50, minimum=1, maximum=1000)

# --- Live events ----------------------------------------------------------------------------------------
# How long published events are held for clients that reconnect and ask for what they missed.
EVENT_RETENTION_HOURS = env_int("EVENT_RETENTION_HOURS", 24, minimum=1)
# A reconnecting client further behind than this gets a snapshot instead of a replay.
EVENT_REPLAY_LIMIT = env_int("EVENT_REPLAY_LIMIT", 200, minimum=1)
# The live disaster board: one ticker per incident sends each board at most one frame per BOARD_FRAME_MS,
# looks for changes every BOARD_POLL_MS, re-reads the numbers every BOARD_REFRESH_SECONDS regardless, and holds
# its lease (so only one web process ticks per incident) for BOARD_LEASE_SECONDS at a time.
BOARD_FRAME_MS = env_int("BOARD_FRAME_MS", 500, minimum=100)
BOARD_POLL_MS = env_int("BOARD_POLL_MS", 250, minimum=50)
BOARD_REFRESH_SECONDS = env_int("BOARD_REFRESH_SECONDS", 5, minimum=1)
BOARD_LEASE_SECONDS = env_int("BOARD_LEASE_SECONDS", 5, minimum=2)
# Sockets check again this often that their person may still read a board (roles and departments change by import).
STREAM_RECHECK_SECONDS = env_int("STREAM_RECHECK_SECONDS", 15, minimum=1)

# --- Talk (chat) ----------------------------------------------------------------------------------------
# Uploaded files and archived talk logs live here, outside the static root, under random names.
TALK_FILES_DIR = Path(env_str("TALK_FILES_DIR") or STATE_DIR / "talk-files")
TALK_LOGS_DIR = Path(env_str("TALK_LOGS_DIR") or STATE_DIR / "talk-logs")
TALK_FILE_MAX_BYTES = env_int("TALK_FILE_MAX_BYTES", 30 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# A talk log file holds at most this many messages; the archive starts a new part after it (and each day).
TALK_LOG_MAX_MESSAGES = env_int("TALK_LOG_MAX_MESSAGES", 10000, minimum=1)
TALK_ARCHIVE_SECONDS = env_int("TALK_ARCHIVE_SECONDS", 600, minimum=10)
# Read receipts stream live in rooms up to this size; larger rooms show them when the room is opened.
TALK_LIVE_RECEIPTS_MAX_MEMBERS = env_int("TALK_LIVE_RECEIPTS_MAX_MEMBERS", 200, minimum=2)
# Sent messages per person per minute.
TALK_SEND_RATE_PER_MINUTE = env_int("TALK_SEND_RATE_PER_MINUTE", 60, minimum=1)
# Someone counts as online while a socket of theirs refreshed their presence within this many seconds.
PRESENCE_TTL_SECONDS = env_int("PRESENCE_TTL_SECONDS", 90, minimum=10)
CELERY_BEAT_SCHEDULE["talk-archive"] = {
    "task": "chat.tasks.talk_archive",
    "schedule": float(TALK_ARCHIVE_SECONDS),
    "options": {"expires": float(TALK_ARCHIVE_SECONDS)},
}
CELERY_BEAT_SCHEDULE["talk-retention"] = {"task": "chat.tasks.talk_retention", "schedule": 24 * 3600.0}

# --- API ------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# --- Logging --------------------------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"axes": {"level": "WARNING"}},
}

# --- JMA feed (safety/jma) ------------------------------------------------------------------------------
# PULL feeds polled with conditional GET, comma-separated; set it empty to turn polling off.
JMA_FEED_URLS = [
    url.strip()
    for url in env_str(
        "JMA_FEED_URLS",
        "https://www.data.jma.go.jp/developer/xml/feed/eqvol.xml,https://www.data.jma.go.jp/developer/xml/feed/extra.xml",
    ).split(",")
    if url.strip()
]
for _url in JMA_FEED_URLS:
    check_url("JMA_FEED_URLS", _url, ("http", "https"))
JMA_POLL_SECONDS = env_int("JMA_POLL_SECONDS", 60, minimum=10)
# Poll from a thread of the web process (the embedded default without Redis and beat; bin/run sets it).
JMA_POLL_IN_PROCESS = env_bool("JMA_POLL_IN_PROCESS", False)
# Bearer token of POST /api/jma/documents/ (push a document in); empty turns the endpoint off.
JMA_INGEST_TOKEN = env_str("JMA_INGEST_TOKEN")
JMA_MAX_DOCUMENT_BYTES = env_int("JMA_MAX_DOCUMENT_BYTES", 5 * 1024 * 1024, minimum=64 * 1024)
# Automatic dispatch ignores a report that was older than this when it arrived (a sample file ingested by hand,
# the hours of entries a first poll finds); 0 turns the check off. Replay and verify never apply it.
JMA_DISPATCH_MAX_AGE_MINUTES = env_int("JMA_DISPATCH_MAX_AGE_MINUTES", 60, minimum=0)
JMA_HTTP_TIMEOUT = env_int("JMA_HTTP_TIMEOUT", 20, minimum=1, maximum=300)
CELERY_BEAT_SCHEDULE["jma-poll"] = {
    "task": "safety.tasks.jma_poll",
    "schedule": float(JMA_POLL_SECONDS),
    "options": {"expires": float(JMA_POLL_SECONDS)},
}

# --- Safety confirmation (safety/) ----------------------------------------------------------------------
# How long a signed answer link (in the push and the e-mail) can be used.
SAFETY_ANSWER_LINK_SECONDS = env_int("SAFETY_ANSWER_LINK_SECONDS", 14 * 24 * 3600, minimum=3600)
# Deliveries claimed by a sender per round trip (one SMTP connection or one batch of pushes).
SAFETY_DISPATCH_BATCH = env_int("SAFETY_DISPATCH_BATCH", 200, minimum=1, maximum=5000)
# Push rows claimed per batch, sent over connections kept open from one batch to the next. Larger than the
# mail batch: a batch costs a few database round trips, and a crash repeats at most one batch of pushes, each
# with the same tag and Topic, so a phone still shows one notification.
SAFETY_PUSH_BATCH = env_int("SAFETY_PUSH_BATCH", 1000, minimum=1, maximum=10000)
# Tasks started for each send: they share its rows (each claims its own batches), so a large send can use several
# worker children at once. More than 1 only with children to spare: a send that holds every child makes the next
# JMA decision, the outbox relay and the scans wait for it.
SAFETY_DISPATCH_RUNNERS = env_int("SAFETY_DISPATCH_RUNNERS", 1, minimum=1, maximum=16)
# A send whose worker has not reported for this long is taken over by the scan (a dead worker's).
SAFETY_CLAIM_STALE_SECONDS = env_int("SAFETY_CLAIM_STALE_SECONDS", 30, minimum=5)
# How often beat scans the database for stalled sends and due end notices.
SAFETY_SCAN_SECONDS = env_int("SAFETY_SCAN_SECONDS", 15, minimum=1)
CELERY_BEAT_SCHEDULE["safety-scan"] = {
    "task": "safety.tasks.safety_scan",
    "schedule": float(SAFETY_SCAN_SECONDS),
    "options": {"expires": float(SAFETY_SCAN_SECONDS)},
}
# VAPID key rotation: drops earlier keys no subscription uses any more.
CELERY_BEAT_SCHEDULE["vapid-prune"] = {"task": "consumers.tasks.vapid_prune", "schedule": 3600.0}
# Contact verification (連絡先の確認): starts scheduled checks that are due, and resumes checks a dead worker left.
CELERY_BEAT_SCHEDULE["contact-check-scan"] = {
    "task": "safety.check_tasks.contact_check_scan",
    "schedule": 60.0,
    "options": {"expires": 60.0},
}
