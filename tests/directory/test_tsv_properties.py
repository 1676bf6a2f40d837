"""Property tests of the TSV reader and writer: whatever bytes arrive, the reader raises nothing but
`TsvFileError` (and reports row problems as faults); a row it accepts fits the database; the formula guard
and the writer round-trip exactly.

No database: these are the pure functions of directory/tsv.py. Examples are kept modest (the file runs in
about ten seconds) and hypothesis's example database is off, so failures are not replayed from disk; hypothesis
still keeps its caches in .hypothesis/, which ignores itself in git."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directory.models import Department, Role, User
from directory.regions import PREFECTURES
from directory.tsv import (
    ANPI_LOGIN_ID_RE,
    DEPARTMENT_COLUMNS,
    USER_COLUMNS,
    DepartmentRow,
    Fault,
    Parsed,
    TsvFileError,
    UserRow,
    excel_safe,
    from_excel_safe,
    parse_departments,
    parse_users,
    write,
)

PROPERTIES = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
PARSERS: dict[str, Callable[[bytes], Parsed]] = {"departments": parse_departments, "users": parse_users}
HEADERS = {"departments": DEPARTMENT_COLUMNS, "users": USER_COLUMNS}
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "cp932")


def _cp932_alphabet() -> list[str]:
    chars = []
    for code in range(0x20, 0x10000):
        ch = chr(code)
        try:
            ch.encode("cp932")
        except UnicodeEncodeError:
            continue
        chars.append(ch)
    return chars


CP932 = _cp932_alphabet()
# Characters that matter to a TSV reader, a formula guard and a database, mixed into everything random.
SPECIAL = ["\t", '"', "'", "\r", "\n", "\r\n", "=", "+", "-", "@", "\ufeff", "　", " ", "、", ","]
CONTROLS = ["\x00", "\x1a", "\x7f", "\x0b"]


def strings(*parts: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    """Strings joined from pieces, some of them longer than one character (CRLF, formulas)."""
    return st.lists(st.one_of(*parts), max_size=max_size).map("".join)


def parse_or_file_error(kind: str, raw: bytes) -> Parsed | None:
    """The reader's contract: a Parsed result, or TsvFileError with a stable code and a message."""
    try:
        parsed = PARSERS[kind](raw)
    except TsvFileError as exc:
        assert isinstance(exc.fault.code, Fault) and exc.fault.message
        assert exc.fault.file == kind
        return None
    assert isinstance(parsed, Parsed)
    for fault in parsed.faults:
        assert isinstance(fault.code, Fault) and fault.message and fault.file == kind
        named_in_header = fault.code in (Fault.UNKNOWN_COLUMN, Fault.DUPLICATE_COLUMN)
        assert fault.column is None or fault.column in HEADERS[kind] or named_in_header
    return parsed


USER_TEXT_FIELDS = (
    "login_id",
    "last_name",
    "first_name",
    "last_name_kana",
    "first_name_kana",
    "position",
    "email",
    "email2",
    "phone_number",
    "mobile_phone_number",
    "extension_number",
    "region_code",
    "anpi_login_id",
    "language",
)


def fits_the_database(parsed: Parsed) -> None:
    """Every row on a line without faults can be written as it is: lengths, codes and characters."""
    bad_lines = {f.line for f in parsed.faults}
    for row in parsed.users:
        if row.line in bad_lines:
            continue
        for name in USER_TEXT_FIELDS:
            value = getattr(row, name)
            assert len(value) <= User._meta.get_field(name).max_length, (name, value)
            assert "\x00" not in value
        assert row.login_id and row.last_name
        assert row.region_code == "" or row.region_code in PREFECTURES
        assert row.language in ("ja", "en")
        assert row.anpi_login_id == "" or ANPI_LOGIN_ID_RE.match(row.anpi_login_id)
        assert row.privileges <= set(Role.values)
    for dept in parsed.departments:
        if dept.line in bad_lines:
            continue
        for name in ("code", "name", "name_kana", "phone_number", "email"):
            assert len(getattr(dept, name)) <= Department._meta.get_field(name).max_length, (name, dept)
        assert -(2**31) <= dept.sort_order < 2**31


