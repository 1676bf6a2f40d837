"""Automatic dispatch (自動一斉送信) pages for crisis managers under /<slug>/safety/auto/: the organisation's rules
and the drill-mode switch, the rule form (new, change, delete), verification (検証: who a report would reach),
replay (再生: what today's rules would have done with real JMA messages) and the audit log (記録).

Server-rendered forms that POST to their own page and call `safety.autodispatch`; they work without scripts
(frontend/static/frontend/auto.js only adds filters and pickers). A change redirects with a message (PRG); a bad
input re-renders the form with the service's ApplicationError message and changes nothing. Verify and replay
send and store nothing. Only people who manage incidents (crisis managers, safety administrators) see these
pages; anyone else gets the 403 page, and another organisation's rule the 404 page."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from config.errors import ApplicationError
from directory.models import Organization, User
from directory.regions import PREFECTURES
from frontend.safety_views import _departments, _manager
from frontend.views import _page, org_page
from safety import autodispatch
from safety.jma.codes import EARTHQUAKE_AREAS, INTENSITY_ORDER, MUNICIPALITIES, SPECIAL_WARNING_KINDS, TSUNAMI_AREAS
from safety.jma.decide import Outcome
from safety.jma.parser import JmaParseError
from safety.models import DispatchRule, Incident, JmaDecision, JmaDocument, MessageTemplate, RuleTarget
from safety.questions import default_questions

LOG_PAGE = 50  # decisions per page of the audit log
PEOPLE_SHOWN = 200  # people listed by verify (the count is always the full number)
NAMES_SHOWN = 20  # people named per replayed document
DOCUMENTS_SHOWN = 200  # stored documents offered for replay
MAX_REPLAY_FILES = 50
HAZARDS = ("earthquake", "tsunami", "special_warning")
DOCUMENT_KINDS = ("earthquake", "tsunami", "weather")


# --- Words ----------------------------------------------------------------------------------------------------


def _language() -> str:
    return "en" if (translation.get_language() or settings.LANGUAGE_CODE).startswith("en") else "ja"


def _regions() -> list[tuple[str, list[str]]]:
    """The 47 prefectures by region, as people pick them on a map of Japan."""
    codes = list(PREFECTURES)
    return [
        (_("Hokkaido and Tohoku"), codes[0:7]),
        (_("Kanto"), codes[7:14]),
        (_("Chubu"), codes[14:23]),
        (_("Kinki"), codes[23:30]),
        (_("Chugoku"), codes[30:35]),
        (_("Shikoku"), codes[35:39]),
        (_("Kyushu and Okinawa"), codes[39:47]),
    ]


def _prefecture(code: str) -> str:
    prefecture = PREFECTURES.get(code)
    if prefecture is None:
        return code
    return prefecture.en if _language() == "en" else prefecture.ja


def _intensity(level: str) -> str:
    """震度 classes as JMA writes them: 5弱 / 5強 in Japanese, 5 Lower / 5 Upper in English."""
    names = {"5-": _("5 Lower"), "5+": _("5 Upper"), "6-": _("6 Lower"), "6+": _("6 Upper")}
    return names.get(level, level)


def _tsunami_level(level: str) -> str:
    return {
        "advisory": _("Tsunami advisory"),
        "warning": _("Tsunami warning"),
        "major": _("Major tsunami warning"),
    }.get(level, level)


def _special_kind(code: str) -> str:
    return {
        "32": _("Blizzard special warning"),
        "33": _("Heavy rain special warning"),
        "35": _("Storm special warning"),
        "36": _("Heavy snow special warning"),
        "37": _("High waves special warning"),
        "38": _("Storm surge special warning"),
        "39": _("Landslide special warning"),
    }.get(code, SPECIAL_WARNING_KINDS.get(code, code))


def _hazard(value: str | None) -> str:
    return {
        "earthquake": _("Earthquake"),
        "tsunami": _("Tsunami"),
        "special_warning": _("Special warning"),
    }.get(value or "", value or "—")


def _decision(value: str) -> str:
    return {
        "dispatch": _("Send"),
        "update": _("Send to more people"),
        "withdraw": _("Withdraw"),
        "ignore": _("Not sent"),
    }.get(value, value)


def _reason(code: str) -> str:
    """The decision's reason in a word or two, in the reader's language; the full reason is shown beside it."""
    return {
        "test": _("Test message (試験): never sent"),
        "drill": _("Drill message (訓練) while drill mode is off"),
        "status": _("Unknown message status"),
        "not_trigger": _("Not a report that triggers a dispatch"),
        "no_rule": _("No enabled rule for this hazard"),
        "duplicate": _("Duplicate of a report already applied"),
        "out_of_date": _("Older than a version already applied"),
        "no_intensity": _("No intensity reported"),
        "below_threshold": _("Below every rule's threshold"),
        "suppressed": _("Within the suppression window of an earlier dispatch"),
        "nobody_there": _("Nobody based in the places hit"),
        "already_notified": _("Everyone it reaches was already notified"),
        "continuing": _("Continuing (継続): not sent again"),
        "lifted": _("Lifted (解除)"),
        "cancel_unknown": _("Cancels a report that was never applied"),
        "cancel_nothing": _("Cancellation with nothing to withdraw"),
        "cancelled": _("Its cancellation (取消) arrived first: never sent"),
        "dispatch": _("A new safety check"),
        "update": _("More people in the same safety check"),
        "withdraw": _("Cancelled (取消): people are told it is withdrawn"),
    }.get(code, code)


def _minutes(value: int) -> str:
    return ngettext("%(n)d minute", "%(n)d minutes", value) % {"n": value}


def _names(values: Sequence[str], limit: int = 8) -> str:
    if len(values) <= limit:
        return ", ".join(values) if _language() == "en" else "、".join(values)
    shown = (", " if _language() == "en" else "、").join(values[:limit])
    return _("%(names)s and %(n)d more") % {"names": shown, "n": len(values) - limit}


# --- Places ----------------------------------------------------------------------------------------------------


def _area_table(hazard: str) -> Mapping[str, str]:
    """The finer places of a hazard, code -> name: 細分区域, 津波予報区 or municipalities."""
    if hazard == "earthquake":
        return {code: name for code, (name, _pref) in EARTHQUAKE_AREAS.items()}
    if hazard == "tsunami":
        return TSUNAMI_AREAS
    return MUNICIPALITIES


def _area_choices() -> dict[str, list[list[str]]]:
    """For the script's area pickers: [code, name] per hazard."""
    return {hazard: [[code, name] for code, name in _area_table(hazard).items()] for hazard in HAZARDS}


