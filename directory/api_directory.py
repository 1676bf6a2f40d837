"""REST endpoints of the directory: people, departments, search, import jobs and export."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import ApplicationError
from directory import people as people_service
from directory.api import OrgAPIView
from directory.exporter import departments_export, export_filenames, users_export
from directory.import_jobs import import_job_confirm, import_job_create, import_job_data
from directory.models import ImportJob, Role, User
from directory.permissions import IsSafetyAdmin, IsSystemAdmin, PasswordChanged
from directory.regions import prefecture_name
from directory.selectors import (
    access_department,
    access_person,
    contact_problem_badges,
    current_safety_answers,
    department_tree,
    person_search,
)


def phone_link(scheme: str, number: str) -> str:
    """The card's link for a number, or "" when it has no digits (one rule with personal groups)."""
    from directory.groups import phone_href

    return phone_href(scheme=scheme, number=number) if any(ch.isdigit() for ch in number) else ""


def person_data(
    user: User,
    *,
    scheme: str,
    answer: dict[str, Any] | None = None,
    full: bool = False,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """One shape for the list, the card and the page. `problems`: the person's contact problems, given only to
    viewers who may see them (directory.selectors.contact_problem_badges); for anyone else the key is absent."""
    data: dict[str, Any] = {
        "id": user.id,
        "name": user.display_name,
        "kana": f"{user.last_name_kana} {user.first_name_kana}".strip(),
        "department": {"id": user.department.id, "name": user.department.name} if user.department else None,
        "position": user.position,
        "phones": [
            {"kind": kind, "number": number, "href": phone_link(scheme, number)}
            for kind, number in (
                ("phone", user.phone_number),
                ("mobile", user.mobile_phone_number),
                ("extension", user.extension_number),
            )
            if number
        ],
        "email": user.email,
        "safety_answer": answer,
    }
    if problems is not None:
        data["contact_problems"] = problems
    if full:
        data.update(
            login_id=user.login_id,
            last_name=user.last_name,
            first_name=user.first_name,
            last_name_kana=user.last_name_kana,
            first_name_kana=user.first_name_kana,
            email2=user.email2,
            phone_number=user.phone_number,
            mobile_phone_number=user.mobile_phone_number,
            extension_number=user.extension_number,
            region_code=user.region_code,
            region_name=prefecture_name(user.region_code, user.language),
            talk_available=user.talk_available,
            anpi_login_id=user.anpi_login_id,
            language=user.language,
            roles=sorted(r.value for r in user.roles),
            is_active=user.is_active,
        )
    return data


class PersonIn(serializers.Serializer[Any]):
    last_name = serializers.CharField(max_length=50, required=False)
    first_name = serializers.CharField(max_length=50, required=False, allow_blank=True)
    last_name_kana = serializers.CharField(max_length=100, required=False, allow_blank=True)
    first_name_kana = serializers.CharField(max_length=100, required=False, allow_blank=True)
    department_id = serializers.IntegerField(required=False, allow_null=True)
    position = serializers.CharField(max_length=100, required=False, allow_blank=True)
    email = serializers.CharField(max_length=254, required=False, allow_blank=True)
    email2 = serializers.CharField(max_length=254, required=False, allow_blank=True)
    phone_number = serializers.CharField(max_length=30, required=False, allow_blank=True)
    mobile_phone_number = serializers.CharField(max_length=30, required=False, allow_blank=True)
    extension_number = serializers.CharField(max_length=20, required=False, allow_blank=True)
    region_code = serializers.CharField(max_length=2, required=False, allow_blank=True)
    talk_available = serializers.BooleanField(required=False)
    anpi_login_id = serializers.CharField(max_length=32, required=False, allow_blank=True, allow_null=True)
    language = serializers.ChoiceField(choices=["ja", "en"], required=False)
    roles = serializers.ListField(child=serializers.ChoiceField(choices=Role.values), required=False)


class PersonCreateIn(PersonIn):
    login_id = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=128)
    last_name = serializers.CharField(max_length=50)


