"""The directory's TSV files as Excel on Japanese Windows writes them: reading, checking, writing.

Pure functions, no ORM. Reading detects UTF-8 (with or without BOM), UTF-16 with a BOM and cp932, checks
the header and every cell, and returns typed rows plus every fault found, each with its line and column.
The only exception it raises is `TsvFileError`, for a file that cannot be read as a table at all. Writing
guards cells against spreadsheet formula injection in a way that reading undoes, so a round trip is exact.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from directory.models import Role
from directory.regions import PREFECTURES

FileKind = Literal["departments", "users"]

DEPARTMENT_COLUMNS = (
    "DEPARTMENT_CODE",
    "DEPARTMENT_NAME",
    "DEPARTMENT_NAME_KANA",
    "PARENT_DEPARTMENT_CODE",
    "SORT_ORDER",
    "PHONE_NUMBER",
    "EMAIL",
)
USER_COLUMNS = (
    "LOGIN_ID",
    "PASSWORD",
    "LAST_NAME",
    "FIRST_NAME",
    "LAST_NAME_KANA",
    "FIRST_NAME_KANA",
    "DEPARTMENT_CODE",
    "POSITION",
    "Email 1",
    "Email 2",
    "PHONE_NUMBER",
    "MOBILE_PHONE_NUMBER",
    "EXTENSION_NUMBER",
    "REGION_CODE",
    "PRIVILEGES",
    "TALK_AVAILABLE",
    "ANPI_LOGIN_ID",
    "LANGUAGE",
)
# Every column must be in the header (an export has them all); which cells may be empty is checked per row.
ALL_COLUMNS: dict[FileKind, tuple[str, ...]] = {"departments": DEPARTMENT_COLUMNS, "users": USER_COLUMNS}
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000


class Fault(StrEnum):
    """Stable codes of import faults; the API, the command's JSON and the page all use them."""

    EMPTY = "empty_file"
    TOO_LARGE = "file_too_large"
    NOT_TEXT = "not_text"
    MISSING_COLUMN = "missing_column"
    UNKNOWN_COLUMN = "unknown_column"
    DUPLICATE_COLUMN = "duplicate_column"
    COLUMN_COUNT = "column_count"
    TOO_MANY_ROWS = "too_many_rows"
    REQUIRED = "required"
    TOO_LONG = "too_long"
    INVALID_EMAIL = "invalid_email"
    INVALID_PHONE = "invalid_phone"
    INVALID_KANA = "invalid_kana"
    INVALID_INTEGER = "invalid_integer"
    INVALID_LOGIN_ID = "invalid_login_id"
    DUPLICATE_KEY = "duplicate_key"
    DUPLICATE_ANPI_LOGIN_ID = "duplicate_anpi_login_id"
    INVALID_ANPI_LOGIN_ID = "invalid_anpi_login_id"
    UNKNOWN_PRIVILEGE = "unknown_privilege"
    INVALID_FLAG = "invalid_flag"
    UNKNOWN_REGION = "unknown_region"
    UNKNOWN_LANGUAGE = "unknown_language"
    UNKNOWN_DEPARTMENT = "unknown_department"
    UNKNOWN_PARENT = "unknown_parent"
    CYCLE = "department_cycle"
    PASSWORD_REQUIRED = "password_required"  # noqa: S105  (a fault code, not a password)
    LICENCE_LIMIT = "licence_limit"
    SELF_DEACTIVATION = "self_deactivation"
    TOO_MANY_ERRORS = "too_many_errors"
    ANPI_LOGIN_ID_TAKEN = "anpi_login_id_taken"


@dataclass(frozen=True)
class ImportFault:
    file: FileKind
    line: int | None
    column: str | None
    code: Fault
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "code": self.code.value,
            "message": self.message,
        }


class TsvFileError(Exception):
    """The file as a whole cannot be read as a directory table."""

    def __init__(self, fault: ImportFault) -> None:
        super().__init__(fault.message)
        self.fault = fault