# --- Anything at all: only TsvFileError ----------------------------------------------------------------

BOMS = st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])


@PROPERTIES
@given(prefix=BOMS, body=st.binary(max_size=3000))
def test_random_bytes_raise_only_the_import_error(prefix, body):
    for kind in PARSERS:
        parse_or_file_error(kind, prefix + body)


@pytest.mark.parametrize("encoding", ENCODINGS)
@PROPERTIES
@given(data=st.data())
def test_random_text_in_each_encoding_raises_only_the_import_error(encoding, data):
    alphabet = st.sampled_from(CP932) if encoding == "cp932" else st.characters(blacklist_categories=("Cs",))
    text = data.draw(strings(alphabet, st.sampled_from(SPECIAL + CONTROLS), max_size=400))
    raw = text.encode(encoding, errors="ignore" if encoding == "cp932" else "strict")  # cp932 has no BOM char
    for kind in PARSERS:
        parse_or_file_error(kind, raw)
        # The same text under a valid header reaches the row checks.
        header = "\t".join(HEADERS[kind]) + "\r\n"
        parsed = parse_or_file_error(kind, (header + text).encode(encoding, errors="ignore"))
        if parsed is not None:
            fits_the_database(parsed)


# --- Valid rows, as the writer gets them from the exporter ------------------------------------------------

# Values as the reader keeps them: stripped, NFKC where it normalises, no control characters.
FREE_TEXT = strings(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Zs")),
    st.sampled_from(["\t", "\n", "\r\n", '"', "'", " ", "=", "+", "-", "@", "=1+1"]),
    max_size=30,
).map(str.strip)
KANA = st.text(st.sampled_from([chr(c) for c in range(0x30A1, 0x30FB)] + ["ー", "・", " "]), max_size=20).map(str.strip)
PHONE = st.from_regex(r"\A(\+?[0-9]{1,4}(-[0-9]{1,4}){0,3})?\Z").filter(lambda s: len(s) <= 20)
EMAIL = st.one_of(st.just(""), st.from_regex(r"\A[a-z0-9+\-]{1,8}(\.[a-z0-9]{1,8})?@[a-z0-9]{1,8}\.(com|jp|co\.jp)\Z"))
LOGIN = st.from_regex(r"\A[A-Za-z0-9._=+\-@'\"]{1,40}\Z")
ANPI = st.one_of(st.just(""), st.from_regex(r"\A[A-Za-z0-9]{1,32}\Z"))


@st.composite
def user_rows(draw: Any) -> list[UserRow]:
    logins = draw(st.lists(LOGIN, min_size=1, max_size=6, unique=True))
    anpis = draw(
        st.lists(ANPI, min_size=len(logins), max_size=len(logins)).filter(
            lambda ids: len([i for i in ids if i]) == len({i for i in ids if i})
        )
    )
    rows = []
    for login, anpi in zip(logins, anpis, strict=True):
        rows.append(
            UserRow(
                line=0,
                login_id=login,
                password=draw(FREE_TEXT),
                last_name=draw(FREE_TEXT.filter(bool)),
                first_name=draw(FREE_TEXT),
                last_name_kana=draw(KANA),
                first_name_kana=draw(KANA),
                department_code=draw(st.sampled_from(["", "D100", "=SUM(A1)", "-1"])),
                position=draw(FREE_TEXT),
                email=draw(EMAIL),
                email2=draw(EMAIL),
                phone_number=draw(PHONE),
                mobile_phone_number=draw(PHONE),
                extension_number=draw(PHONE),
                region_code=draw(st.sampled_from(["", *PREFECTURES])),
                privileges=frozenset(draw(st.sets(st.sampled_from(Role.values)))),
                talk_available=draw(st.booleans()),
                anpi_login_id=anpi,
                language=draw(st.sampled_from(["ja", "en"])),
            )
        )
    return rows