_TOKEN = re.compile(r"[\s,、，]+")
_CODE = re.compile(r"[0-9]+")


def _parse_areas(text: str, hazard: str) -> list[str]:
    """Codes typed or picked into the areas box, one place per line ("360 石川県能登" or just "360"); a name
    alone is looked up among the hazard's places. ApplicationError for a word that is neither."""
    table = _area_table(hazard if hazard in HAZARDS else "earthquake")
    by_name = {name: code for code, name in table.items()}
    codes: list[str] = []
    for line in text.splitlines():
        tokens = [t for t in _TOKEN.split(line.strip()) if t]
        if not tokens:
            continue
        if _CODE.fullmatch(tokens[0]):
            codes.extend(t for t in tokens if _CODE.fullmatch(t))  # "360 石川県能登": the name is a label
            continue
        for token in tokens:
            if token in by_name:
                codes.append(by_name[token])
            else:
                raise ApplicationError(_("Unknown area: %(codes)s") % {"codes": token[:50]}, code="bad_rule")
    return list(dict.fromkeys(codes))


def _areas_text(codes: Iterable[str], hazard: str) -> str:
    table = _area_table(hazard)
    return "\n".join(f"{code} {table.get(code, '')}".strip() for code in codes)


def _areas_shown(codes: Iterable[str], hazard: str) -> list[dict[str, str]]:
    table = _area_table(hazard)
    return [{"code": c, "name": table.get(c, "?")} for c in codes]


# --- Rules as people read them ----------------------------------------------------------------------------------


def _threshold(rule: DispatchRule) -> str:
    if rule.hazard == "earthquake":
        return _("Intensity %(level)s or more") % {"level": _intensity(rule.min_intensity)}
    if rule.hazard == "tsunami":
        return _("%(level)s or higher") % {"level": _tsunami_level(rule.tsunami_level)}
    if not rule.special_kinds:
        return _("Every kind of special warning")
    return _names([_special_kind(k) for k in rule.special_kinds], limit=7)


def _where(rule: DispatchRule) -> str:
    parts = [_prefecture(c) for c in rule.prefectures]
    table = _area_table(rule.hazard)
    parts += [table.get(c, c) for c in rule.areas]
    return _names(parts) if parts else _("Anywhere in Japan")


