from django.urls import re_path

from consumers.live import LiveConsumer, NotFoundConsumer

websocket_urlpatterns = [
    re_path(r"^(?P<slug>[a-z0-9][a-z0-9-]{0,49})/ws/$", LiveConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
