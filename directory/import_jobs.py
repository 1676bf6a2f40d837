"""Import jobs: an upload is checked (dry run) by a Celery task, then applied when the administrator confirms.

Progress is ephemeral and published as it happens (`publish_now`) on the administrator's own stream; the
outcome is saved with the job and published after commit."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from consumers.publisher import publish_now, publish_on_commit
from directory.events import user_group
from directory.importer import ImportPlan, import_apply, import_plan
from directory.models import ImportJob, Organization, User
from directory.tsv import MAX_FILE_BYTES

logger = logging.getLogger(__name__)

IMPORT_PROGRESS = "import.progress"
IMPORT_CHECKED = "import.checked"
IMPORT_FINISHED = "import.finished"
# Share of the bar each phase fills: checking, then applying.
_PHASES = {"check": (0, 50), "apply": (50, 100)}


def _read(upload: Any) -> tuple[str, bytes | None]:
    if upload is None:
        return "", None
    if upload.size is not None and upload.size > MAX_FILE_BYTES:
        raise ApplicationError(
            _("%(name)s is larger than %(mb)s MB.") % {"name": upload.name, "mb": MAX_FILE_BYTES // (1024 * 1024)},
            code="file_too_large",
        )
    return str(upload.name or "")[:255], upload.read()


@transaction.atomic
def import_job_create(
    *, organization: Organization, actor: User, departments: Any = None, users: Any = None, full_sync: bool = False
) -> ImportJob:
    """Store the uploaded files and queue their check (a dry run) after commit."""
    if departments is None and users is None:
        raise ApplicationError(_("Choose a department file, a user file or both."), code="no_file")
    departments_name, departments_raw = _read(departments)
    users_name, users_raw = _read(users)
    job = ImportJob.objects.create(
        organization=organization,
        created_by=actor,
        departments_name=departments_name,
        departments_file=departments_raw,
        users_name=users_name,
        users_file=users_raw,
        full_sync=full_sync,
    )
    from directory.tasks import import_job_check

    transaction.on_commit(lambda: import_job_check.delay(job.id))
    return job


@transaction.atomic
def import_job_confirm(*, job: ImportJob) -> ImportJob:
    """Apply a checked import (after commit, in a Celery task)."""
    job = ImportJob.objects.select_for_update().get(id=job.id)
    if job.status != ImportJob.Status.PREVIEWED:
        raise ApplicationError(_("Only a checked import without errors can be applied."), code="not_ready", status=409)
    job.status = ImportJob.Status.APPLYING
    job.save(update_fields=["status"])
    from directory.tasks import import_job_apply

    transaction.on_commit(lambda: import_job_apply.delay(job.id))
    return job


class _Progress:
    """Turns the importer's progress callback into a few events a second on the administrator's stream."""

    def __init__(self, job: ImportJob) -> None:
        self.job = job
        self.last_sent = 0.0
        self.last_percent = -1

    def __call__(self, phase: str, done: int, total: int) -> None:
        start, end = _PHASES.get(phase, (0, 100))
        percent = start + (end - start) * done // max(total, 1)
        now = time.monotonic()
        if percent == self.last_percent or (now - self.last_sent < 0.2 and percent < 100 and percent != end):
            return
        self.last_sent, self.last_percent = now, percent
        if self.job.created_by_id:
            publish_now(
                user_group(self.job.created_by_id),
                IMPORT_PROGRESS,
                {"job": self.job.id, "phase": phase, "percent": percent},
            )


def import_job_run(*, job_id: int, apply: bool) -> ImportJob:
    """Check (dry run) or apply a job; save the outcome and publish it after commit."""
    job = ImportJob.objects.select_related("organization", "created_by").get(id=job_id)
    if job.status in (ImportJob.Status.APPLIED, ImportJob.Status.INVALID, ImportJob.Status.FAILED):
        return job  # a re-delivered task: the outcome is already saved
    if not apply and job.status != ImportJob.Status.PENDING:
        return job
    progress = _Progress(job)
    files: dict[str, Any] = {
        "organization": job.organization,
        "departments_raw": bytes(job.departments_file) if job.departments_file is not None else None,
        "users_raw": bytes(job.users_file) if job.users_file is not None else None,
        "full_sync": job.full_sync,
        "actor": job.created_by,
        "progress": progress,
    }
    try:
        plan: ImportPlan = import_apply(**files) if apply else import_plan(**files)
    except Exception:
        # import_apply is one transaction: nothing was written. Say so rather than leave the job hanging.
        logger.exception("import job %s failed", job.id)
        ImportJob.objects.filter(id=job.id).update(
            status=ImportJob.Status.FAILED,
            errors=[
                {
                    "file": None,
                    "line": None,
                    "column": None,
                    "code": "internal_error",
                    "message": "The import failed unexpectedly; nothing was changed.",
                }
            ],
        )
        raise
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(id=job.id)
        report = plan.report(applied=apply and not plan.faults)
        job.errors = report["errors"]
        if plan.faults:
            job.status = ImportJob.Status.INVALID
        elif apply:
            job.status = ImportJob.Status.APPLIED
            job.result = report
            job.applied_at = timezone.now()
            # The files hold initial passwords: keep them no longer than needed.
            job.departments_file = None
            job.users_file = None
        else:
            job.status = ImportJob.Status.PREVIEWED
        if not apply:
            job.preview = report
        job.save()
        if job.created_by_id:
            publish_on_commit(
                user_group(job.created_by_id),
                IMPORT_FINISHED if apply else IMPORT_CHECKED,
                {"job": job.id, "status": job.status, "errors": len(job.errors)},
            )
    progress("apply" if apply else "check", 1, 1)
    return job


def import_job_data(job: ImportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "status_label": str(job.get_status_display()),
        "full_sync": job.full_sync,
        "departments_file": job.departments_name,
        "users_file": job.users_name,
        "preview": job.preview,
        "result": job.result,
        "errors": job.errors,
        "created_at": job.created_at.isoformat(),
        "applied_at": job.applied_at.isoformat() if job.applied_at else None,
    }