def _who(rule: DispatchRule, departments: Mapping[int, str], people: Mapping[int, str]) -> str:
    if rule.target_mode == RuleTarget.BASED:
        return _("People based in the places hit")
    names = [departments.get(int(d), "?") for d in rule.department_ids]
    names += [people.get(int(p), "?") for p in rule.person_ids]
    return _("Chosen: %(names)s") % {"names": _names(names)}


def _rule_rows(organization: Organization) -> list[dict[str, Any]]:
    rules = list(DispatchRule.objects.filter(organization=organization).select_related("template"))
    department_ids = {int(d) for r in rules for d in r.department_ids}
    person_ids = {int(p) for r in rules for p in r.person_ids}
    departments = dict(organization.departments.filter(id__in=department_ids).values_list("id", "name"))
    people = {u.id: u.display_name for u in User.objects.filter(organization=organization, id__in=person_ids)}
    rows = []
    for rule in rules:
        rows.append(
            {
                "rule": rule,
                "hazard": _hazard(rule.hazard),
                "where": _where(rule),
                "threshold": _threshold(rule),
                "who": _who(rule, departments, people),
                "hold": _minutes(rule.hold_minutes) if rule.hold_minutes else _("At once"),
                "suppress": _minutes(rule.suppress_minutes) if rule.suppress_minutes else _("None"),
                "questions": (
                    _("The default questions")
                    if rule.questions is None
                    else _("No questions")
                    if not rule.questions
                    else ngettext("%(n)d question", "%(n)d questions", len(rule.questions)) % {"n": len(rule.questions)}
                ),
                "template": rule.template.name if rule.template else _("The built-in message"),
            }
        )
    return rows


def _nav(organization: Organization) -> list[dict[str, str]]:
    base = f"/{organization.slug}/safety/auto/"
    return [
        {"name": "safety-auto", "url": base, "label": _("Rules")},
        {"name": "safety-auto-verify", "url": f"{base}verify/", "label": _("Verify")},
        {"name": "safety-auto-replay", "url": f"{base}replay/", "label": _("Replay")},
        {"name": "safety-auto-log", "url": f"{base}log/", "label": _("Log")},
    ]


def _auto_page(request: HttpRequest, template: str, organization: Organization, **context: Any) -> HttpResponse:
    match = request.resolver_match
    here = match.url_name if match else ""
    here = "safety-auto" if (here or "").startswith("safety-auto-rule") else here
    return _page(request, template, organization, auto_nav=_nav(organization), auto_here=here, **context)


# --- The rules and drill mode ---------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def rules_page(request: HttpRequest, organization: Organization) -> HttpResponseBase:
    """The organisation's rules, the drill-mode switch, and the way to verification, replay and the log."""
    person = _manager(request)
    if request.method == "POST":
        drill_mode = request.POST.get("drill_mode") == "on"
        autodispatch.drill_mode_set(organization=organization, actor=person, drill_mode=drill_mode)
        messages.success(
            request,
            _("Drill mode is on: drill messages (訓練) are sent as drills.")
            if drill_mode
            else _("Drill mode is off: drill messages (訓練) are not sent."),
        )
        return redirect("safety-auto", slug=organization.slug)
    settings_row = autodispatch.safety_settings(organization)
    return _auto_page(
        request,
        "frontend/safety/auto_rules.html",
        organization,
        rules=_rule_rows(organization),
        drill_mode=settings_row.drill_mode,
    )


# --- The rule form ----------------------------------------------------------------------------------------


def _form_from_rule(rule: DispatchRule | None) -> dict[str, Any]:
    values: dict[str, Any] = dict(autodispatch.RULE_DEFAULTS)
    values["hazard"] = "earthquake"
    if rule is not None:
        values.update({name: getattr(rule, name) for name in autodispatch.RULE_FIELDS if name != "template_id"})
        values["template_id"] = rule.template_id
    hazard = values["hazard"]
    people = User.objects.filter(organization_id=rule.organization_id, id__in=values["person_ids"]) if rule else []
    return {
        "name": values["name"],
        "hazard": hazard,
        "enabled": values["enabled"],
        "prefectures": set(values["prefectures"]),
        "areas_text": _areas_text(values["areas"], hazard),
        "min_intensity": values["min_intensity"],
        "tsunami_level": values["tsunami_level"],
        "special_kinds": set(values["special_kinds"]),
        "target_mode": values["target_mode"],
        "department_ids": {str(d) for d in values["department_ids"]},
        "people_text": "\n".join(sorted(p.login_id for p in people)),
        "questions": "default" if values["questions"] is None else "custom" if values["questions"] else "none",
        "template_id": "" if values["template_id"] is None else str(values["template_id"]),
        "hold_minutes": str(values["hold_minutes"]),
        "suppress_minutes": str(values["suppress_minutes"]),
    }


