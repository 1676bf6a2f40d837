"""Personal groups (グループ電話帳): each person's own named groups of colleagues they call often.

Services for the writes, then the reads the page and the REST API share. A group belongs to its owner alone:
`access_group` answers 404 for anyone else's, and members are always active people of the owner's organisation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from directory.models import PersonalGroup, User

NAME_MAX = PersonalGroup._meta.get_field("name").max_length or 50
MEMBER_ORDER = ("last_name_kana", "first_name_kana", "login_id")


# --- Writes ---------------------------------------------------------------------------------------------


@transaction.atomic
def group_create(*, owner: User, name: str, member_ids: Sequence[int] | None = None) -> PersonalGroup:
    """Create a group for `owner`, optionally with members. At most PersonalGroup.MAX_PER_PERSON groups per
    person (checked under a lock on the owner, so two tabs cannot both create the eleventh); names are unique
    per owner."""
    User.objects.select_for_update().filter(pk=owner.pk).first()
    if PersonalGroup.objects.filter(owner=owner).count() >= PersonalGroup.MAX_PER_PERSON:
        raise ApplicationError(
            _("You can keep at most %(max)d groups. Delete one first.") % {"max": PersonalGroup.MAX_PER_PERSON},
            code="too_many_groups",
        )
    group = PersonalGroup(owner=owner, name=_clean_name(owner=owner, name=name))
    _save_named(group)
    if member_ids:
        group_members_set(group=group, member_ids=member_ids)
    return group


@transaction.atomic
def group_rename(*, group: PersonalGroup, name: str) -> PersonalGroup:
    """Give the group a new name, unique among its owner's groups."""
    group.name = _clean_name(owner=group.owner, name=name, group=group)
    _save_named(group)
    return group


@transaction.atomic
def group_delete(*, group: PersonalGroup) -> None:
    """Delete the group. Its members are people of the directory and are not touched."""
    group.delete()


@transaction.atomic
def group_members_set(*, group: PersonalGroup, member_ids: Sequence[int]) -> PersonalGroup:
    """Make exactly these people the group's members (order and repeats don't matter).

    Every id must be an active person of the owner's organisation and there may be at most
    PersonalGroup.MAX_MEMBERS; otherwise ApplicationError, and the members stay as they were."""
    ids = list(dict.fromkeys(member_ids))
    if len(ids) > PersonalGroup.MAX_MEMBERS:
        raise ApplicationError(
            _("A group has at most %(max)d members.") % {"max": PersonalGroup.MAX_MEMBERS}, code="too_many_members"
        )
    found = set(
        User.objects.filter(organization_id=group.owner.organization_id, is_active=True, id__in=ids).values_list(
            "id", flat=True
        )
    )
    unknown = [i for i in ids if i not in found]
    if unknown:
        # The same answer for another organisation's people, deactivated people and ids that never existed.
        raise ApplicationError(
            _("These people are not in your organisation's directory: %(ids)s")
            % {"ids": ", ".join(str(i) for i in unknown[:20])},
            code="unknown_people",
            details={"ids": unknown},
        )
    group.members.set(ids)
    return group


@transaction.atomic
def group_update(
    *, group: PersonalGroup, name: str | None = None, member_ids: Sequence[int] | None = None
) -> PersonalGroup:
    """Rename and/or replace the members in one step: either both change or neither does."""
    if name is not None:
        group_rename(group=group, name=name)
    if member_ids is not None:
        group_members_set(group=group, member_ids=member_ids)
    return group


def _clean_name(*, owner: User, name: str, group: PersonalGroup | None = None) -> str:
    name = " ".join(str(name).split())
    if not name or len(name) > NAME_MAX:
        raise ApplicationError(
            _("A group needs a name of at most %(max)d characters.") % {"max": NAME_MAX}, code="bad_name"
        )
    taken = PersonalGroup.objects.filter(owner=owner, name=name)
    if group is not None and group.pk:
        taken = taken.exclude(pk=group.pk)
    if taken.exists():
        raise ApplicationError(_("You already have a group named “%(name)s”.") % {"name": name}, code="name_taken")
    return name


def _save_named(group: PersonalGroup) -> None:
    try:
        with transaction.atomic():
            group.save()
    except IntegrityError:  # the same name saved by another request a moment ago
        raise ApplicationError(
            _("You already have a group named “%(name)s”.") % {"name": group.name}, code="name_taken"
        ) from None


# --- Reads ----------------------------------------------------------------------------------------------


def access_group(user: User, group_id: int) -> PersonalGroup:
    """The caller's own group with this id; Http404 for anyone else's, so others learn nothing."""
    group = PersonalGroup.objects.filter(owner=user, id=group_id).select_related("owner__organization").first()
    if group is None:
        raise Http404
    return group


def _active_members() -> Prefetch[str, QuerySet[User], str]:
    members = User.objects.filter(is_active=True).select_related("department").order_by(*MEMBER_ORDER)
    return Prefetch("members", queryset=members, to_attr="active_members")


def group_list(*, owner: User) -> list[PersonalGroup]:
    """The owner's groups by name, each with `active_members` (deactivated colleagues are hidden, and
    dropped when the group's members are next set). Two queries."""
    return list(
        PersonalGroup.objects.filter(owner=owner)
        .select_related("owner__organization")
        .prefetch_related(_active_members())
    )


def group_get(*, owner: User, group_id: int) -> PersonalGroup:
    """One of the owner's groups with `active_members`; Http404 for anyone else's."""
    group = (
        PersonalGroup.objects.filter(owner=owner, id=group_id)
        .select_related("owner__organization")
        .prefetch_related(_active_members())
        .first()
    )
    if group is None:
        raise Http404
    return group


def group_members(group: PersonalGroup) -> list[User]:
    """The group's active members, from the prefetch of `group_list`/`group_get` when there was one."""
    prefetched: list[User] | None = getattr(group, "active_members", None)
    if prefetched is not None:
        return prefetched
    return list(group.members.filter(is_active=True).select_related("department").order_by(*MEMBER_ORDER))


# --- Phone links ----------------------------------------------------------------------------------------

_UNSAFE_SCHEME = re.compile(r"^\s*(javascript|data|vbscript|file):", re.IGNORECASE)


@dataclass(frozen=True)
class PhoneLink:
    kind: str  # "phone", "mobile" or "extension"
    number: str
    href: str


def phone_href(*, scheme: str, number: str) -> str:
    """A link that dials `number` with the organisation's phone URL scheme ("tel:" or e.g. a softphone's
    "com050voipbiz://keypad?tel="). Only digits and a leading + are kept; an unsafe scheme falls back to tel:."""
    digits = re.sub(r"[^0-9]", "", number)
    if number.strip().startswith("+"):
        digits = f"+{digits}"
    if not scheme or _UNSAFE_SCHEME.match(scheme):
        scheme = "tel:"
    return f"{scheme}{digits}"


def phone_links(*, person: User, scheme: str) -> list[PhoneLink]:
    numbers = (
        ("phone", person.phone_number),
        ("mobile", person.mobile_phone_number),
        ("extension", person.extension_number),
    )
    return [
        PhoneLink(kind=kind, number=number, href=phone_href(scheme=scheme, number=number))
        for kind, number in numbers
        if number and re.search(r"[0-9]", number)
    ]
