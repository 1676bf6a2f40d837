"""Shared by `bench.answers` and `bench.tally`: an organisation's departments, people and an open incident with
its recipients, written with `bulk_create` (nothing is sent; the benchmarks measure answering and tallying)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from directory.models import Department, Organization
    from safety.models import Dispatch, Incident

BATCH = 2000


def departments_create(organization: Organization, count: int) -> list[Department]:
    """`count` departments in two levels: one head office per 20 departments, the rest its branches."""
    from directory.models import Department

    heads_count = max(1, count // 20)
    heads = Department.objects.bulk_create(
        [
            Department(organization=organization, code=f"B{i:04d}", name=f"本部{i:03d}", sort_order=i * 100)
            for i in range(heads_count)
        ]
    )
    branches = Department.objects.bulk_create(
        [
            Department(
                organization=organization,
                code=f"B{heads_count + i:04d}",
                name=f"支店{i:04d}",
                parent=heads[i % heads_count],
                sort_order=(i % heads_count) * 100 + 1 + i // heads_count,
            )
            for i in range(count - heads_count)
        ],
        batch_size=BATCH,
    )
    return [*heads, *branches]


def people_create(
    organization: Organization, count: int, departments: Sequence[Department], *, without_department: int = 0
) -> list[int]:
    """`count` safety-confirmation users spread over `departments` (the last `without_department` in none);
    returns their ids in creation order. No usable password: they answer through signed links."""
    from directory.models import User

    people = []
    for i in range(count):
        department = departments[i % len(departments)] if i < count - without_department else None
        people.append(
            User(
                organization=organization,
                login_id=f"p{i:06d}@example.co.jp",
                password="!",  # unusable  # noqa: S106
                last_name=f"社員{i:06d}",
                first_name="太郎",
                department=department,
                email=f"p{i:06d}@example.co.jp",
                anpi_login_id=f"anpi{i:06d}",
                language="en" if i % 11 == 0 else "ja",
                search_text=f"社員{i:06d} 太郎",
            )
        )
    created = User.objects.bulk_create(people, batch_size=BATCH)
    return [person.id for person in created]


def incident_open(organization: Organization, title: str = "地震発生: 安否確認") -> Incident:
    """An incident with the default questions, accepting answers (as `incident_open` leaves it)."""
    from django.utils import timezone

    from safety import services
    from safety.models import IncidentStatus

    incident = services.incident_create(
        organization=organization, actor=None, title=title, message="安否を回答してください。"
    )
    incident.status = IncidentStatus.ACCEPTING
    incident.opened_at = timezone.now()
    incident.save(update_fields=["status", "opened_at"])
    return incident


def recipients_create(
    incident: Incident,
    person_ids: Sequence[int],
    *,
    answered: float = 0.0,
    deliveries: bool = False,
    seed: int = 6,
) -> Dispatch:
    """One send to `person_ids`: a dispatch, a recipient row each and, with `deliveries`, a sent delivery row per
    channel. A share `answered` of the people already has an answer (status, help, counts; no Answer rows: the
    tally reads only the recipients)."""
    from django.utils import timezone

    from safety.models import Channel, Delivery, DeliveryState, Dispatch, Recipient

    now = timezone.now()
    dispatch = Dispatch.objects.create(
        incident=incident,
        number=1,
        target={"mode": "everyone"},
        recipients=len(person_ids),
        created_at=now,
        heartbeat_at=now,
        finished_at=now,
    )
    rng = random.Random(seed)
    rows = []
    for person_id in person_ids:
        status, help_ = "", False
        if rng.random() < answered:
            status = rng.choices(["safe", "minor", "serious", "answered"], weights=[80, 10, 3, 7])[0]
            help_ = (status in ("minor", "serious") and rng.random() < 0.5) or rng.random() < 0.02
        rows.append(
            Recipient(
                incident=incident,
                person_id=person_id,
                first_dispatch=dispatch,
                status=status,
                needs_help=help_,
                answer_count=1 if status else 0,
                first_answered_at=now if status else None,
                answered_at=now if status else None,
                created_at=now,
            )
        )
    Recipient.objects.bulk_create(rows, batch_size=BATCH)
    if deliveries:
        Delivery.objects.bulk_create(
            [
                Delivery(
                    incident=incident,
                    person_id=person_id,
                    channel=channel,
                    dispatch=dispatch,
                    state=DeliveryState.SENT,
                    sent_at=now,
                    updated_at=now,
                )
                for person_id in person_ids
                for channel in (Channel.PUSH, Channel.EMAIL, Channel.INAPP)
            ],
            batch_size=BATCH,
        )
    return dispatch


def analyze() -> None:
    """PostgreSQL: planner statistics for the freshly written tables, as autovacuum gathers them in a while."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "ANALYZE directory_user, directory_department, safety_incident, safety_recipient, safety_delivery,"
            " safety_answer"
        )
