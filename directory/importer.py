"""Directory import: compare the TSV files with the organisation, preview the changes, apply all or nothing.

`import_plan` reads both files and the current directory and returns every change and every fault;
`import_apply` re-plans inside one transaction (so a preview can't go stale) and writes with bulk queries.
Both report progress through an optional callback; the Celery task turns that into ephemeral events.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

from directory.hashers import InitialPasswordHasher
from directory.models import Department, Organization, RoleAssignment, User
from directory.search import search_text
from directory.tsv import (
    DepartmentRow,
    Fault,
    ImportFault,
    Parsed,
    TsvFileError,
    UserRow,
    parse_departments,
    parse_users,
)

Progress = Callable[[str, int, int], None]
_INITIAL = InitialPasswordHasher()
USER_FIELDS = (
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
    "talk_available",
    "language",
)
DEPARTMENT_FIELDS = ("name", "name_kana", "sort_order", "phone_number", "email")
LIST_LIMIT = 200  # how many names a preview lists per kind of change


@dataclass
class Changes:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)

    def summary(self, removed_key: str) -> dict[str, Any]:
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
            removed_key: len(self.removed),
            "lists": {
                "created": self.created[:LIST_LIMIT],
                "updated": self.updated[:LIST_LIMIT],
                removed_key: self.removed[:LIST_LIMIT],
            },
        }


@dataclass
class ImportPlan:
    organization: Organization
    full_sync: bool
    departments: Changes = field(default_factory=Changes)
    users: Changes = field(default_factory=Changes)
    faults: list[ImportFault] = field(default_factory=list)
    has_departments: bool = False
    has_users: bool = False
    # What apply writes, kept from the comparison so it is not done twice.
    _dept_rows: list[DepartmentRow] = field(default_factory=list)
    _user_rows: list[UserRow] = field(default_factory=list)
    _existing_depts: dict[str, Department] = field(default_factory=dict)
    _existing_users: dict[str, User] = field(default_factory=dict)
    _existing_roles: dict[int, frozenset[str]] = field(default_factory=dict)
    _password_reset: set[str] = field(default_factory=set)
    _licence: dict[str, tuple[int, int]] = field(default_factory=dict)

    def report(self, *, applied: bool) -> dict[str, Any]:
        """The JSON the command prints and the API returns."""
        departments = self.departments.summary("removed")
        users = self.users.summary("deactivated")
        return {
            "applied": applied,
            "full_sync": self.full_sync,
            "departments": {k: v for k, v in departments.items() if k != "lists"},
            "users": {k: v for k, v in users.items() if k != "lists"},
            "lists": {"departments": departments["lists"], "users": users["lists"]},
            "licence": {k: {"after": a, "limit": b} for k, (a, b) in self._licence.items()},
            "errors": _errors_reported(self.faults),
        }


# A file of 100,000 bad rows has over a million faults: the first ones say what is wrong, and the job, the API
# and the page stay small. The count of the rest is reported.
MAX_REPORTED_FAULTS = 1000


def _errors_reported(faults: list[ImportFault]) -> list[dict[str, Any]]:
    ordered = sorted(faults, key=_fault_order)
    errors = [f.as_dict() for f in ordered[:MAX_REPORTED_FAULTS]]
    if len(ordered) > MAX_REPORTED_FAULTS:
        more = len(ordered) - MAX_REPORTED_FAULTS
        errors.append(
            {
                "file": None,
                "line": None,
                "column": None,
                "code": str(Fault.TOO_MANY_ERRORS),
                "message": f"…and {more} more errors ({len(ordered)} in all); fix these and check again.",
            }
        )
    return errors


def _fault_order(fault: ImportFault) -> tuple[int, int, str]:
    return (0 if fault.file == "departments" else 1, fault.line or 0, fault.column or "")


def _noop(phase: str, done: int, total: int) -> None:
    pass


def import_plan(
    *,
    organization: Organization,
    departments_raw: bytes | None = None,
    users_raw: bytes | None = None,
    full_sync: bool = False,
    actor: User | None = None,
    progress: Progress | None = None,
) -> ImportPlan:
    """Every change the files would make, and every fault in them. Writes nothing."""
    report = progress or _noop
    plan = ImportPlan(organization=organization, full_sync=full_sync)
    parsed = Parsed()
    for raw, parse, kind in ((departments_raw, parse_departments, "departments"), (users_raw, parse_users, "users")):
        if raw is None:
            continue
        setattr(plan, f"has_{kind}", True)
        try:
            one = parse(raw)
        except TsvFileError as exc:
            plan.faults.append(exc.fault)
            continue
        parsed.departments += one.departments
        parsed.users += one.users
        parsed.faults += one.faults
    plan.faults += parsed.faults
    report("check", 1, 3)
    plan._existing_depts = {d.code: d for d in Department.objects.filter(organization=organization)}
    _plan_departments(plan, parsed.departments)
    report("check", 2, 3)
    if plan.has_users:
        _plan_users(plan, parsed.users, actor)
    report("check", 3, 3)
    return plan


def _plan_departments(plan: ImportPlan, rows: list[DepartmentRow]) -> None:
    existing = plan._existing_depts
    by_id = {d.id: d for d in existing.values()}
    plan._dept_rows = rows
    if not plan.has_departments:
        plan.departments.unchanged = 0
        return
    in_file = {r.code: r for r in rows if r.code}
    removed = [code for code in existing if code not in in_file] if plan.full_sync else []
    final_parent: dict[str, str | None] = {}
    for code, dept in existing.items():
        if code not in in_file and code not in removed:
            parent = by_id.get(dept.parent_id) if dept.parent_id else None
            final_parent[code] = parent.code if parent else None
    for row in rows:
        final_parent[row.code] = row.parent_code or None
    for row in rows:
        if row.parent_code and row.parent_code not in final_parent:
            plan.faults.append(
                ImportFault(
                    "departments",
                    row.line,
                    "PARENT_DEPARTMENT_CODE",
                    Fault.UNKNOWN_PARENT,
                    f"The parent department {row.parent_code!r} is neither in the file nor in the organisation.",
                )
            )
    for code in _cycle_members(final_parent):
        cycle_row = in_file.get(code)
        plan.faults.append(
            ImportFault(
                "departments",
                cycle_row.line if cycle_row else None,
                "PARENT_DEPARTMENT_CODE",
                Fault.CYCLE,
                f"The department {code!r} would be its own ancestor.",
            )
        )
    for row in rows:
        current = existing.get(row.code)
        if current is None:
            plan.departments.created.append(row.code)
            continue
        parent = by_id.get(current.parent_id) if current.parent_id else None
        same = (
            current.name == row.name
            and current.name_kana == row.name_kana
            and current.sort_order == row.sort_order
            and current.phone_number == row.phone_number
            and current.email == row.email
            and (parent.code if parent else "") == row.parent_code
        )
        if same:
            plan.departments.unchanged += 1
        else:
            plan.departments.updated.append(row.code)
    plan.departments.removed = removed


def _cycle_members(parent_of: dict[str, str | None]) -> list[str]:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    in_cycle: list[str] = []
    for start in parent_of:
        path: list[str] = []
        node: str | None = start
        while node is not None and node in parent_of and state.get(node) != 2:
            if state.get(node) == 1:
                in_cycle += path[path.index(node) :]
                break
            state[node] = 1
            path.append(node)
            node = parent_of[node]
        for visited in path:
            state[visited] = 2
    return sorted(set(in_cycle))


def _plan_users(plan: ImportPlan, rows: list[UserRow], actor: User | None) -> None:
    organization = plan.organization
    existing = {u.login_id: u for u in User.objects.filter(organization=organization)}
    roles: dict[int, set[str]] = {}
    for user_id, role in RoleAssignment.objects.filter(user__organization=organization).values_list("user_id", "role"):
        roles.setdefault(user_id, set()).add(role)
    plan._existing_users = existing
    plan._existing_roles = {uid: frozenset(r) for uid, r in roles.items()}
    plan._user_rows = rows
    available = {r.code for r in plan._dept_rows if r.code} | (
        set(plan._existing_depts) - set(plan.departments.removed)
    )
    dept_codes = {d.id: code for code, d in plan._existing_depts.items()}
    in_file = {r.login_id for r in rows}
    anpi_elsewhere = {
        u.anpi_login_id: u.login_id for u in existing.values() if u.anpi_login_id and u.login_id not in in_file
    }
    for row in rows:
        if row.department_code and row.department_code not in available:
            plan.faults.append(
                ImportFault(
                    "users",
                    row.line,
                    "DEPARTMENT_CODE",
                    Fault.UNKNOWN_DEPARTMENT,
                    f"The department {row.department_code!r} does not exist.",
                )
            )
        if row.anpi_login_id and row.anpi_login_id in anpi_elsewhere:
            plan.faults.append(
                ImportFault(
                    "users",
                    row.line,
                    "ANPI_LOGIN_ID",
                    Fault.ANPI_LOGIN_ID_TAKEN,
                    f"{row.anpi_login_id!r} belongs to {anpi_elsewhere[row.anpi_login_id]}, who is not in the file.",
                )
            )
        current = existing.get(row.login_id)
        if current is None:
            if not row.password:
                plan.faults.append(
                    ImportFault(
                        "users", row.line, "PASSWORD", Fault.PASSWORD_REQUIRED, "A new person needs a PASSWORD."
                    )
                )
            plan.users.created.append(row.login_id)
            continue
        changed = (
            not current.is_active
            or any(getattr(current, name) != getattr(row, name) for name in USER_FIELDS)
            or (current.anpi_login_id or "") != row.anpi_login_id
            or dept_codes.get(current.department_id or 0, "") != row.department_code
            or plan._existing_roles.get(current.id, frozenset()) != row.privileges
        )
        if row.password and not _still_initial(current, row.password):
            plan._password_reset.add(row.login_id)
            changed = True
        if changed:
            plan.users.updated.append(row.login_id)
        else:
            plan.users.unchanged += 1
    if plan.full_sync:
        leaving = sorted(login for login, u in existing.items() if u.is_active and login not in in_file)
        if actor is not None and actor.login_id in leaving:
            plan.faults.append(
                ImportFault(
                    "users",
                    None,
                    "LOGIN_ID",
                    Fault.SELF_DEACTIVATION,
                    "The file leaves you out: a full sync would deactivate your own account.",
                )
            )
        plan.users.removed = leaving
    _check_licence(plan, rows, existing, in_file)


def _still_initial(user: User, password: str) -> bool:
    """The person still has this very initial password (cheap to check; never runs the slow hasher)."""
    return (
        user.must_change_password
        and user.password.startswith(f"{_INITIAL.algorithm}$")
        and _INITIAL.verify(password, user.password)
    )


def _check_licence(plan: ImportPlan, rows: list[UserRow], existing: dict[str, User], in_file: set[str]) -> None:
    leaving = set(plan.users.removed)
    staying = [u for login, u in existing.items() if u.is_active and login not in in_file and login not in leaving]
    organization = plan.organization
    after = {
        "people": (len(staying) + len(rows), organization.max_people),
        "talk_users": (
            sum(u.talk_available for u in staying) + sum(r.talk_available for r in rows),
            organization.max_talk_users,
        ),
        "safety_users": (
            sum(bool(u.anpi_login_id) for u in staying) + sum(bool(r.anpi_login_id) for r in rows),
            organization.max_safety_users,
        ),
    }
    plan._licence = after
    labels = {"people": "people", "talk_users": "talk users", "safety_users": "safety-confirmation users"}
    for key, (count, limit) in after.items():
        if count > limit:
            plan.faults.append(
                ImportFault(
                    "users",
                    None,
                    None,
                    Fault.LICENCE_LIMIT,
                    f"The import would make {count} {labels[key]}; the licence allows {limit}.",
                )
            )


# --- Apply ----------------------------------------------------------------------------------------------


def import_apply(
    *,
    organization: Organization,
    departments_raw: bytes | None = None,
    users_raw: bytes | None = None,
    full_sync: bool = False,
    actor: User | None = None,
    progress: Progress | None = None,
) -> ImportPlan:
    """Apply the files all or nothing. Returns the plan; if it has faults, nothing was written."""
    report = progress or _noop
    with transaction.atomic():
        # One import at a time per organisation: the plan below is made under this lock, so it cannot go stale.
        Organization.objects.select_for_update().filter(id=organization.id).get()
        plan = import_plan(
            organization=organization,
            departments_raw=departments_raw,
            users_raw=users_raw,
            full_sync=full_sync,
            actor=actor,
            progress=progress,
        )
        if plan.faults:
            return plan
        departments, renamed, orphaned = _apply_departments(plan)
        report("apply", 1, 3)
        if plan.has_users:
            _apply_users(plan, departments, report)
        if renamed or orphaned:
            # The search text of people in a renamed or removed department names the old department.
            _refresh_search_text(
                User.objects.filter(organization=organization).filter(Q(department_id__in=renamed) | Q(id__in=orphaned))
            )
        report("apply", 3, 3)
    return plan


def _apply_departments(plan: ImportPlan) -> tuple[dict[str, Department], list[int], list[int]]:
    """Write the departments. Returns them by code, the ids of renamed ones and the ids of the people whose
    department was removed: their search text is stale."""
    organization = plan.organization
    existing = plan._existing_depts
    if not plan.has_departments:
        return existing, [], []
    new = [
        Department(
            organization=organization,
            code=r.code,
            name=r.name,
            name_kana=r.name_kana,
            sort_order=r.sort_order,
            phone_number=r.phone_number,
            email=r.email,
        )
        for r in plan._dept_rows
        if r.code not in existing
    ]
    Department.objects.bulk_create(new)
    by_code = {d.code: d for d in Department.objects.filter(organization=organization)}
    changed = []
    renamed: list[int] = []
    orphaned: list[int] = []
    for row in plan._dept_rows:
        dept = by_code[row.code]
        parent_id = by_code[row.parent_code].id if row.parent_code else None
        values = {
            "name": row.name,
            "name_kana": row.name_kana,
            "sort_order": row.sort_order,
            "phone_number": row.phone_number,
            "email": row.email,
            "parent_id": parent_id,
        }
        if any(getattr(dept, k) != v for k, v in values.items()):
            if row.code in existing and dept.name != row.name:
                renamed.append(dept.id)
            for k, v in values.items():
                setattr(dept, k, v)
            changed.append(dept)
    Department.objects.bulk_update(changed, [*DEPARTMENT_FIELDS, "parent"], batch_size=1000)
    if plan.departments.removed:
        gone = Department.objects.filter(organization=organization, code__in=plan.departments.removed)
        orphaned = list(User.objects.filter(department__in=gone).values_list("id", flat=True))
        User.objects.filter(department__in=gone).update(department=None)
        Department.objects.filter(parent__in=gone).exclude(code__in=plan.departments.removed).update(parent=None)
        gone.update(parent=None)
        gone.delete()
        for code in plan.departments.removed:
            by_code.pop(code, None)
    return by_code, renamed, orphaned


def _initial_password(password: str) -> str:
    """The one-time initial password's hash. The salt comes from `secrets` in one call: Django's
    get_random_string draws one character at a time, which costs more than the SHA-256 itself."""
    return _INITIAL.encode(password, secrets.token_urlsafe(16))


class _NewUser:
    """Builds unsaved User objects with the positional constructor, as Django does for rows it reads:
    the keyword path of Model.__init__ costs more than the rest of building a row together."""

    def __init__(self, organization: Organization) -> None:
        now = timezone.now()
        self.fields = [f.attname for f in User._meta.concrete_fields]
        self.defaults: dict[str, Any] = {
            f.attname: (now if f.attname == "date_joined" else f.get_default()) for f in User._meta.concrete_fields
        }
        self.defaults.update(id=None, organization_id=organization.id, must_change_password=True, is_active=True)

    def __call__(self, values: dict[str, Any]) -> User:
        merged = {**self.defaults, **values}
        return _construct(*[merged[name] for name in self.fields])


_construct: Callable[..., User] = User  # positional arguments, in concrete-field order


def _apply_users(plan: ImportPlan, departments: dict[str, Department], report: Progress) -> None:
    organization = plan.organization
    existing = plan._existing_users
    total = len(plan._user_rows)
    new_user = _NewUser(organization)
    created: list[User] = []
    updated: list[User] = []
    role_rows: dict[str, frozenset[str]] = {}  # people whose roles are written: new ones with roles, changed ones
    updated_logins = set(plan.users.updated)
    anpi_moves: list[int] = []
    for index, row in enumerate(plan._user_rows):
        dept = departments.get(row.department_code) if row.department_code else None
        values: dict[str, Any] = {name: getattr(row, name) for name in USER_FIELDS}
        values["department_id"] = dept.id if dept else None
        values["anpi_login_id"] = row.anpi_login_id or None
        values["is_active"] = True
        values["search_text"] = _search_text(row, dept)
        user = existing.get(row.login_id)
        if user is None:
            values["login_id"] = row.login_id
            values["password"] = _initial_password(row.password)
            created.append(new_user(values))
            if row.privileges:
                role_rows[row.login_id] = row.privileges
        elif row.login_id in updated_logins:
            if (user.anpi_login_id or None) != values["anpi_login_id"] and user.anpi_login_id:
                anpi_moves.append(user.id)
            for name, value in values.items():
                setattr(user, name, value)
            if row.login_id in plan._password_reset:
                user.password = _initial_password(row.password)
                user.must_change_password = True
            updated.append(user)
            if plan._existing_roles.get(user.id, frozenset()) != row.privileges:
                role_rows[row.login_id] = row.privileges
        if index % 2000 == 1999:
            report("apply", index + 1, total)
    # ANPI_LOGIN_IDs may move between people in one file: free them first so the unique constraint holds.
    if anpi_moves:
        User.objects.filter(id__in=anpi_moves).update(anpi_login_id=None)
    User.objects.bulk_create(created, batch_size=2000)
    _bulk_update(
        User,
        updated,
        [*USER_FIELDS, "department", "anpi_login_id", "is_active", "search_text", "password", "must_change_password"],
    )
    if role_rows:
        # bulk_create sets the new ids on PostgreSQL and SQLite; ask only for any it could not.
        ids = {u.login_id: u.id for u in created if u.id is not None and u.login_id in role_rows}
        ids.update({u.login_id: u.id for u in updated if u.login_id in role_rows})
        missing = [login for login in role_rows if login not in ids]
        if missing:
            ids.update(
                User.objects.filter(organization=organization, login_id__in=missing).values_list("login_id", "id")
            )
        changed_ids = [u.id for u in updated if u.login_id in role_rows]
        if changed_ids:
            RoleAssignment.objects.filter(user_id__in=changed_ids).delete()
        RoleAssignment.objects.bulk_create(
            [
                RoleAssignment(user_id=ids[login], role=role)
                for login, roles in role_rows.items()
                for role in sorted(roles)
            ],
            batch_size=2000,
        )
    if plan.users.removed:
        User.objects.filter(organization=organization, login_id__in=plan.users.removed).update(is_active=False)


def _search_text(person: UserRow | User, dept: Department | None) -> str:
    """One rule for an imported row and a person saved one by one: both carry the same field names."""
    return search_text(
        last_name=person.last_name,
        first_name=person.first_name,
        last_name_kana=person.last_name_kana,
        first_name_kana=person.first_name_kana,
        department_name=dept.name if dept else "",
        position=person.position,
        email=person.email,
        email2=person.email2,
        phones=(person.phone_number, person.mobile_phone_number, person.extension_number),
        login_id=person.login_id,
    )


def user_search_text(user: User) -> str:
    """The search text of a person saved one by one (the import computes it in bulk)."""
    return _search_text(user, user.department)


def refresh_search_text(*, organization: Organization, department_ids: Iterable[int] | None = None) -> int:
    """Recompute search text after a department is renamed. Returns how many people changed."""
    people = User.objects.filter(organization=organization)
    if department_ids is not None:
        people = people.filter(department_id__in=list(department_ids))
    return _refresh_search_text(people)


def _refresh_search_text(people: QuerySet[User]) -> int:
    people = people.select_related("department")
    changed = []
    for person in people:
        text = user_search_text(person)
        if text != person.search_text:
            person.search_text = text
            changed.append(person)
    _bulk_update(User, changed, ["search_text"])
    return len(changed)


def _bulk_update(model: type[Model], objects: Sequence[Model], field_names: Sequence[str]) -> None:
    """Save these fields of these objects with one prepared UPDATE per row, sent with `executemany`
    (pipelined by psycopg). Django's bulk_update builds a CASE over the whole batch for every field, which
    the database evaluates row by row: updating 10,000 people that way takes half a minute."""
    if not objects:
        return
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    fields = [f for f in meta.concrete_fields if f.name in field_names and not f.primary_key]
    assert len(fields) == len(set(field_names)), f"not concrete fields of {meta.label}: {field_names}"
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(str(f.column))} = %s" for f in fields)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(str(meta.pk.column))} = %s"  # noqa: S608
    params = [[f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields] + [obj.pk] for obj in objects]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
