"""Celery tasks of the directory: interfaces over the import-job service."""

from __future__ import annotations

from celery import shared_task

from directory.import_jobs import import_job_run


@shared_task(acks_late=True)
def import_job_check(job_id: int) -> str:
    return str(import_job_run(job_id=job_id, apply=False).status)


@shared_task(acks_late=True)
def import_job_apply(job_id: int) -> str:
    return str(import_job_run(job_id=job_id, apply=True).status)