def _form_from_post(request: HttpRequest) -> dict[str, Any]:
    post = request.POST
    return {
        "name": post.get("name", "")[:200],
        "hazard": post.get("hazard", ""),
        "enabled": post.get("enabled") == "on",
        "prefectures": set(post.getlist("prefectures")),
        "areas_text": post.get("areas", "")[:50_000],
        "min_intensity": post.get("min_intensity", ""),
        "tsunami_level": post.get("tsunami_level", ""),
        "special_kinds": set(post.getlist("special_kinds")),
        "target_mode": post.get("target_mode", ""),
        "department_ids": set(post.getlist("department_ids")),
        "people_text": post.get("people", "")[:50_000],
        "questions": post.get("questions", "default"),
        "template_id": post.get("template_id", ""),
        "hold_minutes": post.get("hold_minutes", "").strip(),
        "suppress_minutes": post.get("suppress_minutes", "").strip(),
    }


def _number(raw: str) -> Any:
    """A whole number when it is one; else the text, for the service to refuse with its own message."""
    return int(raw) if re.fullmatch(r"[0-9]{1,6}", raw) else raw


def _fields(organization: Organization, form: Mapping[str, Any], rule: DispatchRule | None) -> dict[str, Any]:
    """The form's values as the service's rule fields (ApplicationError for what only the form can tell)."""
    department_ids: list[int] = []
    for raw in form["department_ids"]:
        if not re.fullmatch(r"[0-9]{1,12}", raw):
            raise ApplicationError(_("Some of the departments are not in this organisation."), code="bad_rule")
        department_ids.append(int(raw))
    logins = [line.split()[0] for line in form["people_text"].splitlines() if line.split()]
    found = dict(User.objects.filter(organization=organization, login_id__in=logins).values_list("login_id", "id"))
    unknown = [login for login in logins if login not in found]
    if unknown:
        raise ApplicationError(_("Unknown login ID: %(ids)s") % {"ids": ", ".join(unknown[:5])[:200]}, code="bad_rule")
    fields: dict[str, Any] = {
        "name": form["name"],
        "hazard": form["hazard"],
        "enabled": form["enabled"],
        "prefectures": sorted(form["prefectures"]),
        "areas": _parse_areas(form["areas_text"], form["hazard"]),
        "min_intensity": form["min_intensity"],
        "tsunami_level": form["tsunami_level"],
        "special_kinds": sorted(form["special_kinds"]),
        "target_mode": form["target_mode"],
        "department_ids": department_ids,
        "person_ids": sorted(set(found.values())),
        "template_id": _number(form["template_id"]) if form["template_id"] else None,
        "hold_minutes": _number(form["hold_minutes"]),
        "suppress_minutes": _number(form["suppress_minutes"]),
    }
    if form["questions"] == "none":
        fields["questions"] = []
    elif form["questions"] != "custom" or rule is None or not rule.questions:
        fields["questions"] = None  # the default form
    return fields


