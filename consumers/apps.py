from django.apps import AppConfig


class ConsumersConfig(AppConfig):
    name = "consumers"

    def ready(self) -> None:
        # Check the VAPID environment at start-up so a bad key stops the service with its variable's name.
        from consumers.vapid import vapid_keys

        vapid_keys()
        from django.conf import settings

        from safety.apps import _is_server_process

        if settings.BEAT_IN_PROCESS and _is_server_process():
            from config.beat_thread import start_beat_thread

            start_beat_thread()
