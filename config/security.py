"""Security headers Django 5.2 does not send by itself: Content-Security-Policy and Permissions-Policy.

The policy is a setting, in the shape Django 6 gives `SECURE_CSP` and `SECURE_CSP_REPORT_ONLY` (a dict of
directive -> list of sources), so moving to Django 6 means swapping this middleware for
`django.middleware.csp.ContentSecurityPolicyMiddleware` and nothing else. A response that already carries a
policy keeps it: talk attachments and the organisation logo set a stricter, sandboxing one of their own.

HSTS, X-Content-Type-Options, Referrer-Policy and Cross-Origin-Opener-Policy come from Django's
SecurityMiddleware (config/settings/base.py); X-Frame-Options from XFrameOptionsMiddleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from inspect import iscoroutinefunction
from typing import cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

Policy = Mapping[str, Sequence[str]]

SELF = "'self'"
NONE = "'none'"

# The strictest policy every page of the PWA and the Django admin passes (tests/resilience/test_csp_browser.py):
# only this origin, no inline script or style, no eval. Talk shows attached images through blob: URLs (the
# files themselves are downloads). WebSockets to the same host and port match 'self'.
DEFAULT_CSP: dict[str, list[str]] = {
    "default-src": [SELF],
    "script-src": [SELF],
    "style-src": [SELF],
    "img-src": [SELF, "blob:"],
    "font-src": [SELF],
    "connect-src": [SELF],
    "worker-src": [SELF],
    "manifest-src": [SELF],
    "media-src": [SELF],
    "frame-src": [NONE],
    "object-src": [NONE],
    "base-uri": [SELF],
    "form-action": [SELF],
    "frame-ancestors": [NONE],
}

# Directives an operator may extend through CSP_EXTRA; the others (sandbox, upgrade-insecure-requests...) change
# behaviour rather than add a source, and belong in this file.
EXTENDABLE = frozenset(DEFAULT_CSP) | {"report-uri", "report-to", "script-src-elem", "style-src-elem"}

# Powerful features no page uses are turned off for this origin and anything it frames. The answer page asks
# for the person's location (geolocation=(self)); notifications and push are not governed by this header.
DEFAULT_PERMISSIONS_POLICY = ", ".join(
    [
        "accelerometer=()",
        "camera=()",
        "display-capture=()",
        "geolocation=(self)",
        "gyroscope=()",
        "magnetometer=()",
        "microphone=()",
        "midi=()",
        "payment=()",
        "usb=()",
    ]
)


def csp_policy(*, extra: str = "", report_uri: str = "", name: str = "CSP_EXTRA") -> dict[str, list[str]]:
    """The default policy with the sources an operator adds, e.g. for a CDN or a WebSocket host behind a proxy:
    `extra` is "img-src https://cdn.example.jp; connect-src wss://ws.example.jp" (directives separated by `;`).
    Raises ImproperlyConfigured naming `name` for an unknown directive or a malformed source."""
    policy = {directive: list(sources) for directive, sources in DEFAULT_CSP.items()}
    for part in extra.split(";"):
        words = part.split()
        if not words:
            continue
        directive, sources = words[0].lower(), words[1:]
        if directive not in EXTENDABLE:
            raise ImproperlyConfigured(f"{name}: {directive!r} is not a directive that can be extended")
        if not sources:
            raise ImproperlyConfigured(f"{name}: {directive!r} needs at least one source")
        for source in sources:
            if "," in source or "'" in source.strip("'"):
                raise ImproperlyConfigured(f"{name}: {source!r} is not a valid source")
        current = policy.setdefault(directive, [])
        if current == [NONE]:
            current.clear()
        current.extend(s for s in sources if s not in current)
    if report_uri:
        policy["report-uri"] = [report_uri]
    return policy


def csp_header(policy: Policy) -> str:
    """`{"default-src": ["'self'"], "object-src": ["'none'"]}` -> "default-src 'self'; object-src 'none'"."""
    return "; ".join(" ".join([directive, *sources]).strip() for directive, sources in policy.items())


def _add_headers(response: HttpResponseBase) -> HttpResponseBase:
    # Read per response (a few dozen characters joined), so override_settings in a test takes effect.
    for header, policy in (
        ("Content-Security-Policy", getattr(settings, "SECURE_CSP", {})),
        ("Content-Security-Policy-Report-Only", getattr(settings, "SECURE_CSP_REPORT_ONLY", {})),
    ):
        if policy and header not in response:
            response[header] = csp_header(policy)
    permissions = getattr(settings, "PERMISSIONS_POLICY", "")
    if permissions and "Permissions-Policy" not in response:
        response["Permissions-Policy"] = permissions
    return response


Handler = Callable[[HttpRequest], HttpResponseBase]
AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


@sync_and_async_middleware
def security_headers_middleware(get_response: Handler | AsyncHandler) -> Handler | AsyncHandler:
    """Adds Content-Security-Policy (or its -Report-Only form) and Permissions-Policy to every response that
    has none yet: pages, API answers, static files (placed before WhiteNoise) and errors. Works in the sync
    and the async chain alike, so it costs no thread switch under daphne."""
    if iscoroutinefunction(get_response):
        async_response = cast(AsyncHandler, get_response)

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            return _add_headers(await async_response(request))

        return async_middleware

    sync_response = cast(Handler, get_response)

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _add_headers(sync_response(request))

    return middleware