def _form_context(organization: Organization, form: Mapping[str, Any], rule: DispatchRule | None) -> dict[str, Any]:
    regions = [
        {
            "name": name,
            "prefectures": [
                {"code": code, "name": _prefecture(code), "checked": code in form["prefectures"]} for code in codes
            ],
        }
        for name, codes in _regions()
    ]
    hazard = form["hazard"] if form["hazard"] in HAZARDS else "earthquake"
    shown_codes: list[str] = []
    with contextlib.suppress(ApplicationError):
        shown_codes = _parse_areas(form["areas_text"], hazard)
    departments = _departments(organization, None)
    for d in departments:
        d["checked"] = str(d["id"]) in form["department_ids"]
        d["indent"] = "\u3000" * d["depth"]
    logins = [line.split()[0] for line in form["people_text"].splitlines() if line.split()]
    chosen = [
        {"login_id": u.login_id, "name": u.display_name, "department": u.department.name if u.department else ""}
        for u in User.objects.filter(organization=organization, login_id__in=logins).select_related("department")
    ]
    return {
        "form": form,
        "rule": rule,
        "hazards": [{"value": h, "label": _hazard(h)} for h in HAZARDS],
        "regions": regions,
        "areas_shown": _areas_shown(shown_codes, hazard),
        "intensities": [
            {"value": v, "label": _("Intensity %(level)s or more") % {"level": _intensity(v)}} for v in INTENSITY_ORDER
        ],
        "tsunami_levels": [
            {"value": v, "label": _("%(level)s or higher") % {"level": _tsunami_level(v)}}
            for v in ("advisory", "warning", "major")
        ],
        "special_kinds": [
            {"value": k, "label": _special_kind(k), "checked": k in form["special_kinds"]}
            for k in SPECIAL_WARNING_KINDS
        ],
        "departments": departments,
        "chosen_people": chosen,
        "templates": list(MessageTemplate.objects.filter(organization=organization).order_by("name", "id")),
        "default_questions": default_questions(),
        "custom_questions": rule.questions if rule is not None and rule.questions else None,
        "default_messages": {h: autodispatch.DEFAULT_MESSAGES[h] for h in HAZARDS},
        "max_minutes": autodispatch.MAX_HOLD_MINUTES,
        "page_data": {"areas": _area_choices(), "hazard": hazard},
        "texts": {
            "add": _("Add"),
            "added": _("Added"),
            "nobody": _("Nobody found."),
            "no_area": _("No place matches."),
            "searching": _("Searching…"),
            "search_failed": _("The search failed. Check the connection and try again."),
            "no_safety_id": _("no safety-confirmation ID"),
        },
    }


def _rule_form(
    request: HttpRequest,
    organization: Organization,
    rule: DispatchRule | None,
    form: Mapping[str, Any],
    *,
    error: str = "",
) -> HttpResponse:
    return _auto_page(
        request,
        "frontend/safety/auto_rule_form.html",
        organization,
        error=error,
        status=400 if error else 200,
        **_form_context(organization, form, rule),
    )


def _rule(organization: Organization, rule_id: int) -> DispatchRule:
    rule = DispatchRule.objects.filter(organization=organization, id=rule_id).first()
    if rule is None:
        raise Http404
    return rule


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def rule_new_page(request: HttpRequest, organization: Organization) -> HttpResponseBase:
    person = _manager(request)
    if request.method != "POST":
        return _rule_form(request, organization, None, _form_from_rule(None))
    form = _form_from_post(request)
    try:
        rule = autodispatch.rule_create(organization=organization, actor=person, **_fields(organization, form, None))
    except ApplicationError as exc:
        return _rule_form(request, organization, None, form, error=exc.message)
    messages.success(request, _("The rule “%(name)s” has been added.") % {"name": rule.name})
    return redirect("safety-auto", slug=organization.slug)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def rule_page(request: HttpRequest, organization: Organization, rule_id: int) -> HttpResponseBase:
    person = _manager(request)
    rule = _rule(organization, rule_id)
    if request.method != "POST":
        return _rule_form(request, organization, rule, _form_from_rule(rule))
    form = _form_from_post(request)
    try:
        rule = autodispatch.rule_update(rule=rule, actor=person, **_fields(organization, form, rule))
    except ApplicationError as exc:
        return _rule_form(request, organization, rule, form, error=exc.message)
    messages.success(request, _("The rule “%(name)s” has been saved.") % {"name": rule.name})
    return redirect("safety-auto", slug=organization.slug)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def rule_delete_page(request: HttpRequest, organization: Organization, rule_id: int) -> HttpResponseBase:
    """Ask first (a page of its own, so it works without scripts), then delete."""
    person = _manager(request)
    rule = _rule(organization, rule_id)
    if request.method == "POST":
        name = rule.name
        autodispatch.rule_delete(rule=rule, actor=person)
        messages.success(request, _("The rule “%(name)s” has been deleted.") % {"name": name})
        return redirect("safety-auto", slug=organization.slug)
    return _auto_page(
        request, "frontend/safety/auto_rule_delete.html", organization, rule=rule, row=_rule_rows_one(rule)
    )


def _rule_rows_one(rule: DispatchRule) -> dict[str, Any]:
    return next(r for r in _rule_rows(rule.organization) if r["rule"].id == rule.id)


# --- Verify -------------------------------------------------------------------------------------------------


def _people_rows(organization: Organization, ids: Sequence[int], limit: int) -> list[dict[str, str]]:
    people = (
        User.objects.filter(organization=organization, id__in=list(ids))
        .select_related("department")
        .order_by("region_code", "department__code", "last_name_kana", "first_name_kana", "login_id")[:limit]
    )
    return [
        {
            "login_id": p.login_id,
            "name": p.display_name,
            "department": p.department.name if p.department else "",
            "region": _prefecture(p.region_code) if p.region_code else "",
            "region_code": p.region_code or "",
        }
        for p in people
    ]