def user_cells(row: UserRow) -> list[str]:
    return [
        row.login_id,
        row.password,
        row.last_name,
        row.first_name,
        row.last_name_kana,
        row.first_name_kana,
        row.department_code,
        row.position,
        row.email,
        row.email2,
        row.phone_number,
        row.mobile_phone_number,
        row.extension_number,
        row.region_code,
        ",".join(sorted(row.privileges)),
        "1" if row.talk_available else "0",
        row.anpi_login_id,
        row.language,
    ]


def without_lines(rows: list[Any]) -> list[Any]:
    return [replace(row, line=0) for row in rows]


@st.composite
def department_rows(draw: Any) -> list[DepartmentRow]:
    codes = draw(st.lists(LOGIN, min_size=1, max_size=6, unique=True))
    return [
        DepartmentRow(
            line=0,
            code=code,
            name=draw(FREE_TEXT.filter(bool)),
            name_kana=draw(KANA),
            parent_code=draw(st.sampled_from(["", *codes])),
            sort_order=draw(st.integers(-(2**31), 2**31 - 1)),
            phone_number=draw(PHONE),
            email=draw(EMAIL),
        )
        for code in codes
    ]


def department_cells(row: DepartmentRow) -> list[str]:
    return [row.code, row.name, row.name_kana, row.parent_code, str(row.sort_order), row.phone_number, row.email]


# --- Anything under a valid header: faults, never exceptions ------------------------------------------------


PHONES = ["⑴" * 11, "1" * 21, "０３−１２３４−５６７８", "+81 (3) 1234-5678 #1", "03-1234-5678\n"]
KANAS = ["㌀" * 30, "ｶﾞ" * 60, "たなか", "ﾀﾅｶ　ﾀﾛｳ", "山田"]
# Per column, values that are valid only before or only after normalising, or just past a limit.
TRICKY: dict[str, list[str]] = {
    "PHONE_NUMBER": PHONES,
    "MOBILE_PHONE_NUMBER": PHONES,
    "EXTENSION_NUMBER": PHONES,
    "LAST_NAME_KANA": KANAS,
    "FIRST_NAME_KANA": KANAS,
    "DEPARTMENT_NAME_KANA": ["㌀" * 60, *KANAS],
    "REGION_CODE": ["1", "１３", "48", "0", "013"],
    "SORT_ORDER": ["9" * 12, "2147483648", "-2147483649", "２１４７４８３６４８", "1_000", "١٢"],
    "LAST_NAME": ["x" * 51, "=1+1", "'@x"],
    "DEPARTMENT_NAME": ["x" * 101, "-x"],
    "ANPI_LOGIN_ID": ["ａｎｐｉ１", "a" * 33, "anpi 1"],
    "TALK_AVAILABLE": ["１", "2", "true"],
    "LANGUAGE": ["EN", "ｊａ", "fr"],
    "PRIVILEGES": ["MANAGER、ADMIN_ANPI", " MANAGER , ", "manager"],
    "Email 1": ["a@b", "ａ@example.com", "x" * 250 + "@a.jp"],
    "LOGIN_ID": ["a b", "x" * 255, "'=x"],
}


def cells(max_size: int = 40) -> st.SearchStrategy[str]:
    interesting = st.sampled_from(
        [
            *SPECIAL,
            "=1+1",
            '=HYPERLINK("http://evil.example","x")',
            "'=x",
            "''+1",
            "13",
            "1",
            "ja",
            "SYSTEM_ADMIN,MANAGER",
            "ADMIN_EVERYTHING",
            "a@example.com",
            "not-an-email",
            "ﾀﾅｶ",
            "たなか",
            "タナカ",
            "髙橋",
            "⑴" * 11,
            "㌀" * 30,
            "０３−１２３４",
            "9" * 40,
            "anpi0001",
            "D100",
        ]
    )
    return st.one_of(
        interesting,
        strings(st.characters(blacklist_categories=("Cs", "Cc")), st.sampled_from(SPECIAL), max_size=max_size),
    )


