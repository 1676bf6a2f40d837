"""Directory pages under /<slug>/directory/: search, person cards, the department tree, and the system
administrators' import page and one-by-one management of people and departments.

The views only read (through directory.selectors) and render. Every write goes from the page's JavaScript
(frontend/static/frontend/directory.js) to the directory REST API, which calls the services; so the page,
the API and the command line share one set of rules. List rows and cards use the API's `person_data()`
shape, so the server-rendered first page and the rows the script renders from the API are the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.errors import ApplicationError
from directory.api_directory import person_data, phone_link
from directory.auth import request_person
from directory.models import Department, ImportJob, Language, Organization, Role, User
from directory.regions import PREFECTURES, prefecture_name
from directory.selectors import (
    access_department,
    access_person,
    contact_problem_badges,
    current_safety_answers,
    department_tree,
    person_search,
)
from directory.services import phone_scheme_validate  # the one validator, with the settings service
from directory.tsv import MAX_FILE_BYTES, Fault
from frontend.views import _page, org_page
from safety.checks import problem_labels

PAGE_SIZE = 50  # rows per search page: the same as the REST endpoint's page
QUERY_MAX = 100

# --- The phone URL scheme -------------------------------------------------------------------------------

DEFAULT_PHONE_SCHEME = "tel:"


def _scheme(organization: Organization) -> str:
    """The stored scheme, or `tel:` if it was saved before validation existed and would not pass now."""
    try:
        return phone_scheme_validate(organization.phone_url_scheme)
    except ApplicationError:
        return DEFAULT_PHONE_SCHEME


# --- Departments as the pages show them -----------------------------------------------------------------


@dataclass
class DepartmentView:
    id: int
    code: str
    name: str
    name_kana: str
    phone_number: str
    phone_href: str
    email: str
    people: int  # active people directly in it
    total: int  # active people in it and below
    depth: int
    parent_id: int | None
    path: tuple[str, ...]  # names from the root down to and including this one
    children: list[DepartmentView] = field(default_factory=list)

    @property
    def phone(self) -> dict[str, str]:
        """The department's phone in the shape of a person's `phones[]` entry."""
        return {"kind": "phone", "number": self.phone_number, "href": self.phone_href}

    @property
    def indent(self) -> str:
        # Ideographic spaces: HTML keeps them in <option> text, where ordinary spaces collapse.
        return "\u3000" * self.depth


def _departments(organization: Organization, scheme: str) -> list[DepartmentView]:
    def build(nodes: Any, depth: int, parent_id: int | None, path: tuple[str, ...]) -> list[DepartmentView]:
        views = []
        for node in nodes:
            here = (*path, node.name)
            children = build(node.children, depth + 1, node.id, here)
            views.append(
                DepartmentView(
                    id=node.id,
                    code=node.code,
                    name=node.name,
                    name_kana=node.name_kana,
                    phone_number=node.phone_number,
                    phone_href=phone_link(scheme, node.phone_number) if node.phone_number else "",
                    email=node.email,
                    people=node.people,
                    total=node.people + sum(c.total for c in children),
                    depth=depth,
                    parent_id=parent_id,
                    path=here,
                    children=children,
                )
            )
        return views

    return build(department_tree(organization=organization), 0, None, ())


def _flatten(tree: list[DepartmentView]) -> list[DepartmentView]:
    flat: list[DepartmentView] = []
    for node in tree:
        flat.append(node)
        flat.extend(_flatten(node.children))
    return flat


def _department_param(viewer: User, raw: str | None) -> Department | None:
    """The `department` filter: ignored when it is not a number, 404 when it is not the viewer's organisation's."""
    if not raw:
        return None
    try:
        department_id = int(raw)
    except ValueError:
        return None
    if not 0 < department_id < 2**63:
        return None
    return access_department(viewer, department_id)


def _offset(raw: str | None) -> int:
    try:
        return min(max(0, int(raw or 0)), 1_000_000)
    except ValueError:
        return 0


def _language() -> str:
    return (get_language() or "ja")[:2]


def _require_system_admin(request: HttpRequest) -> User:
    person = request_person(request)
    if not person.has_role(Role.SYSTEM_ADMIN):
        raise PermissionDenied
    return person


def _with_badge(data: dict[str, Any]) -> dict[str, Any]:
    """A person's row or card with the words of their contact problems, when the viewer may see them (the
    `contact_problems` key is there only then): the small warning badge of the directory."""
    if data.get("contact_problems"):
        words = problem_labels()
        data["contact_labels"] = [words[code] for code in data["contact_problems"]]
    return data


# Texts the page scripts show, translated on the server (the scripts carry no language of their own).
def _texts(*, contact_badges: bool = False) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if contact_badges:  # only for administrators: nobody else learns the badge exists
        extra["contact_problems"] = problem_labels()
        extra["contact_title"] = _("Contact problems (only administrators see this)")
    return {
        **extra,
        "found": _("%(n)s people found."),
        "found_one": _("1 person found."),
        "found_first": _("Showing the first %(n)s. Type more to narrow the search."),
        "nobody": _("Nobody found. Try part of the name, the reading in hiragana, or a phone number."),
        "search_failed": _("The search failed. Check the connection and try again."),
        "phone_kinds": {"phone": _("Phone"), "mobile": _("Mobile"), "extension": _("Extension")},
        "safety": _safety_texts(),
        "saved": _("Saved."),
        "fix_fields": _("Check the marked fields."),
        "failed": _("That did not work: %(message)s"),
        "confirm_deactivate": _("Deactivate %(name)s? They can no longer sign in. Their history stays."),
        "confirm_delete_department": _("Delete the department %(name)s?"),
        "add_department": _("Add a department"),
        "edit_department": _("Edit %(name)s"),
    }


def _safety_texts() -> dict[str, str]:
    return {
        "safe": _("Safe"),
        "minor": _("Minor injury"),
        "serious": _("Serious injury"),
        "none": _("No answer"),
        "title": _("Safety check"),
    }


def _import_texts() -> dict[str, Any]:
    return {
        "phases": {
            "upload": _("Uploading…"),
            "check": _("Checking the files…"),
            "checked": _("Checked. Nothing has changed yet."),
            "invalid": _("Stopped: the files have errors. Nothing was changed."),
            "apply": _("Applying the changes…"),
            "applied": _("Applied."),
            "failed": _("The import failed. Nothing was changed."),
        },
        "files": {"departments": _("Department file"), "users": _("User file"), "": ""},
        "reasons": {code: str(label) for code, label in FAULT_REASONS.items()},
        "no_file": _("Choose a department file, a user file or both."),
        "too_large": _("%(name)s is larger than %(mb)s MB."),
        "not_uploaded": _("not in this import"),
        "and_more": _("…and %(n)s more"),
        "over_limit": _("over the limit"),
        "applied": _("The import was applied."),
        "error_count": _("%(n)s errors. Fix them in the file and upload it again; nothing has been changed."),
        "error_one": _("1 error. Fix it in the file and upload it again; nothing has been changed."),
        "failed": _("That did not work: %(message)s"),
        "lists": {
            "departments": {
                "created": _("Departments added"),
                "updated": _("Departments changed"),
                "removed": _("Departments removed"),
            },
            "users": {
                "created": _("People added"),
                "updated": _("People changed"),
                "deactivated": _("People deactivated"),
            },
        },
        "licence": {
            "people": _("People in the directory"),
            "talk_users": _("Talk users"),
            "safety_users": _("Safety-confirmation users"),
        },
        "removals_users": _(
            "%(n)s people will be deactivated because they are not in the user file. Nobody is deleted."
        ),
        "removals_departments": _("%(n)s departments will be removed because they are not in the department file."),
        "apply": _("Apply these changes"),
        "apply_with_removals": _("Apply, and deactivate %(n)s people"),
        "full_sync": _("full sync"),
    }


# Short reasons for import faults, by their stable code; the importer's own message (with the value it
# found) is shown under the reason.
FAULT_REASONS: dict[str, Any] = {
    Fault.EMPTY: gettext_lazy("The file is empty"),
    Fault.TOO_LARGE: gettext_lazy("The file is too large"),
    Fault.NOT_TEXT: gettext_lazy("Not a text file in a known encoding"),
    Fault.MISSING_COLUMN: gettext_lazy("A column is missing"),
    Fault.UNKNOWN_COLUMN: gettext_lazy("Unknown column"),
    Fault.DUPLICATE_COLUMN: gettext_lazy("A column appears twice"),
    Fault.COLUMN_COUNT: gettext_lazy("Wrong number of columns"),
    Fault.TOO_MANY_ROWS: gettext_lazy("Too many rows"),
    Fault.REQUIRED: gettext_lazy("Required"),
    Fault.TOO_LONG: gettext_lazy("Too long"),
    Fault.INVALID_EMAIL: gettext_lazy("Not a valid e-mail address"),
    Fault.INVALID_PHONE: gettext_lazy("Not a phone number"),
    Fault.INVALID_KANA: gettext_lazy("Not katakana"),
    Fault.INVALID_INTEGER: gettext_lazy("Not a whole number"),
    Fault.INVALID_LOGIN_ID: gettext_lazy("Not a valid login ID"),
    Fault.DUPLICATE_KEY: gettext_lazy("Appears more than once"),
    Fault.DUPLICATE_ANPI_LOGIN_ID: gettext_lazy("ANPI_LOGIN_ID appears more than once"),
    Fault.INVALID_ANPI_LOGIN_ID: gettext_lazy("Not a valid ANPI_LOGIN_ID"),
    Fault.UNKNOWN_PRIVILEGE: gettext_lazy("Unknown privilege"),
    Fault.INVALID_FLAG: gettext_lazy("Must be 1 or 0"),
    Fault.UNKNOWN_REGION: gettext_lazy("Unknown prefecture code"),
    Fault.UNKNOWN_LANGUAGE: gettext_lazy("Unknown language"),
    Fault.UNKNOWN_DEPARTMENT: gettext_lazy("Unknown department"),
    Fault.UNKNOWN_PARENT: gettext_lazy("Unknown parent department"),
    Fault.CYCLE: gettext_lazy("The departments form a cycle"),
    Fault.PASSWORD_REQUIRED: gettext_lazy("A new person needs a password"),
    Fault.LICENCE_LIMIT: gettext_lazy("Over the licence limit"),
    Fault.SELF_DEACTIVATION: gettext_lazy("You would deactivate yourself"),
    Fault.ANPI_LOGIN_ID_TAKEN: gettext_lazy("ANPI_LOGIN_ID is taken"),
    "internal_error": gettext_lazy("Unexpected failure"),
}


def _person_form_context(organization: Organization, departments: list[DepartmentView]) -> dict[str, Any]:
    language = _language()
    return {
        "departments_flat": _flatten(departments),
        "role_choices": Role.choices,
        "language_choices": Language.choices,
        "prefectures": [(p.code, p.ja if language == "ja" else p.en) for p in PREFECTURES.values()],
    }


# --- Pages ----------------------------------------------------------------------------------------------


@never_cache
@require_GET
@org_page()
def search(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Search by name, reading (hiragana works), department, phone or e-mail; the department tree beside it.
    The first page is rendered here, so it works without JavaScript; the script then searches as you type.
    System administrators may include deactivated people (to find and reactivate them); that search is
    answered by this page, since the REST search lists active people only."""
    viewer = request_person(request)
    query = request.GET.get("q", "")[:QUERY_MAX]
    department = _department_param(viewer, request.GET.get("department"))
    offset = _offset(request.GET.get("offset"))
    inactive = request.GET.get("inactive") == "1" and viewer.has_role(Role.SYSTEM_ADMIN)
    scheme = _scheme(organization)
    found = person_search(
        organization=organization,
        query=query,
        department=department,
        limit=PAGE_SIZE,
        offset=offset,
        include_inactive=inactive,
    )
    answers = current_safety_answers(organization=organization, user_ids=[p.id for p in found])
    badges = contact_problem_badges(viewer=viewer, organization=organization, user_ids=[p.id for p in found])
    tree = _departments(organization, scheme)
    people = [
        _with_badge(
            {
                **person_data(
                    p, scheme=scheme, answer=answers.get(p.id), problems=None if badges is None else badges[p.id]
                ),
                "is_active": p.is_active,
            }
        )
        for p in found
    ]
    return _page(
        request,
        "frontend/directory/search.html",
        organization,
        query=query,
        department=department,
        people=people,
        contact_badges=badges is not None,
        inactive=inactive,
        offset=offset,
        next_offset=offset + PAGE_SIZE if len(found) == PAGE_SIZE else None,
        page_size=PAGE_SIZE,
        tree=tree,
        departments_flat=_flatten(tree),
        texts=_texts(contact_badges=badges is not None),
    )


