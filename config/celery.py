"""The Celery app. Tasks are interfaces that call services; beat runs the periodic scans."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("tsunagu")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