class PeopleApi(OrgAPIView):
    """GET: search (everyone); POST: add a person (system administrators)."""

    def get_permissions(self) -> Any:
        if self.request.method == "POST":
            return [IsAuthenticated(), PasswordChanged(), IsSystemAdmin()]
        return super().get_permissions()

    def get(self, request: Request, slug: str) -> Response:
        query = str(request.query_params.get("q", ""))[:100]
        department = None
        if request.query_params.get("department"):
            try:
                department = access_department(self.person, int(request.query_params["department"]))
            except ValueError:
                raise ApplicationError("department must be a number.", code="invalid") from None
        try:
            offset = max(0, int(request.query_params.get("offset", 0)))
        except ValueError:
            offset = 0
        found = person_search(organization=self.organization, query=query, department=department, offset=offset)
        answers = current_safety_answers(organization=self.organization, user_ids=[p.id for p in found])
        badges = contact_problem_badges(
            viewer=self.person, organization=self.organization, user_ids=[p.id for p in found]
        )
        scheme = self.organization.phone_url_scheme
        results = [
            person_data(p, scheme=scheme, answer=answers.get(p.id), problems=None if badges is None else badges[p.id])
            for p in found
        ]
        return Response({"results": results, "offset": offset})

    def post(self, request: Request, slug: str) -> Response:
        data = PersonCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        person = people_service.person_create(
            organization=self.organization,
            login_id=values.pop("login_id"),
            password=values.pop("password"),
            roles=values.pop("roles", ()),
            **values,
        )
        return Response(person_data(person, scheme=self.organization.phone_url_scheme, full=True), status=201)


class PersonApi(OrgAPIView):
    """GET: a person's card (everyone); PATCH: change (system administrators; safety administrators may
    change only ANPI_LOGIN_ID)."""

    def get(self, request: Request, slug: str, person_id: int) -> Response:
        admin = self.person.has_role(Role.SYSTEM_ADMIN)
        person = access_person(self.person, person_id, include_inactive=admin)
        answers = current_safety_answers(organization=self.organization, user_ids=[person.id])
        badges = contact_problem_badges(viewer=self.person, organization=self.organization, user_ids=[person.id])
        return Response(
            person_data(
                person,
                scheme=self.organization.phone_url_scheme,
                answer=answers.get(person.id),
                full=True,
                problems=badges.get(person.id) if badges is not None else None,
            )
        )

    def patch(self, request: Request, slug: str, person_id: int) -> Response:
        actor = self.person
        person = access_person(actor, person_id, include_inactive=True)
        data = PersonIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        # Safety administrators set people's ANPI_LOGIN_ID and nothing else.
        anpi_only = actor.has_role(Role.ADMIN_ANPI) and set(values) <= {"anpi_login_id"}
        if not actor.has_role(Role.SYSTEM_ADMIN) and not anpi_only:
            self.permission_denied(request, message="Your role does not allow this.")
        person = people_service.person_update(user=person, roles=values.pop("roles", None), **values)
        return Response(person_data(person, scheme=self.organization.phone_url_scheme, full=True))


class PersonActiveApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, IsSystemAdmin]

    class In(serializers.Serializer[Any]):
        active = serializers.BooleanField()

    def post(self, request: Request, slug: str, person_id: int) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        person = access_person(self.person, person_id, include_inactive=True)
        person = people_service.person_set_active(user=person, active=data.validated_data["active"], actor=self.person)
        return Response(person_data(person, scheme=self.organization.phone_url_scheme, full=True))


class DepartmentIn(serializers.Serializer[Any]):
    code = serializers.CharField(max_length=64, required=False)
    name = serializers.CharField(max_length=100, required=False)
    name_kana = serializers.CharField(max_length=200, required=False, allow_blank=True)
    parent_id = serializers.IntegerField(required=False, allow_null=True)
    sort_order = serializers.IntegerField(required=False)
    phone_number = serializers.CharField(max_length=30, required=False, allow_blank=True)
    email = serializers.CharField(max_length=254, required=False, allow_blank=True)