@dataclass(frozen=True)
class DepartmentRow:
    line: int
    code: str
    name: str
    name_kana: str
    parent_code: str
    sort_order: int
    phone_number: str
    email: str


@dataclass(frozen=True)
class UserRow:
    line: int
    login_id: str
    password: str
    last_name: str
    first_name: str
    last_name_kana: str
    first_name_kana: str
    department_code: str
    position: str
    email: str
    email2: str
    phone_number: str
    mobile_phone_number: str
    extension_number: str
    region_code: str
    privileges: frozenset[str]
    talk_available: bool
    anpi_login_id: str
    language: str


@dataclass
class Parsed:
    departments: list[DepartmentRow] = field(default_factory=list)
    users: list[UserRow] = field(default_factory=list)
    faults: list[ImportFault] = field(default_factory=list)


# --- Decoding -------------------------------------------------------------------------------------------


def decode(raw: bytes, *, kind: FileKind) -> str:
    """Text of a TSV file in any encoding Excel on Japanese Windows produces."""
    if len(raw) > MAX_FILE_BYTES:
        raise TsvFileError(
            ImportFault(kind, None, None, Fault.TOO_LARGE, f"The file is larger than {_size(MAX_FILE_BYTES)}.")
        )
    if raw.startswith(b"\xef\xbb\xbf"):
        candidates: Sequence[tuple[str, bytes]] = [("utf-8", raw[3:])]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = [("utf-16", raw)]
    else:
        # No BOM: UTF-8 if it decodes, else cp932 (Excel's "テキスト (タブ区切り)").
        candidates = [("utf-8", raw), ("cp932", raw)]
    for encoding, data in candidates:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _looks_binary(text):
            break
        if not text.strip():
            raise TsvFileError(ImportFault(kind, None, None, Fault.EMPTY, "The file is empty."))
        return text
    if not raw.strip():
        raise TsvFileError(ImportFault(kind, None, None, Fault.EMPTY, "The file is empty."))
    raise TsvFileError(
        ImportFault(kind, None, None, Fault.NOT_TEXT, "The file is not text in UTF-8, UTF-16 or Shift_JIS (cp932).")
    )