def _rule_names(organization: Organization, ids: Iterable[int]) -> list[dict[str, Any]]:
    ids = list(ids)
    names = dict(DispatchRule.objects.filter(organization=organization, id__in=ids).values_list("id", "name"))
    return [{"id": i, "name": names.get(i, _("Deleted rule #%(id)s") % {"id": i}), "exists": i in names} for i in ids]


def _verify_areas(hazard: str) -> list[dict[str, Any]]:
    """What verify can ask about, per hazard: every prefecture, then the finer places."""
    groups: list[dict[str, Any]] = [
        {"label": _("Prefectures"), "options": [{"value": c, "label": _prefecture(c)} for c in PREFECTURES]}
    ]
    if hazard == "earthquake":
        by_pref: dict[str, list[dict[str, str]]] = {}
        for code, (name, pref) in EARTHQUAKE_AREAS.items():
            by_pref.setdefault(pref, []).append({"value": code, "label": name})
        groups += [
            {"label": _("Areas in %(prefecture)s") % {"prefecture": _prefecture(p)}, "options": options}
            for p, options in by_pref.items()
        ]
    elif hazard == "tsunami":
        groups.append(
            {"label": _("Coasts (津波予報区)"), "options": [{"value": c, "label": n} for c, n in TSUNAMI_AREAS.items()]}
        )
    return groups


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def verify_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Who a report of a hazard at a level in a place would reach today, and which rules fire. Nothing is sent."""
    _manager(request)
    post = request.POST if request.method == "POST" else None
    hazard = (post.get("hazard") if post else None) or "earthquake"
    form = {
        "hazard": hazard,
        "area_earthquake": (post.get("area_earthquake") if post else None) or "13",
        "area_tsunami": (post.get("area_tsunami") if post else None) or "13",
        "pref_special_warning": (post.get("pref_special_warning") if post else None) or "13",
        "city_special_warning": (post.get("city_special_warning", "") if post else "").strip()[:100],
        "level_earthquake": (post.get("level_earthquake") if post else None) or "6-",
        "level_tsunami": (post.get("level_tsunami") if post else None) or "warning",
        "level_special_warning": (post.get("level_special_warning") if post else None) or "33",
    }
    context: dict[str, Any] = {
        "form": form,
        "hazards": [{"value": h, "label": _hazard(h)} for h in HAZARDS],
        "areas": {h: _verify_areas(h) for h in ("earthquake", "tsunami")},
        "prefectures": [{"value": c, "label": _prefecture(c)} for c in PREFECTURES],
        "intensities": [{"value": v, "label": _level_name("earthquake", v)} for v in INTENSITY_ORDER],
        "tsunami_levels": [{"value": v, "label": _tsunami_level(v)} for v in ("advisory", "warning", "major")],
        "special_kinds": [{"value": k, "label": _special_kind(k)} for k in SPECIAL_WARNING_KINDS],
        "page_data": {"areas": {"special_warning": _area_choices()["special_warning"]}, "hazard": hazard},
        "texts": {"no_area": _("No place matches."), "add": _("Choose")},
        "status": 200,
    }
    if post is not None:
        try:
            if hazard not in HAZARDS:
                raise ApplicationError(_("Choose earthquake, tsunami or special warning."), code="bad_hazard")
            area, level = _verify_area(form, hazard), form[f"level_{hazard}"]
            try:
                outcome = autodispatch.verify(organization, hazard=hazard, area=area, level=level)  # type: ignore[arg-type]
            except ValueError:
                if hazard == "tsunami" and area in PREFECTURES:
                    raise ApplicationError(
                        _("%(place)s has no coast (津波予報区).") % {"place": _prefecture(area)}, code="bad_verify"
                    ) from None
                raise ApplicationError(_("Choose a place and a level of this hazard."), code="bad_verify") from None
        except ApplicationError as exc:
            context.update(error=exc.message, status=400)
        else:
            context["result"] = _verify_result(organization, outcome, hazard=hazard, area=area, level=level)
    return _auto_page(request, "frontend/safety/auto_verify.html", organization, **context)


def _verify_area(form: Mapping[str, str], hazard: str) -> str:
    """The place asked about: the chosen prefecture or finer place; for a special warning, a municipality typed
    by code or name narrows the prefecture."""
    if hazard != "special_warning":
        return form[f"area_{hazard}"]
    city = form["city_special_warning"]
    if not city:
        return form["pref_special_warning"]
    code = city.split()[0]
    if code in MUNICIPALITIES:
        return code
    by_name = {name: c for c, name in MUNICIPALITIES.items()}
    if city in by_name:
        return by_name[city]
    raise ApplicationError(_("Unknown area: %(codes)s") % {"codes": city[:50]}, code="bad_verify")


def _place_name(hazard: str, area: str) -> str:
    if area in PREFECTURES:
        return _prefecture(area)
    return _area_table(hazard).get(area, area)


def _level_name(hazard: str, level: str) -> str:
    if hazard == "earthquake":
        return _("Intensity %(level)s") % {"level": _intensity(level)}
    if hazard == "tsunami":
        return _tsunami_level(level)
    return _special_kind(level)


def _verify_result(
    organization: Organization, outcome: Outcome, *, hazard: str, area: str, level: str
) -> dict[str, Any]:
    return {
        "asked": _("%(hazard)s, %(level)s in %(place)s")
        % {"hazard": _hazard(hazard), "level": _level_name(hazard, level), "place": _place_name(hazard, area)},
        "decision": outcome.decision,
        "decision_label": _decision(outcome.decision),
        "reason_label": _reason(outcome.reason_code),
        "reason": outcome.reason,
        "rules": _rule_names(organization, outcome.rule_ids),
        "count": len(outcome.new_ids),
        "people": _people_rows(organization, outcome.new_ids, PEOPLE_SHOWN),
    }


# --- Replay -----------------------------------------------------------------------------------------------


def _documents(kind: str) -> list[JmaDocument]:
    query = JmaDocument.objects.defer("raw", "summary")
    if kind in DOCUMENT_KINDS:
        query = query.filter(kind=kind)
    return list(query.order_by("-received_at", "-id")[:DOCUMENTS_SHOWN])


def _document_label(document: JmaDocument) -> str:
    when = timezone.localtime(document.report_datetime or document.received_at).strftime("%Y-%m-%d %H:%M")
    return f"{when} {document.title}"


def _replay_inputs(request: HttpRequest) -> list[tuple[str, bytes]]:
    """The uploaded files in the order chosen, then the chosen stored documents oldest first (as JMA sent them)."""
    files = request.FILES.getlist("files")
    ids = [int(i) for i in request.POST.getlist("document_ids") if re.fullmatch(r"[0-9]{1,12}", i)]
    if not files and not ids:
        raise ApplicationError(_("Choose at least one JMA XML file or stored report."), code="no_documents")
    if len(files) + len(ids) > MAX_REPLAY_FILES:
        raise ApplicationError(
            _("Replay at most %(n)d reports at a time.") % {"n": MAX_REPLAY_FILES}, code="too_many_documents"
        )
    inputs: list[tuple[str, bytes]] = []
    limit = settings.JMA_MAX_DOCUMENT_BYTES
    for upload in files:
        if upload.size is not None and upload.size > limit:
            raise ApplicationError(
                _("%(name)s is larger than %(mb)d MB.") % {"name": upload.name, "mb": limit // (1024 * 1024)},
                code="too_large",
            )
        inputs.append((str(upload.name), upload.read()))
    documents = list(JmaDocument.objects.filter(id__in=ids).order_by("report_datetime", "received_at", "id"))
    if len(documents) != len(set(ids)):
        raise ApplicationError(_("Some of the chosen reports no longer exist."), code="no_documents")
    inputs += [(_document_label(d), bytes(d.raw)) for d in documents]
    return inputs


def _replay_rows(organization: Organization, lines: Sequence[tuple[dict[str, Any], Outcome]]) -> list[dict[str, Any]]:
    ids = {i for _line, o in lines for i in (*o.new_ids, *o.withdrawn_ids)}
    names = {u.id: u.display_name for u in User.objects.filter(organization=organization, id__in=ids)}
    rows = []
    for line, outcome in lines:
        new = [names.get(i, "?") for i in outcome.new_ids]
        gone = [names.get(i, "?") for i in outcome.withdrawn_ids]
        rows.append(
            {
                "file": line["file"],
                "decision": outcome.decision,
                "decision_label": _decision(outcome.decision),
                "hazard": _hazard(outcome.hazard),
                "drill": outcome.drill,
                "rules": _rule_names(organization, outcome.rule_ids),
                "new_count": len(new),
                "new_names": new[:NAMES_SHOWN],
                "withdrawn_count": len(gone),
                "withdrawn_names": gone[:NAMES_SHOWN],
                "reason_label": _reason(outcome.reason_code),
                "reason": outcome.reason,
            }
        )
    return rows


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def replay_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """What today's rules and directory would have done with real JMA messages. Nothing is sent or stored."""
    _manager(request)
    source = request.POST if request.method == "POST" else request.GET
    kind = source.get("kind", "")
    drill = request.POST.get("drill_mode", "") if request.method == "POST" else ""
    chosen = set(request.POST.getlist("document_ids"))
    context: dict[str, Any] = {
        "kind": kind if kind in DOCUMENT_KINDS else "",
        "kinds": [
            {"value": "", "label": _("All")},
            {"value": "earthquake", "label": _("Earthquake")},
            {"value": "tsunami", "label": _("Tsunami")},
            {"value": "weather", "label": _("Weather warnings")},
        ],
        "drill": drill if drill in ("on", "off") else "",
        "drill_mode": autodispatch.safety_settings(organization).drill_mode,
        "documents": [
            {"document": d, "label": _document_label(d), "checked": str(d.id) in chosen} for d in _documents(kind)
        ],
        "status": 200,
    }
    if request.method == "POST":
        try:
            inputs = _replay_inputs(request)
            lines = autodispatch.replay(
                organization, inputs, drill_mode={"on": True, "off": False}.get(context["drill"])
            )
        except ApplicationError as exc:
            context.update(error=exc.message, status=400)
        except JmaParseError as exc:
            context.update(error=_("Not a JMA message we can read: %(why)s") % {"why": str(exc)[:300]}, status=400)
        else:
            context["results"] = _replay_rows(organization, lines)
    return _auto_page(request, "frontend/safety/auto_replay.html", organization, **context)


