"""Shared by the benchmarks: Django set-up on a throwaway state directory, a generated directory in the
sample files' shape, a temporary organisation, timing helpers and the one-line verdict.

The database is PostgreSQL when DATABASE_URL is set (the database is created if missing and migrated under an
advisory lock, so two benchmarks may start together), else a temporary SQLite file. Each benchmark creates its
own organisations and deletes them at the end, so a shared benchmark database stays empty between runs."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from directory.models import Organization

MIGRATE_LOCK = 0x75_6E_61_67  # pg_advisory_lock key: "unag"


def setup_django() -> str:
    """Configure Django for a benchmark; returns a description of the database for the output."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    state = tempfile.mkdtemp(prefix="tsunagu-bench-")
    atexit.register(shutil.rmtree, state, ignore_errors=True)
    os.environ["STATE_DIR"] = state
    os.environ.setdefault("DB_POOL_MAX_SIZE", "0")  # one plain connection; a pool only adds noise here
    url = os.environ.get("DATABASE_URL", "")
    if url:
        _create_database(url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK])
        try:
            call_command("migrate", verbosity=0)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK])
        vacuum()
        db = connection.settings_dict
        return f"PostgreSQL (DATABASE_URL): database {db['NAME']} on {db['HOST']}:{db['PORT'] or 5432}"
    call_command("migrate", verbosity=0)
    return f"SQLite (temporary file in {state}; set DATABASE_URL for PostgreSQL)"


def _server_params(config: dict[str, Any]) -> dict[str, Any]:
    """Connection parameters of the PostgreSQL server a parsed DATABASE_URL points at."""
    return {
        "host": config.get("HOST") or "127.0.0.1",
        "port": config.get("PORT") or 5432,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
    }


def _create_database(url: str) -> None:
    import dj_database_url
    import psycopg
    from psycopg import sql

    config = dj_database_url.parse(url)
    if "postgres" not in config["ENGINE"]:
        return
    with psycopg.connect(dbname="postgres", autocommit=True, **_server_params(dict(config))) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another benchmark was quicker
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))