def _size(limit: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if limit >= scale:
            return f"{limit / scale:.3g} {unit}"
    return f"{limit} bytes"


# Control characters no spreadsheet writes into a text file. Checked over the whole text, not a sample: a NUL
# further down would otherwise reach PostgreSQL, which refuses it in a text column.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _looks_binary(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None


# --- Formula guard: export escapes, import unescapes ------------------------------------------------------

# A cell Excel would run as a formula starts with =, +, - or @; tab and CR are guarded too (OWASP's list).
_FORMULA_RE = re.compile(r"^'*[=+\-@\t\r]")
_ESCAPED_RE = re.compile(r"^'+[=+\-@\t\r]")


def excel_safe(value: str) -> str:
    """Make Excel show a cell as text: a leading `'` before =, +, - or @ (and before such a cell's own
    leading quotes, so that `from_excel_safe` restores any value exactly)."""
    return "'" + value if _FORMULA_RE.match(value) else value


def from_excel_safe(value: str) -> str:
    return value[1:] if value[:1] == "'" and _ESCAPED_RE.match(value) else value


# --- Reading --------------------------------------------------------------------------------------------


def _table(text: str, kind: FileKind) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-empty rows, each with the line it starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"', strict=False)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    line = 1
    try:
        for cells in reader:
            if header is None:
                header = [c.strip().lstrip("\ufeff") for c in cells]
            elif "".join(cells).strip():  # Excel leaves empty rows at the end
                if len(rows) >= MAX_ROWS:
                    raise TsvFileError(
                        ImportFault(kind, line, None, Fault.TOO_MANY_ROWS, f"More than {MAX_ROWS} rows.")
                    )
                rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise TsvFileError(ImportFault(kind, line, None, Fault.NOT_TEXT, f"Unreadable: {exc}")) from None
    if header is None or not any(header):
        raise TsvFileError(ImportFault(kind, None, None, Fault.EMPTY, "The file is empty."))
    if not rows:
        # Never a no-op: with a full sync an empty user file would deactivate everyone.
        raise TsvFileError(ImportFault(kind, None, None, Fault.EMPTY, "The file has a header but no rows."))
    return header, rows


# A header of a million tabs is a 1 MB file: its faults are counted past this many, not each kept (a fault per
# byte would take gigabytes in the worker and tens of megabytes of JSON in the job).
MAX_HEADER_FAULTS = 50


def _check_header(header: list[str], kind: FileKind) -> list[ImportFault]:
    faults: list[ImportFault] = []
    known = ALL_COLUMNS[kind]
    seen: set[str] = set()
    more = 0
    for name in header:
        if len(faults) >= MAX_HEADER_FAULTS:
            more += (name in seen) + (name not in known)
            seen.add(name)
            continue
        if name in seen:
            faults.append(ImportFault(kind, 1, name, Fault.DUPLICATE_COLUMN, f"The column {name} appears twice."))
        seen.add(name)
        if name not in known:
            faults.append(
                ImportFault(kind, 1, name or None, Fault.UNKNOWN_COLUMN, f"Unknown column {name!r} in the header.")
            )
    if more:
        faults.append(
            ImportFault(
                kind,
                1,
                None,
                Fault.UNKNOWN_COLUMN,
                f"…and {more} more unknown or repeated columns in the header ({len(header)} columns in all).",
            )
        )
    # Every column, not only the required cells: a missing column would otherwise blank that field of every
    # existing person on re-import.
    for name in known:
        if name not in seen:
            faults.append(ImportFault(kind, 1, name, Fault.MISSING_COLUMN, f"The header has no {name} column."))
    return faults


def _records(text: str, kind: FileKind, faults: list[ImportFault]) -> list[tuple[int, dict[str, str]]]:
    header, rows = _table(text, kind)
    header_faults = _check_header(header, kind)
    if header_faults:
        faults.extend(header_faults)
        return []
    width = len(header)
    records = []
    for line, cells in rows:
        if len(cells) != width:
            faults.append(
                ImportFault(
                    kind,
                    line,
                    None,
                    Fault.COLUMN_COUNT,
                    f"The line has {len(cells)} columns; the header has {width}.",
                )
            )
            continue
        values = [c.strip() for c in cells]
        for index, value in enumerate(values):
            if value[:1] == "'":  # rare: only these can carry the export's formula guard
                values[index] = from_excel_safe(value)
        records.append((line, dict(zip(header, values, strict=True))))
    return records


_KANA_RE = re.compile(r"^[\u30a0-\u30ff\u3000 ・ー]*$")
PHONE_RE = re.compile(r"^[0-9+\-() #*]*$")
ANPI_LOGIN_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
LOGIN_ID_RE = re.compile(r"^\S{1,254}$")
_INTEGER_RE = re.compile(r"^[+-]?[0-9]{1,10}$")
_HIRAGANA_TO_KATAKANA = {code: code + 0x60 for code in range(0x3041, 0x3097)}
_ROLES = frozenset(Role.values)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # SORT_ORDER is an IntegerField


def to_katakana(value: str) -> str:
    # Half-width katakana and hiragana become full-width katakana, as people type both.
    return unicodedata.normalize("NFKC", value).translate(_HIRAGANA_TO_KATAKANA)


def _nfkc(value: str) -> str:
    return value if value.isascii() else unicodedata.normalize("NFKC", value)


# Dashes a Japanese IME puts in phone numbers that NFKC leaves alone: ‐ ‑ ‒ – — ― − ー and half-width ｰ.
_DASHES = {ord(ch): "-" for ch in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff70"}


def _phone(value: str) -> str:
    return value if value.isascii() else unicodedata.normalize("NFKC", value.translate(_DASHES))


class _Row:
    """Checks one record's cells, collecting faults rather than stopping at the first."""

    __slots__ = ("faults", "kind", "line", "record")

    def __init__(self, kind: FileKind, line: int, record: dict[str, str], faults: list[ImportFault]) -> None:
        self.kind, self.line, self.record, self.faults = kind, line, record, faults

    def fault(self, column: str | None, code: Fault, message: str) -> None:
        self.faults.append(ImportFault(self.kind, self.line, column, code, message))

    def text(self, column: str, *, max_length: int, required: bool = False) -> str:
        value = self.record[column]
        if not value:
            if required:
                self.fault(column, Fault.REQUIRED, f"{column} is required.")
        elif len(value) > max_length:
            self.fault(column, Fault.TOO_LONG, f"{column} is longer than {max_length} characters.")
        return value

    def email(self, column: str) -> str:
        value = self.text(column, max_length=254)
        if value:
            try:
                validate_email(value)
            except ValidationError:
                self.fault(column, Fault.INVALID_EMAIL, f"{value!r} is not a valid e-mail address.")
        return value

    def phone(self, column: str, max_length: int = 30) -> str:
        # Normalised first, then measured: NFKC may lengthen a value ("⑴" is "(1)").
        value = self.record[column] = _phone(self.record[column])
        value = self.text(column, max_length=max_length)
        if value and not PHONE_RE.match(value):
            self.fault(column, Fault.INVALID_PHONE, f"{value!r} is not a phone number.")
        return value

    def kana(self, column: str, max_length: int) -> str:
        value = self.record[column]
        if value:
            value = self.record[column] = to_katakana(value)
            value = self.text(column, max_length=max_length)
            if not _KANA_RE.match(value):
                self.fault(column, Fault.INVALID_KANA, f"{column} must be written in katakana.")
        return value


def _department(line: int, record: dict[str, str], faults: list[ImportFault]) -> DepartmentRow:
    row = _Row("departments", line, record, faults)
    sort_raw = _nfkc(record["SORT_ORDER"])
    sort_order = 0
    if sort_raw:
        if _INTEGER_RE.match(sort_raw) and _INT_MIN <= int(sort_raw) <= _INT_MAX:
            sort_order = int(sort_raw)
        else:
            row.fault("SORT_ORDER", Fault.INVALID_INTEGER, f"SORT_ORDER must be a whole number, not {sort_raw!r}.")
    return DepartmentRow(
        line=line,
        code=row.text("DEPARTMENT_CODE", max_length=64, required=True),
        name=row.text("DEPARTMENT_NAME", max_length=100, required=True),
        name_kana=row.kana("DEPARTMENT_NAME_KANA", 200),
        parent_code=row.text("PARENT_DEPARTMENT_CODE", max_length=64),
        sort_order=sort_order,
        phone_number=row.phone("PHONE_NUMBER"),
        email=row.email("EMAIL"),
    )


def _user(line: int, record: dict[str, str], faults: list[ImportFault]) -> UserRow:
    row = _Row("users", line, record, faults)
    login_id = row.text("LOGIN_ID", max_length=254, required=True)
    if login_id and not LOGIN_ID_RE.match(login_id):
        row.fault("LOGIN_ID", Fault.INVALID_LOGIN_ID, "LOGIN_ID must not contain spaces.")
    region = _nfkc(record["REGION_CODE"])
    if len(region) == 1 and region.isdigit():
        region = "0" + region  # Excel drops the leading zero of 01-09
    if region and region not in PREFECTURES:
        row.fault("REGION_CODE", Fault.UNKNOWN_REGION, f"{region!r} is not a prefecture code (01-47).")
    privileges_raw = record["PRIVILEGES"]
    privileges: frozenset[str] = (
        frozenset(p.strip() for p in privileges_raw.replace("、", ",").split(",") if p.strip())
        if privileges_raw
        else frozenset()
    )
    if not privileges <= _ROLES:
        unknown = sorted(privileges - _ROLES)
        row.fault("PRIVILEGES", Fault.UNKNOWN_PRIVILEGE, f"Unknown privilege: {', '.join(unknown)}.")
    talk_raw = _nfkc(record["TALK_AVAILABLE"])
    if talk_raw not in ("", "0", "1"):
        row.fault("TALK_AVAILABLE", Fault.INVALID_FLAG, f"TALK_AVAILABLE must be 1 or 0, not {talk_raw!r}.")
    anpi = record["ANPI_LOGIN_ID"]
    if anpi and not ANPI_LOGIN_ID_RE.match(anpi):
        row.fault(
            "ANPI_LOGIN_ID",
            Fault.INVALID_ANPI_LOGIN_ID,
            "ANPI_LOGIN_ID must be 1-32 half-width letters and digits.",
        )
    language = _nfkc(record["LANGUAGE"]).lower() or "ja"
    if language not in ("ja", "en"):
        row.fault("LANGUAGE", Fault.UNKNOWN_LANGUAGE, f"LANGUAGE must be ja or en, not {language!r}.")
    return UserRow(
        line=line,
        login_id=login_id,
        password=row.text("PASSWORD", max_length=128),
        last_name=row.text("LAST_NAME", max_length=50, required=True),
        first_name=row.text("FIRST_NAME", max_length=50),
        last_name_kana=row.kana("LAST_NAME_KANA", 100),
        first_name_kana=row.kana("FIRST_NAME_KANA", 100),
        department_code=row.text("DEPARTMENT_CODE", max_length=64),
        position=row.text("POSITION", max_length=100),
        email=row.email("Email 1"),
        email2=row.email("Email 2"),
        phone_number=row.phone("PHONE_NUMBER"),
        mobile_phone_number=row.phone("MOBILE_PHONE_NUMBER"),
        extension_number=row.phone("EXTENSION_NUMBER", max_length=20),
        region_code=region,
        privileges=privileges,
        talk_available=talk_raw == "1",
        anpi_login_id=anpi,
        language=language,
    )


def _duplicates(kind: FileKind, column: str, keyed: Iterable[tuple[int, str]], code: Fault) -> list[ImportFault]:
    lines: dict[str, list[int]] = {}
    for line, key in keyed:
        if key:
            lines.setdefault(key, []).append(line)
    faults = []
    for key, where in lines.items():
        if len(where) > 1:
            for line in where:
                others = ", ".join(str(n) for n in where if n != line)
                faults.append(ImportFault(kind, line, column, code, f"{key!r} is also on line {others}."))
    return faults


def parse_departments(raw: bytes) -> Parsed:
    """Read a department file. File-level problems raise TsvFileError; row problems are in `faults`."""
    parsed = Parsed()
    text = decode(raw, kind="departments")
    for line, record in _records(text, "departments", parsed.faults):
        parsed.departments.append(_department(line, record, parsed.faults))
    parsed.faults += _duplicates(
        "departments", "DEPARTMENT_CODE", ((d.line, d.code) for d in parsed.departments), Fault.DUPLICATE_KEY
    )
    return parsed


def parse_users(raw: bytes) -> Parsed:
    """Read a user file. File-level problems raise TsvFileError; row problems are in `faults`."""
    parsed = Parsed()
    text = decode(raw, kind="users")
    for line, record in _records(text, "users", parsed.faults):
        parsed.users.append(_user(line, record, parsed.faults))
    parsed.faults += _duplicates("users", "LOGIN_ID", ((u.line, u.login_id) for u in parsed.users), Fault.DUPLICATE_KEY)
    parsed.faults += _duplicates(
        "users", "ANPI_LOGIN_ID", ((u.line, u.anpi_login_id) for u in parsed.users), Fault.DUPLICATE_ANPI_LOGIN_ID
    )
    return parsed


# --- Writing --------------------------------------------------------------------------------------------


def write(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """A TSV file Excel opens correctly: UTF-8 with a BOM, CRLF, every cell safe from formula injection."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([excel_safe(str(cell)) for cell in row])
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")
