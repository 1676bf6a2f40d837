"""Directory search through `directory.selectors.person_search`: what it finds, and its query count pinned.

People are imported with the importer, so their search text is the one real imports write."""

from __future__ import annotations

import pytest

from directory.importer import import_apply
from directory.models import Organization, User
from directory.selectors import person_search
from directory.tsv import DEPARTMENT_COLUMNS, USER_COLUMNS
from tests import factories

pytestmark = pytest.mark.django_db


def _table(columns, rows) -> bytes:
    lines = ["\t".join(columns), *("\t".join(row.get(c, "") for c in columns) for row in rows)]
    return ("\r\n".join(lines) + "\r\n").encode("cp932")  # as Excel on Japanese Windows saves it


DEPARTMENTS = [
    {"DEPARTMENT_CODE": "HQ", "DEPARTMENT_NAME": "本社"},
    {"DEPARTMENT_CODE": "SALES", "DEPARTMENT_NAME": "営業本部", "PARENT_DEPARTMENT_CODE": "HQ"},
    {"DEPARTMENT_CODE": "TOKYO", "DEPARTMENT_NAME": "東京営業部", "PARENT_DEPARTMENT_CODE": "SALES"},
    {"DEPARTMENT_CODE": "DEV", "DEPARTMENT_NAME": "開発部", "PARENT_DEPARTMENT_CODE": "HQ"},
]
NAMES = [("山田", "ヤマダ"), ("田中", "タナカ"), ("髙橋", "タカハシ"), ("鈴木", "スズキ")]


def _people(count: int) -> list[dict[str, str]]:
    people = []
    for n in range(1, count + 1):
        last, kana = NAMES[n % len(NAMES)]
        people.append(
            {
                "LOGIN_ID": f"user{n}@example.co.jp",
                "PASSWORD": f"Init-{n:05d}",
                "LAST_NAME": last,
                "FIRST_NAME": f"{n}郎",
                "LAST_NAME_KANA": kana,
                "DEPARTMENT_CODE": ("TOKYO", "DEV", "SALES")[n % 3],
                "Email 1": f"user{n}@example.co.jp",
                "MOBILE_PHONE_NUMBER": f"090-{n:04d}-{(n * 7) % 10000:04d}",
                "TALK_AVAILABLE": "1",
                "LANGUAGE": "ja",
            }
        )
    return people


@pytest.fixture
def directory(org: Organization) -> Organization:
    org.max_people = org.max_talk_users = 1000
    org.save()
    plan = import_apply(
        organization=org,
        departments_raw=_table(DEPARTMENT_COLUMNS, DEPARTMENTS),
        users_raw=_table(USER_COLUMNS, _people(120)),
    )
    assert not plan.faults, plan.report(applied=False)["errors"]
    return org


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("髙橋", "user2@example.co.jp"),  # cp932's extended kanji
        ("髙橋 2郎", "user2@example.co.jp"),
        ("たかはし", "user2@example.co.jp"),  # hiragana finds the katakana reading
        ("ﾀｶﾊｼ", "user2@example.co.jp"),  # so does half-width katakana
        ("東京営業部", "user3@example.co.jp"),
        ("0003-0021", "user3@example.co.jp"),  # phone digits, whatever the separators
        ("09000030021", "user3@example.co.jp"),
        ("USER4@EXAMPLE", "user4@example.co.jp"),  # e-mail, any case
    ],
)
def test_search_finds_people_by_name_kana_department_phone_and_email_in_one_query(
    directory, django_assert_num_queries, query, expected
):
    with django_assert_num_queries(1):
        found = person_search(organization=directory, query=query, limit=50)
    assert expected in [p.login_id for p in found]
    with django_assert_num_queries(0):  # the department came along
        assert all(p.department.name for p in found)


def test_search_is_one_query_however_many_terms_and_people_match(directory, django_assert_num_queries):
    for query, count in (("", 50), ("example", 50), ("山田 やまだ 郎 example 090", 30), ("nobody-at-all", 0)):
        with django_assert_num_queries(1):
            found = person_search(organization=directory, query=query, limit=50)
        assert len(found) == count, query


def test_search_leaves_out_deactivated_people_and_other_organisations(directory):
    User.objects.filter(organization=directory, login_id="user2@example.co.jp").update(is_active=False)
    other = factories.organization()
    import_apply(
        organization=other,
        departments_raw=_table(DEPARTMENT_COLUMNS, DEPARTMENTS),
        users_raw=_table(USER_COLUMNS, _people(6)),
    )
    found = [p.login_id for p in person_search(organization=directory, query="2郎", limit=50)]
    assert "user2@example.co.jp" not in found
    assert all(p.organization_id == directory.id for p in person_search(organization=directory, query="example"))


def test_search_within_a_department_subtree_is_two_queries_at_most(directory, django_assert_max_num_queries):
    from directory.models import Department

    headquarters = Department.objects.get(organization=directory, code="HQ")
    with django_assert_max_num_queries(2):
        found = person_search(organization=directory, query="", department=headquarters, limit=50)
    assert len(found) == 50
