"""Directory REST endpoints under /<slug>/api/directory/."""

from django.urls import URLPattern, path

from directory import api_directory as api

urlpatterns: list[URLPattern] = [
    path("people/", api.PeopleApi.as_view(), name="api-people"),
    path("people/<int:person_id>/", api.PersonApi.as_view(), name="api-person"),
    path("people/<int:person_id>/active/", api.PersonActiveApi.as_view(), name="api-person-active"),
    path("departments/", api.DepartmentsApi.as_view(), name="api-departments"),
    path("departments/<int:department_id>/", api.DepartmentApi.as_view(), name="api-department"),
    path("imports/", api.ImportsApi.as_view(), name="api-imports"),
    path("imports/<int:job_id>/", api.ImportApi.as_view(), name="api-import"),
    path("export/<str:kind>.tsv", api.ExportApi.as_view(), name="api-export"),
]