@never_cache
@require_GET
@org_page()
def person_card(request: HttpRequest, organization: Organization, person_id: int) -> HttpResponse:
    """A person's card: phones as big links in the organisation's scheme, e-mail, department, prefecture and
    the current safety answer. System administrators also see inactive people, and edit here."""
    viewer = request_person(request)
    admin = viewer.has_role(Role.SYSTEM_ADMIN)
    person = access_person(viewer, person_id, include_inactive=admin)
    scheme = _scheme(organization)
    answers = current_safety_answers(organization=organization, user_ids=[person.id])
    badges = contact_problem_badges(viewer=viewer, organization=organization, user_ids=[person.id])
    data = _with_badge(
        person_data(
            person,
            scheme=scheme,
            answer=answers.get(person.id),
            full=True,
            problems=None if badges is None else badges[person.id],
        )
    )
    tree = _departments(organization, scheme)
    by_id = {d.id: d for d in _flatten(tree)}
    context: dict[str, Any] = {
        "person": data,
        "is_self": person.id == viewer.id,
        "department_path": by_id[person.department_id].path if person.department_id in by_id else (),
        "region_name": prefecture_name(person.region_code, _language()),
        "emails": [e for e in (person.email, person.email2) if e],
        "saved": request.GET.get("saved") == "1",
        "contact_badges": badges is not None,
        "texts": _texts(),
    }
    if admin:
        context.update(_person_form_context(organization, tree))
    return _page(request, "frontend/directory/person.html", organization, **context)


