"""Personal groups (グループ電話帳): at most 10 per person, names unique per owner, members only from the owner's
organisation, each person sees and changes only their own; the REST API and the page."""

from __future__ import annotations

import pytest
from django.urls import resolve

from config.errors import ApplicationError
from directory import groups
from directory.models import PersonalGroup, User
from tests import factories
from tests.conftest import signed_in

API = "/acme/api/groups/"


def codes_of(callable_, **kwargs) -> str:
    with pytest.raises(ApplicationError) as error:
        callable_(**kwargs)
    return error.value.code


# --- Services -------------------------------------------------------------------------------------------


def test_create_rename_delete(org, employee):
    group = groups.group_create(owner=employee, name="  営業   チーム ")
    assert group.name == "営業 チーム"  # spaces tidied
    groups.group_rename(group=group, name="営業部")
    group.refresh_from_db()
    assert group.name == "営業部"
    groups.group_delete(group=group)
    assert not PersonalGroup.objects.exists()


def test_at_most_ten_groups_per_person(org, employee):
    for n in range(PersonalGroup.MAX_PER_PERSON):
        groups.group_create(owner=employee, name=f"group {n}")
    assert codes_of(groups.group_create, owner=employee, name="one too many") == "too_many_groups"
    assert PersonalGroup.objects.filter(owner=employee).count() == 10
    # The limit is per person: a colleague still has all ten.
    colleague = factories.person(org, "colleague")
    groups.group_create(owner=colleague, name="group 0")


def test_names_are_unique_per_owner_and_not_blank(org, employee):
    first = groups.group_create(owner=employee, name="家族")
    second = groups.group_create(owner=employee, name="同期")
    assert codes_of(groups.group_create, owner=employee, name="家族") == "name_taken"
    assert codes_of(groups.group_rename, group=second, name="家族") == "name_taken"
    groups.group_rename(group=first, name="家族")  # its own name is fine
    assert codes_of(groups.group_create, owner=employee, name="   ") == "bad_name"
    assert codes_of(groups.group_create, owner=employee, name="x" * 51) == "bad_name"
    groups.group_create(owner=factories.person(org), name="家族")  # another owner may use it


def test_members_must_be_active_people_of_the_same_organisation(org, other_org, employee):
    colleague = factories.person(org, "colleague")
    gone = factories.person(org, "gone")
    User.objects.filter(pk=gone.pk).update(is_active=False)
    outsider = factories.person(other_org, "outsider")
    group = groups.group_create(owner=employee, name="team", member_ids=[colleague.id])

    for bad in ([colleague.id, outsider.id], [gone.id], [colleague.id, 999_999_999]):
        with pytest.raises(ApplicationError) as error:
            groups.group_members_set(group=group, member_ids=bad)
        assert error.value.code == "unknown_people"
        assert colleague.id not in error.value.details["ids"]
        assert list(group.members.values_list("id", flat=True)) == [colleague.id]  # nothing changed

    # Creating with a stranger creates nothing at all.
    assert codes_of(groups.group_create, owner=employee, name="new", member_ids=[outsider.id]) == "unknown_people"
    assert not PersonalGroup.objects.filter(name="new").exists()


def test_members_are_set_exactly_and_limited(org, employee, settings, monkeypatch):
    a, b, c = (factories.person(org) for _ in range(3))
    group = groups.group_create(owner=employee, name="team")
    groups.group_members_set(group=group, member_ids=[a.id, b.id, a.id])
    assert set(group.members.values_list("id", flat=True)) == {a.id, b.id}
    groups.group_members_set(group=group, member_ids=[c.id])
    assert set(group.members.values_list("id", flat=True)) == {c.id}
    monkeypatch.setattr(PersonalGroup, "MAX_MEMBERS", 2)
    assert codes_of(groups.group_members_set, group=group, member_ids=[a.id, b.id, c.id]) == "too_many_members"
    assert set(group.members.values_list("id", flat=True)) == {c.id}


def test_deactivated_members_are_hidden(org, employee):
    stays, leaves = factories.person(org, "stays"), factories.person(org, "leaves")
    group = groups.group_create(owner=employee, name="team", member_ids=[stays.id, leaves.id])
    User.objects.filter(pk=leaves.pk).update(is_active=False)
    (listed,) = groups.group_list(owner=employee)
    assert [m.login_id for m in groups.group_members(listed)] == ["stays"]
    assert group.members.count() == 2  # history is not rewritten


def test_group_list_is_two_queries(org, employee, django_assert_num_queries):
    for n in range(3):
        groups.group_create(owner=employee, name=f"g{n}", member_ids=[factories.person(org).id for _ in range(3)])
    with django_assert_num_queries(2):
        listed = groups.group_list(owner=employee)
        assert sum(len(groups.group_members(g)) for g in listed) == 9
        assert all(m.department is None for g in listed for m in groups.group_members(g))


