"""Directory pages under /<slug>/directory/ (the REST endpoints they use are under /<slug>/api/directory/)."""

from django.urls import URLPattern, path

from frontend import directory_views as views

urlpatterns: list[URLPattern] = [
    path("", views.search, name="directory"),
    path("people/new/", views.person_new, name="directory-person-new"),
    path("people/<int:person_id>/", views.person_card, name="directory-person"),
    path("departments/", views.departments, name="directory-departments"),
    path("import/", views.import_page, name="directory-import"),
]
