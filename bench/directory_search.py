"""Directory search over 10,000 people answers in under 50 ms (p95 of each kind of search).

The people are imported through the importer (so their search text is the real one); then every search runs
through `directory.selectors.person_search` many times, interleaved with a baseline in the same process: the
first page of the directory with no search terms (same ordering and limit), so the ratios show what the
search itself adds on this machine at this moment.

    .venv/bin/python -m bench.directory_search            # temporary SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tsunagu_bench .venv/bin/python -m bench.directory_search
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import (
    department_file,
    median,
    p95,
    setup_django,
    temporary_organization,
    user_file,
    user_rows,
    vacuum,
    verdict,
)

PEOPLE = 10_000
TARGET_MS = 50.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=PEOPLE)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args(argv)

    print(f"database: {setup_django()}")

    from directory.importer import import_apply
    from directory.models import Organization, User
    from directory.selectors import person_search

    rows = user_rows(args.people)
    someone = rows[len(rows) // 3]
    mobile = next(row[11] for row in rows[len(rows) // 2 :] if row[11])
    searches = {
        "name (kanji)": someone[2],
        "full name": f"{someone[2]} {someone[3]}",
        "kana as hiragana": "".join(chr(ord(ch) - 0x60) for ch in someone[4]),
        "department": "東京営業部",
        "phone digits": mobile[-9:],
        "e-mail": someone[8].split("@")[0],
        "matches everyone": "example",
        "matches no one": "zzzzzz",
    }

    def baseline(organization: Organization) -> list[User]:
        return list(
            User.objects.filter(organization=organization, is_active=True)
            .select_related("department")
            .order_by("last_name_kana", "first_name_kana", "login_id")[:50]
        )

    with temporary_organization("bench-search") as organization:
        plan = import_apply(organization=organization, departments_raw=department_file(), users_raw=user_file(rows))
        assert not plan.faults, plan.report(applied=False)["errors"][:3]
        vacuum()  # statistics for the planner, as autovacuum gathers them after a large import
        print(f"{len(rows)} people imported; searching with directory.selectors.person_search(limit=50)")
        for label, query in searches.items():
            found = person_search(organization=organization, query=query, limit=50)
            print(f"  {label:<17} {query!r}: {len(found)} found")
            if label != "matches no one":
                assert found, f"{label}: {query!r} found no one"

        times: dict[str, list[float]] = {label: [] for label in searches}
        base: list[float] = []
        for _ in range(3):  # warm-up
            baseline(organization)
            for query in searches.values():
                person_search(organization=organization, query=query, limit=50)
        for _ in range(args.repeat):
            start = time.perf_counter()
            baseline(organization)
            base.append(time.perf_counter() - start)
            for label, query in searches.items():
                start = time.perf_counter()
                person_search(organization=organization, query=query, limit=50)
                times[label].append(time.perf_counter() - start)

    base_ms = median(base) * 1000
    print(f"baseline (first page, no terms): median {base_ms:.1f} ms, p95 {p95(base) * 1000:.1f} ms")
    worst = 0.0
    for label, values in times.items():
        ms = p95(values) * 1000
        worst = max(worst, ms)
        typical = median(values) * 1000
        print(f"  {label:<17} median {typical:6.1f} ms  p95 {ms:6.1f} ms  (median {typical / base_ms:.1f}x baseline)")
    return verdict(f"directory_search: p95 {worst:.1f} ms (target <{TARGET_MS:g} ms)", worst < TARGET_MS)


if __name__ == "__main__":
    sys.exit(main())
