"""Production profile: the same settings, with safe defaults and the services required.

Chosen with DJANGO_SETTINGS_MODULE=config.settings.production; every value still comes from the environment.
"""

import os

from django.core.exceptions import ImproperlyConfigured

for _name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "EMAIL_URL", "SITE_URL"):
    if not os.environ.get(_name, "").strip():
        raise ImproperlyConfigured(f"{_name} must be set in production")

os.environ.setdefault("SECURE_COOKIES", "true")
os.environ.setdefault("SECURE_SSL_REDIRECT", "true")
os.environ.setdefault("SECURE_HSTS_SECONDS", "31536000")

from .base import *  # noqa: E402,F403

DEBUG = False
if len(SECRET_KEY) < 50:  # noqa: F405
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters in production")
STORAGES["staticfiles"]["BACKEND"] = "whitenoise.storage.CompressedManifestStaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = False
if not CHANNEL_REDIS_URLS:  # noqa: F405
    raise ImproperlyConfigured("production needs the Redis channel layer: set REDIS_URL or CHANNEL_REDIS_URLS")
if not SECURE_HSTS_PRELOAD:  # noqa: F405
    # Preloading commits the whole domain and its subdomains to HTTPS for good: the customer's decision
    # (SECURE_HSTS_PRELOAD=true), not a default we take for a corporate domain.
    SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "security.W021"]  # noqa: F405
