"""Organisation scoping: anything under another organisation's slug is a 404, for pages and REST alike."""

from __future__ import annotations

import pytest

from tests import factories
from tests.conftest import signed_in


@pytest.mark.parametrize("path", ["/ACME/", "/a_b/", "/-x/", "/static-x-/", "/nope/", "/api/", "/nope/api/me/"])
def test_malformed_or_unknown_slug_is_404(client, org, path):
    assert client.get(path).status_code == 404


def test_person_from_another_organisation_gets_404_on_pages_and_api(org, other_org, employee):
    outsider = factories.person(other_org, "spy@globex.example")
    client = signed_in(outsider)
    for path in (
        "/acme/",
        "/acme/home/",
        "/acme/profile/",
        "/acme/settings/",
        "/acme/help/",
        "/acme/api/me/",
        "/acme/api/notices/",
        "/acme/api/push/key/",
        "/acme/api/organization/",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post("/acme/api/notices/", {"title": "x"}, content_type="application/json").status_code == 404
    # and their own organisation still works
    assert client.get("/globex/api/me/").json()["login_id"] == "spy@globex.example"


def test_same_login_id_in_two_organisations_are_two_people(org, other_org):
    a = factories.person(org, "same@example.com", password="password-one-111")
    b = factories.person(other_org, "same@example.com", password="password-two-222")
    assert a.id != b.id
    client = signed_in_with(org.slug, "same@example.com", "password-two-222")
    assert client is None  # org A's person does not accept org B's password
    client = signed_in_with(other_org.slug, "same@example.com", "password-two-222")
    assert client is not None and client.get("/globex/api/me/").json()["id"] == b.id


def signed_in_with(slug, login_id, password):
    from django.test import Client

    client = Client()
    response = client.post(f"/{slug}/", {"login_id": login_id, "password": password})
    return client if response.status_code == 302 else None


def test_anonymous_api_is_refused_and_pages_redirect_to_sign_in(client, org):
    assert client.get("/acme/api/me/").status_code == 403
    response = client.get("/acme/home/")
    assert response.status_code == 302 and response["Location"].startswith("/acme/?next=")
