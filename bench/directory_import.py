"""P4: a 10,000-person user file imports in at most 5 s from upload to applied, and within 2x a bare
`User.objects.bulk_create` of the same rows measured in the same run.

Each round imports the department file and the user file (bytes -> `import_apply` -> committed) into a fresh
organisation, and bulk-creates the same people (same field values, password hashes computed beforehand) into
another. Rounds alternate the two so that machine noise hits both alike; the figures are medians.

    .venv/bin/python -m bench.directory_import            # temporary SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tsunagu_bench .venv/bin/python -m bench.directory_import
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.common import (
    department_file,
    median,
    setup_django,
    temporary_organization,
    timed,
    user_file,
    user_rows,
    verdict,
)

PEOPLE = 10_000
TARGET_SECONDS = 5.0
TARGET_RATIO = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=PEOPLE)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"database: {setup_django()}")

    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from directory.hashers import InitialPasswordHasher
    from directory.importer import import_apply
    from directory.models import Department, Organization, User
    from directory.search import search_text

    rows = user_rows(args.people)
    departments_raw = department_file()
    users_raw = user_file(rows)
    print(f"user file: {len(rows)} people, {len(users_raw) / 1e6:.2f} MB UTF-8; department file: 12 departments")

    def run_import(organization: Organization, users: bytes) -> Any:
        plan = import_apply(organization=organization, departments_raw=departments_raw, users_raw=users)
        if plan.faults:
            raise SystemExit(f"the generated file has faults: {plan.report(applied=False)['errors'][:3]}")
        return plan

    hasher = InitialPasswordHasher()
    hashes = [make_password(row[1], hasher=hasher) for row in rows]

    def prepared(organization: Organization) -> list[dict[str, Any]]:
        """The same field values the import writes, computed outside the timed part."""
        plan = import_apply(organization=organization, departments_raw=departments_raw)  # through the importer
        assert not plan.faults, plan.faults
        by_code = {d.code: d for d in Department.objects.filter(organization=organization)}
        values = []
        for row, password in zip(rows, hashes, strict=True):
            dept = by_code[row[6]]
            values.append(
                {
                    "organization": organization,
                    "login_id": row[0],
                    "password": password,
                    "last_name": row[2],
                    "first_name": row[3],
                    "last_name_kana": row[4],
                    "first_name_kana": row[5],
                    "department": dept,
                    "position": row[7],
                    "email": row[8],
                    "email2": row[9],
                    "phone_number": row[10],
                    "mobile_phone_number": row[11],
                    "extension_number": row[12],
                    "region_code": row[13],
                    "talk_available": row[15] == "1",
                    "anpi_login_id": row[16] or None,
                    "language": row[17],
                    "must_change_password": True,
                    "search_text": search_text(
                        last_name=row[2],
                        first_name=row[3],
                        last_name_kana=row[4],
                        first_name_kana=row[5],
                        department_name=dept.name,
                        position=row[7],
                        email=row[8],
                        email2=row[9],
                        phones=(row[10], row[11], row[12]),
                        login_id=row[0],
                    ),
                }
            )
        return values

    def bare_bulk_create(values: list[dict[str, Any]]) -> None:
        with transaction.atomic():
            User.objects.bulk_create([User(**kw) for kw in values])

    # Warm-up: imports, compiled regexes, the connection, the query plans.
    with temporary_organization("bench-import-warm") as organization:
        run_import(organization, user_file(rows[:200]))

    import_times: list[float] = []
    bulk_times: list[float] = []
    ratios: list[float] = []
    reimport_times: list[float] = []
    for round_no in range(1, args.rounds + 1):
        with temporary_organization("bench-import-base") as organization:
            values = prepared(organization)
            bulk, _ = timed(bare_bulk_create, values)
        with temporary_organization("bench-import") as organization:
            seconds, plan = timed(run_import, organization, users_raw)
            assert plan.users.created and len(plan.users.created) == len(rows), plan.report(applied=True)["users"]
            assert User.objects.filter(organization=organization).count() == len(rows)
            again, plan = timed(run_import, organization, users_raw)
            assert plan.users.unchanged == len(rows), plan.report(applied=True)["users"]
        import_times.append(seconds)
        bulk_times.append(bulk)
        ratios.append(seconds / bulk)
        reimport_times.append(again)
        print(
            f"round {round_no}: import {seconds:.2f}s, bare bulk_create {bulk:.2f}s, ratio {seconds / bulk:.2f}x; "
            f"re-import of the same file (all unchanged) {again:.2f}s",
            flush=True,
        )

    # Once more, every person changed (as when an HR system renumbers extensions): the update path.
    changed = [[*row[:7], "係長", *row[8:12], str(int(row[12]) + 1), *row[13:]] for row in rows]
    with temporary_organization("bench-import-update") as organization:
        run_import(organization, users_raw)
        update, plan = timed(run_import, organization, user_file(changed))
        assert len(plan.users.updated) == len(rows), plan.report(applied=True)["users"]
    print(f"re-import with all {len(rows)} people changed: {update:.2f}s")

    seconds = median(import_times)
    ratio = median(ratios)
    print(f"import from upload to applied, {len(rows)} people: median {seconds:.2f}s (best {min(import_times):.2f}s)")
    print(f"bare User.objects.bulk_create of the same rows: median {median(bulk_times):.2f}s")
    print(f"re-import, nothing changed: median {median(reimport_times):.2f}s")
    ok = seconds <= TARGET_SECONDS and ratio <= TARGET_RATIO
    return verdict(
        f"directory_import: {seconds:.2f}s, {ratio:.2f}x bulk_create (target ≤{TARGET_SECONDS:g}s, ≤{TARGET_RATIO:g}x)",
        ok,
    )


if __name__ == "__main__":
    sys.exit(main())