@never_cache
@require_GET
@org_page()
def person_new(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Add one person (system administrators); the form posts to the REST API."""
    _require_system_admin(request)
    tree = _departments(organization, _scheme(organization))
    department = _department_param(request_person(request), request.GET.get("department"))
    return _page(
        request,
        "frontend/directory/person_new.html",
        organization,
        person={"department": {"id": department.id} if department else None, "language": "ja", "roles": []},
        texts=_texts(),
        **_person_form_context(organization, tree),
    )


@never_cache
@require_GET
@org_page()
def departments(request: HttpRequest, organization: Organization) -> HttpResponse:
    """The department tree with head counts; each opens the search filtered to its subtree. System
    administrators add, rename, move and delete departments here."""
    tree = _departments(organization, _scheme(organization))
    return _page(
        request,
        "frontend/directory/departments.html",
        organization,
        tree=tree,
        departments_flat=_flatten(tree),
        people_total=sum(d.total for d in tree),
        texts=_texts(),
    )


@never_cache
@require_GET
@org_page()
def import_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Upload the TSV files, watch the check, read the preview, confirm; and export the current directory."""
    _require_system_admin(request)
    recent = list(
        ImportJob.objects.filter(organization=organization)
        .defer("departments_file", "users_file", "preview", "result", "errors")
        .select_related("created_by")[:5]
    )
    job_id = _offset(request.GET.get("job")) or None
    if job_id is not None and not ImportJob.objects.filter(organization=organization, id=job_id).exists():
        job_id = None
    return _page(
        request,
        "frontend/directory/import.html",
        organization,
        recent=recent,
        job_id=job_id,
        max_bytes=MAX_FILE_BYTES,
        max_mb=MAX_FILE_BYTES // (1024 * 1024),
        texts=_import_texts(),
    )