@pytest.mark.parametrize("kind", ["departments", "users"])
@settings(PROPERTIES, max_examples=100)
@given(data=st.data())
def test_random_rows_under_a_valid_header_give_faults_never_exceptions(kind, data):
    width = len(HEADERS[kind])
    valid = user_rows() if kind == "users" else department_rows()
    to_cells = user_cells if kind == "users" else department_cells
    base = [to_cells(r) for r in data.draw(valid)]
    # Valid rows with a few cells replaced reach every check without a fault elsewhere on the line.
    for row in base:
        for index in data.draw(st.sets(st.integers(0, width - 1), max_size=3)):
            tricky = TRICKY.get(HEADERS[kind][index], ["=1+1"])
            row[index] = data.draw(st.one_of(st.sampled_from(tricky), cells()))
    rows = base + data.draw(
        st.lists(
            st.one_of(
                st.lists(cells(), min_size=width, max_size=width),  # the right number of cells
                st.lists(cells(), max_size=width + 2),
            ),
            max_size=4,
        )
    )
    if data.draw(st.integers(0, 9)) == 0:  # now and then a control character, anywhere: the file is not text
        row = base[data.draw(st.integers(0, len(base) - 1))]
        row[data.draw(st.integers(0, width - 1))] += data.draw(st.sampled_from(CONTROLS))
    if data.draw(st.booleans()):  # quoted by the writer, so every cell stays in its column
        text = write(HEADERS[kind], rows).decode("utf-8-sig")
    else:  # joined as they are: stray quotes, tabs and line breaks shift and split cells
        newline = data.draw(st.sampled_from(["\n", "\r\n", "\r"]))
        text = newline.join(["\t".join(HEADERS[kind]), *("\t".join(r) for r in rows)])
    raw = text.encode(data.draw(st.sampled_from(ENCODINGS)), errors="replace")
    parsed = parse_or_file_error(kind, raw)
    if parsed is not None:
        fits_the_database(parsed)
        lines = text.count("\r\n") + text.replace("\r\n", "").count("\r") + text.replace("\r\n", "").count("\n") + 1
        for fault in parsed.faults:
            assert fault.line is None or 1 <= fault.line <= lines


# --- The formula guard ----------------------------------------------------------------------------------


@PROPERTIES
@given(
    value=st.one_of(
        st.text(),
        st.from_regex(r"\A'*[=+\-@\t\r].*\Z"),
        st.builds(lambda q, s: "'" * q + s, st.integers(0, 3), st.text()),
    )
)
def test_the_formula_guard_round_trips_any_string(value):
    guarded = excel_safe(value)
    assert from_excel_safe(guarded) == value
    assert guarded[:1] not in ("=", "+", "-", "@", "\t", "\r")  # Excel never sees a formula


# --- Writer -> reader round trip of valid rows ----------------------------------------------------------


@PROPERTIES
@given(rows=user_rows(), encoding=st.sampled_from(["utf-8-sig", "utf-16"]))
def test_written_user_rows_read_back_exactly(rows, encoding):
    raw = write(USER_COLUMNS, [user_cells(r) for r in rows])
    if encoding == "utf-16":  # as Excel's "Unicode text" would save it
        raw = raw.decode("utf-8-sig").encode("utf-16")
    parsed = parse_users(raw)
    assert parsed.faults == []
    assert without_lines(parsed.users) == rows
    lines = [row.line for row in parsed.users]
    assert lines == sorted(lines) and lines[0] == 2


@PROPERTIES
@given(rows=department_rows())
def test_written_department_rows_read_back_exactly(rows):
    raw = write(DEPARTMENT_COLUMNS, [department_cells(r) for r in rows])
    parsed = parse_departments(raw)
    assert parsed.faults == []
    assert without_lines(parsed.departments) == rows
