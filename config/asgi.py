"""ASGI entry point: HTTP goes to Django, WebSockets to the live consumer (session auth, origin checked)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.concurrency import HttpConcurrencyLimit  # noqa: E402
from consumers.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # A burst of answers waits its turn here rather than piling onto the database pool.
        "http": HttpConcurrencyLimit(
            django_asgi_app,
            limit=settings.HTTP_CONCURRENCY,
            priority_limit=settings.HTTP_PRIORITY_CONCURRENCY,
            wait_seconds=settings.HTTP_QUEUE_SECONDS,
        ),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
