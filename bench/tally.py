"""P6: the per-department tally of an incident with 10,000 recipients in 200 departments takes at most 1.5x the
time of a raw SQL GROUP BY of the same counts, measured in the same run.

The organisation, its 200 departments (two levels), 10,000 safety-confirmation users (50 of them in no
department), an open incident, its send and the recipients with varied answers (about 65% answered: safe,
minor, serious, a form without the safety question; some needing help) are written with `bulk_create`; a second,
earlier incident of the same people sits in the same table, as it would after a drill. Then, alternating,
`safety.selectors.tally_by_department(incident=...)` (what the result page and the API call: the GROUP BY, the
department names and order, the per-department rows) and one `cursor.execute` of

    SELECT u.department_id, r.status, COUNT(*), COUNT(*) FILTER (WHERE r.needs_help)
    FROM safety_recipient r JOIN directory_user u ON u.id = r.person_id
    WHERE r.incident_id = %s GROUP BY u.department_id, r.status

with its rows fetched. Both must give the same numbers. The figure is the ratio of the medians.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tsunagu_bench .venv/bin/python -m bench.tally
    .venv/bin/python -m bench.tally            # temporary SQLite
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.common import median, p95, setup_django, temporary_organization, verdict

PEOPLE = 10_000
DEPARTMENTS = 200
TARGET_RATIO = 1.5
RAW_SQL = (
    "SELECT u.department_id, r.status, COUNT(*), COUNT(*) FILTER (WHERE r.needs_help)"
    " FROM safety_recipient r JOIN directory_user u ON u.id = r.person_id"
    " WHERE r.incident_id = %s GROUP BY u.department_id, r.status"
)


def raw_group_by(incident_id: int) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(RAW_SQL, [incident_id])
        return list(cursor.fetchall())


def counts_of_raw(rows: list[tuple[Any, ...]]) -> dict[int | None, tuple[dict[str, int], int]]:
    """{department id: ({status or "none": n}, needing help)} from the raw rows."""
    out: dict[int | None, tuple[dict[str, int], int]] = {}
    for department_id, status, n, helped in rows:
        counts, help_ = out.get(department_id, ({}, 0))
        counts[status or "none"] = counts.get(status or "none", 0) + n
        out[department_id] = (counts, help_ + helped)
    return out


def counts_of_tally(rows: list[Any]) -> dict[int | None, tuple[dict[str, int], int]]:
    return {row.department_id: ({k: v for k, v in row.counts.items() if v}, row.needs_help) for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=PEOPLE)
    parser.add_argument("--departments", type=int, default=DEPARTMENTS)
    parser.add_argument("--repeat", type=int, default=40, help="timed runs of each, alternating")
    args = parser.parse_args(argv)

    print(f"database: {setup_django()}")

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench._answers_data import analyze, departments_create, incident_open, people_create, recipients_create
    from safety.selectors import tally_by_department

    with temporary_organization("bench-tally") as organization:
        started = time.perf_counter()
        departments = departments_create(organization, args.departments)
        person_ids = people_create(organization, args.people, departments, without_department=args.people // 200)
        earlier = incident_open(organization, title="訓練")
        recipients_create(earlier, person_ids, answered=0.9, seed=1)
        incident = incident_open(organization)
        recipients_create(incident, person_ids, answered=0.65, seed=6)
        analyze()
        print(
            f"{len(person_ids):,} people in {len(departments)} departments ({args.people // 200} in none), "
            f"2 incidents of {len(person_ids):,} recipients each, written in {time.perf_counter() - started:.1f} s"
        )

        with CaptureQueriesContext(connection) as queries:
            tally = tally_by_department(incident=incident)
        raw = raw_group_by(incident.id)
        ours_counts, raw_counts = counts_of_tally(tally), counts_of_raw(raw)
        assert ours_counts == raw_counts, "tally_by_department and the raw GROUP BY disagree"
        total = sum(row.total for row in tally)
        assert total == len(person_ids), (total, len(person_ids))
        overall: dict[str, int] = {}
        for counts, _help in raw_counts.values():
            for status, n in counts.items():
                overall[status] = overall.get(status, 0) + n
        print(
            f"same numbers: {len(tally)} department rows (the no-department row included), {len(raw)} GROUP BY "
            f"rows; overall {dict(sorted(overall.items()))}, needing help {sum(h for _c, h in raw_counts.values())}"
        )

        for _ in range(5):  # warm-up: connection, plans, caches
            tally_by_department(incident=incident)
            raw_group_by(incident.id)
        ours_times: list[float] = []
        raw_times: list[float] = []
        for i in range(args.repeat):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which goes first
            for which in order:
                start = time.perf_counter()
                if which == 0:
                    tally_by_department(incident=incident)
                    ours_times.append(time.perf_counter() - start)
                else:
                    raw_group_by(incident.id)
                    raw_times.append(time.perf_counter() - start)

    ours_ms, raw_ms = median(ours_times) * 1000, median(raw_times) * 1000
    ratio = ours_ms / raw_ms
    print(f"{args.repeat} alternating runs each:")
    print(
        f"  tally_by_department   median {ours_ms:6.2f} ms  p95 {p95(ours_times) * 1000:6.2f} ms  "
        f"({len(queries)} {'query' if len(queries) == 1 else 'queries'})"
    )
    print(f"  raw SQL GROUP BY      median {raw_ms:6.2f} ms  p95 {p95(raw_times) * 1000:6.2f} ms  (1 query)")
    return verdict(f"tally: {ratio:.2f}x raw GROUP BY (target <= {TARGET_RATIO:g}x)", ratio <= TARGET_RATIO)


if __name__ == "__main__":
    sys.exit(main())