def drop_database(url: str) -> None:
    """Drop a throwaway benchmark database (this process's Django connections are closed first)."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: S110 -- Django may not be set up yet; the drop below is what matters
        pass
    config = dj_database_url.parse(url)
    with psycopg.connect(dbname="postgres", autocommit=True, **_server_params(dict(config))) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(config["NAME"])))


# --- A directory in the sample files' shape ----------------------------------------------------------------

DEPARTMENT_ROWS: tuple[tuple[str, str, str, str, int, str, str], ...] = (
    ("D000", "株式会社サンプル", "カブシキガイシャサンプル", "", 1, "03-1234-0000", "info@example.co.jp"),
    ("D100", "本社", "ホンシャ", "D000", 10, "03-1234-1000", ""),
    ("D110", "総務部", "ソウムブ", "D100", 11, "03-1234-1100", "soumu@example.co.jp"),
    ("D111", "人事課", "ジンジカ", "D110", 12, "03-1234-1110", ""),
    ("D120", "開発部", "カイハツブ", "D100", 13, "03-1234-1200", ""),
    ("D200", "営業本部", "エイギョウホンブ", "D000", 20, "03-1234-2000", ""),
    ("D210", "東京営業部", "トウキョウエイギョウブ", "D200", 21, "03-1234-2100", ""),
    ("D220", "大阪支店", "オオサカシテン", "D200", 22, "06-6123-0000", ""),
    ("D230", "名古屋支店", "ナゴヤシテン", "D200", 23, "052-123-0000", ""),
    ("D240", "仙台支店", "センダイシテン", "D200", 24, "022-123-0000", ""),
    ("D250", "金沢営業所", "カナザワエイギョウショ", "D200", 25, "076-123-0000", ""),
    ("D260", "福岡支店", "フクオカシテン", "D200", 26, "092-123-0000", ""),
)
DEPARTMENT_REGION = {"D220": "27", "D230": "23", "D240": "04", "D250": "17", "D260": "40", "D120": "14"}
SURNAMES = (
    ("木村", "キムラ", "kimura"),
    ("山口", "ヤマグチ", "yamaguchi"),
    ("中村", "ナカムラ", "nakamura"),
    ("高橋", "タカハシ", "takahashi"),
    ("佐々木", "ササキ", "sasaki"),
    ("山田", "ヤマダ", "yamada"),
    ("鈴木", "スズキ", "suzuki"),
    ("林", "ハヤシ", "hayashi"),
    ("加藤", "カトウ", "kato"),
    ("井上", "イノウエ", "inoue"),
    ("吉田", "ヨシダ", "yoshida"),
    ("佐藤", "サトウ", "sato"),
    ("髙橋", "タカハシ", "takahashi"),
    ("山本", "ヤマモト", "yamamoto"),
    ("田中", "タナカ", "tanaka"),
    ("清水", "シミズ", "shimizu"),
    ("渡辺", "ワタナベ", "watanabe"),
    ("小林", "コバヤシ", "kobayashi"),
    ("伊藤", "イトウ", "ito"),
)
GIVEN_NAMES = (
    ("悠真", "ユウマ", "yuma"),
    ("蓮", "レン", "ren"),
    ("翔太", "ショウタ", "shota"),
    ("健", "ケン", "ken"),
    ("大輔", "ダイスケ", "daisuke"),
    ("陽菜", "ヒナ", "hina"),
    ("美咲", "ミサキ", "misaki"),
    ("結衣", "ユイ", "yui"),
    ("凛", "リン", "rin"),
    ("さくら", "サクラ", "sakura"),
    ("葵", "アオイ", "aoi"),
    ("拓海", "タクミ", "takumi"),
)
POSITIONS = ("", "", "", "主任", "係長", "課長", "部長", "支店長")
PRIVILEGES = ("SYSTEM_ADMIN", "CRISIS_MANAGER,ADMIN_ANPI", "ADMIN_GOTALK", "DEPARTMENT_MANAGER", "MANAGER")


def department_file() -> bytes:
    from directory.tsv import DEPARTMENT_COLUMNS

    lines = ["\t".join(DEPARTMENT_COLUMNS)]
    lines += ["\t".join(str(cell) for cell in row) for row in DEPARTMENT_ROWS]
    return ("\n".join(lines) + "\n").encode("utf-8")


def user_rows(count: int) -> list[list[str]]:
    """`count` people shaped like the sample user file: every column used, a few roles, some without a
    safety ID or talk, mobile numbers on about half. Deterministic, so runs compare."""
    rows = []
    departments = [d for d in DEPARTMENT_ROWS if d[0] != "D000"]
    for i in range(1, count + 1):
        last, last_kana, last_roman = SURNAMES[i % len(SURNAMES)]
        first, first_kana, first_roman = GIVEN_NAMES[(i * 7) % len(GIVEN_NAMES)]
        code, _name, _kana, _parent, _sort, phone, _email = departments[(i * 5) % len(departments)]
        email = f"{first_roman}.{last_roman}{i}@example.co.jp"
        rows.append(
            [
                email,
                f"Init-{(i * 2654435761) % 10**10:010d}",
                last,
                first,
                last_kana,
                first_kana,
                code,
                POSITIONS[i % len(POSITIONS)],
                email,
                f"{first_roman}{i}@mobile.example.ne.jp" if i % 9 == 0 else "",
                phone,
                f"090-{(i * 37) % 10000:04d}-{i % 10000:04d}" if i % 2 else "",
                f"{1000 + i}",
                DEPARTMENT_REGION.get(code, "13"),
                PRIVILEGES[i % len(PRIVILEGES)] if i % 50 == 1 else "",
                "0" if i % 17 == 0 else "1",
                "" if i % 13 == 0 else f"anpi{i:05d}",
                "en" if i % 11 == 0 else "ja",
            ]
        )
    return rows


def user_file(rows: Sequence[Sequence[str]]) -> bytes:
    from directory.tsv import USER_COLUMNS

    lines = ["\t".join(USER_COLUMNS), *("\t".join(row) for row in rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


@contextmanager
def temporary_organization(prefix: str) -> Iterator[Organization]:
    """An organisation with licence limits out of the way, deleted with everything in it afterwards."""
    from directory.models import Organization

    slug = f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    organization = Organization.objects.create(
        slug=slug, name=slug, max_people=10**6, max_talk_users=10**6, max_safety_users=10**6
    )
    try:
        yield organization
    finally:
        drop_organization(organization)


def drop_organization(organization: Organization) -> None:
    from django.db import transaction

    from directory.models import Department, RoleAssignment, User

    with transaction.atomic():
        RoleAssignment.objects.filter(user__organization=organization).delete()
        User.objects.filter(organization=organization).delete()
        Department.objects.filter(organization=organization).update(parent=None)
        organization.delete()
    vacuum()


def vacuum() -> None:
    """PostgreSQL: reclaim the rows earlier runs deleted and refresh the planner's statistics, as autovacuum
    would in a while; otherwise a search scans the dead rows of every earlier benchmark run."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) directory_user, directory_roleassignment, directory_department")


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def verdict(line: str, ok: bool) -> int:
    """Print the last line and return the exit status."""
    sys.stdout.flush()
    print(f"{line} {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


def daphne_env(
    redis_url: str, prefix: str, pool_size: str | None, *, settings_module: str = "config.settings.base"
) -> dict[str, str]:
    """The environment of a daphne a benchmark starts, as tests/services.py `subprocess_env()`: the same database,
    state directory and layer prefix, and pushes allowed to the local endpoint."""
    from django.conf import settings

    env = dict(os.environ)
    env.pop("DB_POOL_MAX_SIZE", None)  # setup_django's "no pool" is for this process only; daphne pools as deployed
    if pool_size is not None:
        env["DB_POOL_MAX_SIZE"] = pool_size
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=os.environ["DATABASE_URL"],
        REDIS_URL=redis_url,
        STATE_DIR=str(settings.STATE_DIR),
        SECRET_KEY=settings.SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="false",
        CHANNEL_REDIS_PREFIX=prefix,
        PYTHONUNBUFFERED="1",
        PUSH_ALLOW_LOOPBACK_HTTP="true",
    )
    return env