# --- The audit log ----------------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def log_page(request: HttpRequest, organization: Organization) -> HttpResponseBase:
    """Every decision JMA reports made for this organisation, newest first, with its reason. A dispatch still
    on hold can be stopped (the report looks false) or sent at once (POST cancel / send_now)."""
    person = _manager(request)
    if request.method == "POST":
        raw_id = request.POST.get("decision", "")
        action = request.POST.get("action", "")
        try:
            if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 18 or action not in ("cancel", "send_now"):
                raise ApplicationError(_("Choose a dispatch on hold."), code="bad_decision")
            if action == "cancel":
                autodispatch.decision_cancel(organization=organization, decision_id=int(raw_id), actor=person)
                messages.success(request, _("The dispatch on hold was stopped: nobody is sent it."))
            else:
                autodispatch.decision_send_now(organization=organization, decision_id=int(raw_id), actor=person)
                messages.success(request, _("The dispatch on hold was sent now."))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("safety-auto-log", slug=organization.slug)
    paginator = Paginator(
        JmaDecision.objects.filter(organization=organization)
        .select_related("document")
        .defer("document__raw", "document__summary", "actions")
        .order_by("-decided_at", "-id"),
        LOG_PAGE,
    )
    page = paginator.get_page(request.GET.get("page"))
    decisions = list(page.object_list)
    rule_ids = {i for d in decisions for i in d.rule_ids}
    names = dict(DispatchRule.objects.filter(organization=organization, id__in=rule_ids).values_list("id", "name"))
    incident_ids = {i for d in decisions for i in d.incident_ids}
    titles = {
        i.id: i.title_in(_language())
        for i in Incident.objects.filter(organization=organization, id__in=incident_ids).only("id", "title", "titles")
    }
    now = timezone.now()
    rows = [
        {
            "decision": d,
            "document": d.document,
            "drill_document": d.document.status != "通常",
            "decision_label": _decision(d.decision),
            "hazard": _hazard(d.hazard) if d.hazard else "",
            "reason_label": _reason(d.reason_code),
            "rules": [names.get(i, _("Deleted rule #%(id)s") % {"id": i}) for i in d.rule_ids],
            "new_count": len(d.new_person_ids),
            "withdrawn_count": len(d.withdrawn_person_ids),
            "incidents": [
                {"id": i, "url": f"/{organization.slug}/safety/incidents/{i}/", "title": titles.get(i, f"#{i}")}
                for i in d.incident_ids
            ],
            "waiting": d.due_at is not None and d.executed_at is None,
            "overdue": d.due_at is not None and d.executed_at is None and d.due_at < now,
        }
        for d in decisions
    ]
    return _auto_page(request, "frontend/safety/auto_log.html", organization, rows=rows, page=page)
