from django.apps import AppConfig


class ConsumersConfig(AppConfig):
    name = "consumers"

    def ready(self) -> None:
        # Check the VAPID environment at start-up so a bad key stops the service with its variable's name.
        from consumers.vapid import vapid_keys

        vapid_keys()
        from django.conf import settings

        from config.beat_thread import is_server_process, start_beat_thread

        if settings.BEAT_IN_PROCESS and is_server_process():
            start_beat_thread()