@pytest.mark.parametrize(
    ("scheme", "number", "href"),
    [
        ("tel:", "03-5555-1234", "tel:0355551234"),
        ("tel:", "+81 3 5555 1234", "tel:+81355551234"),
        ("com050voipbiz://keypad?tel=", "050-1234-5678", "com050voipbiz://keypad?tel=05012345678"),
        ("javascript:", "110", "tel:110"),
        (" JavaScript:alert(1)//", "110", "tel:110"),
        ("", "1234", "tel:1234"),
    ],
)
def test_phone_href(scheme, number, href):
    assert groups.phone_href(scheme=scheme, number=number) == href


# --- REST -----------------------------------------------------------------------------------------------


def test_api_paths_do_not_shadow_the_other_api_paths(org):
    assert resolve("/acme/api/groups/").url_name == "api-groups"
    assert resolve("/acme/api/groups/3/").url_name == "api-group"
    assert resolve("/acme/api/onboarding/invitations/").url_name == "api-invitations"
    assert resolve("/acme/api/me/").url_name == "api-me"
    assert resolve("/acme/api/notices/").url_name == "api-notices"


def test_api_create_list_update_delete(org, employee, employee_client):
    org.phone_url_scheme = "com050voipbiz://keypad?tel="
    org.save()
    sato = factories.person(org, "sato")
    sato.phone_number, sato.mobile_phone_number = "03-5555-1000", "090-1111-2222"
    sato.save()

    response = employee_client.post(API, {"name": "営業", "member_ids": [sato.id]}, content_type="application/json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["name"] == "営業"
    (member,) = created["members"]
    assert member["id"] == sato.id and member["name"] == sato.display_name  # the directory API's shape
    assert member["phones"] == [
        {"kind": "phone", "number": "03-5555-1000", "href": "com050voipbiz://keypad?tel=0355551000"},
        {"kind": "mobile", "number": "090-1111-2222", "href": "com050voipbiz://keypad?tel=09011112222"},
    ]

    url = f"{API}{created['id']}/"
    assert employee_client.get(API).json() == [created]
    response = employee_client.patch(url, {"name": "営業部", "member_ids": []}, content_type="application/json")
    assert response.status_code == 200 and response.json() == {"id": created["id"], "name": "営業部", "members": []}
    assert employee_client.get(url).json()["name"] == "営業部"
    assert employee_client.delete(url).status_code == 204
    assert employee_client.get(url).status_code == 404
    assert employee_client.get(API).json() == []


def test_patch_changes_both_or_neither(org, employee, employee_client, other_org):
    colleague = factories.person(org)
    group = groups.group_create(owner=employee, name="before", member_ids=[colleague.id])
    outsider = factories.person(other_org)
    response = employee_client.patch(
        f"{API}{group.id}/", {"name": "after", "member_ids": [outsider.id]}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "unknown_people"
    group.refresh_from_db()
    assert group.name == "before" and list(group.members.all()) == [colleague]


def test_the_eleventh_group_is_a_400(org, employee, employee_client):
    for n in range(10):
        assert employee_client.post(API, {"name": f"g{n}"}, content_type="application/json").status_code == 201
    response = employee_client.post(API, {"name": "g10"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_groups" and "10" in response.json()["message"]


def test_someone_elses_group_is_a_404(org, other_org, employee, employee_client):
    colleague = factories.person(org, "colleague")
    theirs = groups.group_create(owner=colleague, name="private")
    url = f"{API}{theirs.id}/"
    assert employee_client.get(url).status_code == 404
    assert employee_client.patch(url, {"name": "mine now"}, content_type="application/json").status_code == 404
    assert employee_client.delete(url).status_code == 404
    assert employee_client.get(API).json() == []
    theirs.refresh_from_db()
    assert theirs.name == "private"

    # From another organisation, even our slug is a 404; their own slug shows them nothing of ours.
    outsider = signed_in(factories.person(other_org, "spy"))
    assert outsider.get(API).status_code == 404
    assert outsider.get(f"/globex/api/groups/{theirs.id}/").status_code == 404
    # People of another organisation cannot be added: a clear 400, not a leak.
    response = outsider.post(
        "/globex/api/groups/", {"name": "x", "member_ids": [colleague.id]}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "unknown_people"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "invalid"),
        ({"name": ""}, "bad_name"),
        ({"name": "   "}, "bad_name"),
        ({"name": "x" * 51}, "bad_name"),
        ({"name": "x" * 501}, "invalid"),
        ({"name": None}, "invalid"),
        ({"name": ["a"]}, "invalid"),
        ({"name": "ok", "member_ids": "1,2"}, "invalid"),
        ({"name": "ok", "member_ids": ["x"]}, "invalid"),
        ({"name": "ok", "member_ids": [2**70]}, "invalid"),
        ({"name": "ok", "member_ids": [-1]}, "invalid"),
    ],
)
def test_bad_group_input_is_a_clear_400(org, employee_client, payload, code):
    response = employee_client.post(API, payload, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code and response.json()["message"]


def test_huge_or_odd_ids_in_the_path_are_404(org, employee_client):
    assert employee_client.get(f"{API}99999999999999999999999/").status_code == 404
    assert employee_client.get(f"{API}0/").status_code == 404
    assert employee_client.get(f"{API}abc/").status_code == 404


def test_anonymous_and_one_time_password_callers_are_refused(org):
    from django.test import Client

    assert Client().get(API).status_code == 403
    fresh = signed_in(factories.person(org, "fresh", must_change_password=True))
    assert fresh.get(API).status_code == 403


# --- The page -------------------------------------------------------------------------------------------


def test_page_creates_a_group_finds_a_colleague_adds_and_removes(org, employee, employee_client):
    from directory.importer import user_search_text

    sales = factories.department(org, "SALES")
    sato = factories.person(org, "sato", department=sales)
    sato.last_name, sato.first_name, sato.last_name_kana, sato.first_name_kana = "佐藤", "花子", "サトウ", "ハナコ"
    sato.phone_number = "03-5555-1000"
    sato.search_text = user_search_text(sato)
    sato.save()

    response = employee_client.post("/acme/groups/", {"action": "create", "name": "営業"})
    assert response.status_code == 302
    group = PersonalGroup.objects.get(owner=employee)
    assert response["Location"] == f"/acme/groups/#group-{group.id}"

    page = employee_client.get("/acme/groups/", {"group": group.id, "q": "さとう"})  # hiragana finds katakana
    html = page.content.decode()
    assert page.status_code == 200 and "佐藤 花子" in html and f'name="person_id" value="{sato.id}"' in html

    response = employee_client.post(
        "/acme/groups/", {"action": "add", "group_id": group.id, "person_id": sato.id, "q": "さとう"}
    )
    assert response.status_code == 302 and "q=" in response["Location"]
    assert list(group.members.all()) == [sato]
    html = employee_client.get("/acme/groups/").content.decode()
    assert 'href="tel:0355551000"' in html

    employee_client.post("/acme/groups/", {"action": "remove", "group_id": group.id, "person_id": sato.id})
    assert not group.members.exists()
    employee_client.post("/acme/groups/", {"action": "rename", "group_id": group.id, "name": "営業部"})
    group.refresh_from_db()
    assert group.name == "営業部"
    employee_client.post("/acme/groups/", {"action": "delete", "group_id": group.id})
    assert not PersonalGroup.objects.exists()


def test_page_shows_errors_as_400_and_never_touches_others_groups(org, employee, employee_client, other_org):
    groups.group_create(owner=employee, name="家族")
    response = employee_client.post("/acme/groups/", {"action": "create", "name": "家族"})
    assert response.status_code == 400 and 'role="alert"' in response.content.decode()
    mine = PersonalGroup.objects.get(owner=employee)
    response = employee_client.post("/acme/groups/", {"action": "add", "group_id": mine.id, "person_id": "x"})
    assert response.status_code == 400
    outsider = factories.person(other_org)
    response = employee_client.post("/acme/groups/", {"action": "add", "group_id": mine.id, "person_id": outsider.id})
    assert response.status_code == 400 and not mine.members.exists()
    assert employee_client.post("/acme/groups/", {"action": "nonsense", "group_id": mine.id}).status_code == 400

    theirs = groups.group_create(owner=factories.person(org), name="private")
    for action in ("rename", "delete", "add", "remove"):
        response = employee_client.post(
            "/acme/groups/", {"action": action, "group_id": theirs.id, "name": "x", "person_id": employee.id}
        )
        assert response.status_code == 404, action
    assert employee_client.post("/acme/groups/", {"action": "delete", "group_id": "1e9"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "private" and not theirs.members.exists()


def test_page_stops_offering_a_new_group_at_ten(org, employee, employee_client):
    for n in range(10):
        groups.group_create(owner=employee, name=f"g{n}")
    html = employee_client.get("/acme/groups/").content.decode()
    assert 'value="create"' not in html
    assert employee_client.post("/acme/groups/", {"action": "create", "name": "g10"}).status_code == 400