def department_data(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "code": d.code,
        "name": d.name,
        "name_kana": d.name_kana,
        "parent_id": d.parent_id,
        "sort_order": d.sort_order,
        "phone_number": d.phone_number,
        "email": d.email,
    }


def _node(n: Any) -> dict[str, Any]:
    return {
        "id": n.id,
        "code": n.code,
        "name": n.name,
        "name_kana": n.name_kana,
        "phone_number": n.phone_number,
        "email": n.email,
        "people": n.people,
        "children": [_node(c) for c in n.children],
    }


class DepartmentsApi(OrgAPIView):
    def get_permissions(self) -> Any:
        if self.request.method == "POST":
            return [IsAuthenticated(), PasswordChanged(), IsSystemAdmin()]
        return super().get_permissions()

    def get(self, request: Request, slug: str) -> Response:
        return Response({"tree": [_node(n) for n in department_tree(organization=self.organization)]})

    def post(self, request: Request, slug: str) -> Response:
        data = DepartmentIn(data=request.data)
        data.is_valid(raise_exception=True)
        department = people_service.department_create(organization=self.organization, **data.validated_data)
        return Response(department_data(department), status=201)


class DepartmentApi(OrgAPIView):
    def get_permissions(self) -> Any:
        if self.request.method in ("PATCH", "DELETE"):
            return [IsAuthenticated(), PasswordChanged(), IsSystemAdmin()]
        return super().get_permissions()

    def get(self, request: Request, slug: str, department_id: int) -> Response:
        return Response(department_data(access_department(self.person, department_id)))

    def patch(self, request: Request, slug: str, department_id: int) -> Response:
        department = access_department(self.person, department_id)
        data = DepartmentIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        department = people_service.department_update(department=department, **data.validated_data)
        return Response(department_data(department))

    def delete(self, request: Request, slug: str, department_id: int) -> Response:
        people_service.department_delete(department=access_department(self.person, department_id))
        return Response(status=204)


class ImportsApi(OrgAPIView):
    """POST multipart `departments` and/or `users` files (+ `full_sync`): stores them and queues a check."""

    permission_classes = [IsAuthenticated, PasswordChanged, IsSystemAdmin]
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get(self, request: Request, slug: str) -> Response:
        jobs = ImportJob.objects.filter(organization=self.organization).defer("departments_file", "users_file")[:20]
        return Response({"results": [import_job_data(j) for j in jobs]})

    def post(self, request: Request, slug: str) -> Response:
        raw_sync = request.data.get("full_sync", "") if hasattr(request.data, "get") else ""
        full_sync = str(raw_sync).lower() in ("1", "true", "on", "yes")
        job = import_job_create(
            organization=self.organization,
            actor=self.person,
            departments=request.FILES.get("departments"),
            users=request.FILES.get("users"),
            full_sync=full_sync,
        )
        job.refresh_from_db()  # the check may already have run (embedded default: tasks run in-process)
        return Response(import_job_data(job), status=202)


class ImportApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, IsSystemAdmin]

    def _job(self, job_id: int) -> ImportJob:
        job = ImportJob.objects.filter(organization=self.organization, id=job_id).first()
        if job is None:
            from django.http import Http404

            raise Http404
        return job

    def get(self, request: Request, slug: str, job_id: int) -> Response:
        return Response(import_job_data(self._job(job_id)))

    def post(self, request: Request, slug: str, job_id: int) -> Response:
        job = import_job_confirm(job=self._job(job_id))
        job.refresh_from_db()
        return Response(import_job_data(job), status=202)


class ExportApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, IsSystemAdmin | IsSafetyAdmin]

    def get(self, request: Request, slug: str, kind: str) -> HttpResponse:
        departments_name, users_name = export_filenames()
        if kind == "departments":
            body, name = departments_export(organization=self.organization), departments_name
        elif kind == "users":
            body, name = users_export(organization=self.organization), users_name
        else:
            from django.http import Http404

            raise Http404
        response = HttpResponse(body, content_type="text/tab-separated-values; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
