"""Automatic dispatch from JMA reports: the I/O around the pure decision in `safety.jma.decide`.

A stored JMA document is decided once per organisation (`jma_document_decide`, unique per organisation and
document, under the organisation's settings row lock so its decisions run in order). Every decision is an
audit row (`JmaDecision`) with its reason. A decision with people to notify is executed when its hold is over
(`decision_execute`): at once when the hold is 0, else by the `safety_scan` beat, which reads the due rows from
the database; nothing waits in the broker. A document a crash left undecided is decided by the same scan.

`replay` and `verify` run the same decision on the organisation's current rules and directory with an empty
state and store nothing: what the replay and verify pages and `manage.py jma_replay` show.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from consumers.publisher import publish_on_commit, push_request
from directory.events import user_group
from directory.models import Organization, User
from directory.regions import PREFECTURES
from directory.selectors import department_subtrees
from safety.jma.codes import SPECIAL_WARNING_KINDS
from safety.jma.decide import (
    TSUNAMI_LEVEL_NAMES,
    Action,
    Hazard,
    Outcome,
    Person,
    RuleSpec,
    decide,
    empty_state,
    hazard_of,
    prune_state,
    synthetic_report,
)
from safety.jma.parser import Report, parse_report
from safety.models import (
    Delivery,
    DispatchRule,
    Incident,
    IncidentStatus,
    JmaDecision,
    JmaDocument,
    Recipient,
    RuleTarget,
    SafetySettings,
)

logger = logging.getLogger(__name__)

PRESET_NAME = "震度5強以上 / Intensity 5+ or more"
WITHDRAW_EVENT = "safety.withdrawn"
HAZARD_NAMES = {
    "earthquake": ("地震", "Earthquake"),
    "tsunami": ("津波", "Tsunami"),
    "special_warning": ("特別警報", "Special warning"),
}
# The built-in message of an automatic incident, in each language; the incident keeps both (Japanese first), and
# each person's notification shows theirs (`message_in`).
DEFAULT_TEXTS = {
    "earthquake": {
        "ja": (
            "気象庁の発表により、あなたの地域で強い揺れが観測されました。"
            "身の安全を確保してから、安否を回答してください。"
        ),
        "en": "JMA reports strong shaking in your area. Once you are safe, please answer this safety check.",
    },
    "tsunami": {
        "ja": "気象庁が津波警報等を発表しました。海岸から離れ、高い所へ避難してから、安否を回答してください。",
        "en": "JMA has issued a tsunami warning for your area. Move away from the coast to high ground, then answer.",
    },
    "special_warning": {
        "ja": "気象庁が特別警報を発表しました。命を守る行動をとってから、安否を回答してください。",
        "en": "JMA has issued a special warning (特別警報) for your area. Act now to protect your life, then answer.",
    },
}
DEFAULT_MESSAGES = {hazard: f"{texts['ja']}\n\n{texts['en']}" for hazard, texts in DEFAULT_TEXTS.items()}
_DEFAULT_BY_MESSAGE = {DEFAULT_MESSAGES[hazard]: texts for hazard, texts in DEFAULT_TEXTS.items()}


def message_in(incident: Incident, language: str) -> str | None:
    """An automatic incident's built-in message in one language; None for any other message (a template's)."""
    texts = _DEFAULT_BY_MESSAGE.get(incident.message) if incident.titles else None
    if texts is None:
        return None
    return texts.get(language) or texts["ja"]


EVALUATE_WITHIN = timedelta(days=2)  # the scan decides documents a crash left undecided, if this recent
STATE_EVENTS_KEPT = 200
# Outcomes decided before the state is looked at: nothing to store.
UNCHANGED_STATE = frozenset({"stale", "test", "status", "drill", "not_trigger", "no_rule"})


# --- rules and people as the decision sees them --------------------------------------------------------------------


def safety_settings(organization: Organization, *, lock: bool = False) -> SafetySettings:
    SafetySettings.objects.get_or_create(organization=organization)
    query = SafetySettings.objects.filter(organization=organization)
    return (query.select_for_update() if lock else query).get()


def preset_rule_create(organization: Organization) -> DispatchRule:
    """The rule every organisation starts with: 震度5強 or more in any prefecture reaches the people based there."""
    return DispatchRule.objects.create(
        organization=organization,
        name=PRESET_NAME,
        hazard="earthquake",
        min_intensity="5+",
        target_mode=RuleTarget.BASED,
        is_preset=True,
    )


def _safety_people(organization_id: int) -> Any:
    return User.objects.filter(organization_id=organization_id, is_active=True, anpi_login_id__isnull=False)


def people_specs(organization: Organization) -> list[Person]:
    """Everyone a safety check can reach: active people with a safety-confirmation ID."""
    rows = _safety_people(organization.id).values_list("id", "login_id", "region_code").order_by("id")
    return [Person(id=i, login_id=login, region_code=region or "") for i, login, region in rows]


def rule_spec(rule: DispatchRule, people_ids: set[int]) -> RuleSpec:
    chosen: set[int] = set()
    if rule.target_mode == RuleTarget.CHOSEN:
        subtrees = department_subtrees(organization_id=rule.organization_id, department_ids=list(rule.department_ids))
        departments = {d for ids in subtrees.values() for d in ids}
        if departments:
            chosen |= set(
                _safety_people(rule.organization_id).filter(department_id__in=departments).values_list("id", flat=True)
            )
        chosen |= {int(p) for p in rule.person_ids}
        chosen &= people_ids
    return RuleSpec(
        id=rule.id,
        name=rule.name,
        hazard=rule.hazard,  # type: ignore[arg-type]
        prefectures=frozenset(rule.prefectures),
        areas=frozenset(rule.areas),
        min_intensity=rule.min_intensity,
        tsunami_level=rule.tsunami_level,
        special_kinds=frozenset(rule.special_kinds),
        target_mode=rule.target_mode,  # type: ignore[arg-type]
        chosen_ids=frozenset(chosen),
        hold_minutes=rule.hold_minutes,
        suppress_minutes=rule.suppress_minutes,
    )


def rule_specs(organization: Organization, people: Sequence[Person]) -> list[RuleSpec]:
    ids = {p.id for p in people}
    return [rule_spec(r, ids) for r in DispatchRule.objects.filter(organization=organization, enabled=True)]


# --- titles --------------------------------------------------------------------------------------------------------


SPECIAL_WARNING_NAMES_EN = {
    "32": "Blizzard special warning",
    "33": "Heavy rain special warning",
    "35": "Storm special warning",
    "36": "Heavy snow special warning",
    "37": "High waves special warning",
    "38": "Storm surge special warning",
    "39": "Landslide special warning",
}
# JMA's English for the intensity classes: 5弱 is "5 Lower", 5強 "5 Upper".
_INTENSITY_EN = {"-": " Lower", "+": " Upper"}


def _what(hazard: str, level: str) -> tuple[str, str]:
    """What happened, in each language: 地震（震度6強） / Earthquake (seismic intensity 6 Upper), 大津波警報 / Major
    tsunami warning, 大雨特別警報 / Heavy rain special warning."""
    if hazard == "earthquake":
        ja = "震度" + level.replace("-", "弱").replace("+", "強")
        en = "seismic intensity " + "".join(_INTENSITY_EN.get(c, c) for c in level)
        return f"地震（{ja}）", f"Earthquake ({en})"
    if hazard == "tsunami":
        ja, en = TSUNAMI_LEVEL_NAMES.get(level, (level, level))
        return ja, en[:1].upper() + en[1:]  # 大津波警報 / Major tsunami warning
    if hazard == "special_warning":
        ja = SPECIAL_WARNING_KINDS.get(level, level)
        return ja, SPECIAL_WARNING_NAMES_EN.get(level, f"Special warning ({ja})")
    hazard_ja, hazard_en = HAZARD_NAMES.get(hazard, (hazard, hazard))
    return hazard_ja, hazard_en


def incident_titles(hazard: str, places: Sequence[str], level: str, *, drill: bool = False) -> dict[str, str]:
    """ "災害発生 / Disaster occurred" in each language, with the hazard, the level and the places:
    {"ja": "災害発生：地震（震度6強） 岩手県、宮城県", "en": "Disaster occurred: Earthquake (seismic intensity 6 Upper)
    — Iwate, Miyagi"}; a special warning reads "災害発生：大雨特別警報 奈良県". Drills start with 【訓練】 / [DRILL]."""
    what_ja, what_en = _what(hazard, level)
    names_ja = [PREFECTURES[p].ja if p in PREFECTURES else p for p in places]
    names_en = [PREFECTURES[p].en if p in PREFECTURES else p for p in places]
    if len(places) > 8:
        names_ja = [*names_ja[:8], f"ほか{len(places) - 8}"]
        names_en = [*names_en[:8], f"and {len(places) - 8} more"]
    where_ja = f" {'、'.join(names_ja)}" if names_ja else ""
    where_en = f" — {', '.join(names_en)}" if names_en else ""
    drill_ja, drill_en = ("【訓練】", "[DRILL] ") if drill else ("", "")
    return {
        "ja": f"{drill_ja}災害発生：{what_ja}{where_ja}"[:200],
        "en": f"{drill_en}Disaster occurred: {what_en}{where_en}"[:200],
    }


# --- deciding --------------------------------------------------------------------------------------------------


def _action_dict(action: Action) -> dict[str, Any]:
    data = asdict(action)
    data["person_ids"] = list(action.person_ids)
    data["rule_ids"] = list(action.rule_ids)
    data["places"] = list(action.places)
    return data


def jma_document_decide(*, document_id: int, execute: bool = True) -> list[JmaDecision]:
    """Decide one stored document for every organisation (each once) and execute each decision that is due now
    (hold 0) as soon as it is made, so the first organisation's push does not wait for the others' decisions.

    One organisation's failure neither stops the others nor loses the document: it stays undecided
    (`evaluated_at` NULL) and the safety scan decides it again, skipping the organisations already decided.
    A decision whose execution fails stays due and the scan executes it."""
    document = JmaDocument.objects.filter(id=document_id).first()
    if document is None:
        return []
    report = parse_report(bytes(document.raw))
    decided: list[JmaDecision] = []
    failed = False
    for organization in Organization.objects.order_by("id"):
        try:
            decision = _decide_for(organization, document, report)
        except Exception:
            failed = True
            logger.exception(
                "deciding JMA document %s for %s failed; the scan retries", document.url, organization.slug
            )
            continue
        if decision is None:
            continue
        decided.append(decision)
        if execute and decision.due_at is not None and decision.due_at <= timezone.now():
            try:
                decision_execute(decision_id=decision.id)
            except Exception:
                logger.exception("executing JMA decision %s failed; the scan retries", decision.id)
    if not failed:
        JmaDocument.objects.filter(id=document.id, evaluated_at__isnull=True).update(evaluated_at=timezone.now())
    return decided


def _stale(document: JmaDocument, report: Report) -> str:
    """Why the report is too old to dispatch on ("" when it is not): it was issued more than
    JMA_DISPATCH_MAX_AGE_MINUTES before it arrived — a sample or an old message ingested by hand, or the hours of
    entries the first poll after a deploy finds. A crash does not make a report stale: arrival time counts."""
    limit = settings.JMA_DISPATCH_MAX_AGE_MINUTES
    issued = report.report_datetime or report.control_datetime
    if not limit or issued is None or document.received_at is None:
        return ""
    age = document.received_at - issued
    if age <= timedelta(minutes=limit):
        return ""
    return (
        f"out of date: issued {int(age.total_seconds() // 60)} minutes before it arrived; automatic dispatch acts "
        f"on reports at most {limit} minutes old (JMA_DISPATCH_MAX_AGE_MINUTES)"
    )


@transaction.atomic
def _decide_for(organization: Organization, document: JmaDocument, report: Report) -> JmaDecision | None:
    settings_row = safety_settings(organization, lock=True)
    if JmaDecision.objects.filter(organization=organization, document=document).exists():
        return None
    stale = _stale(document, report)
    hazard = hazard_of(report)
    acts = (
        not stale
        and hazard is not None
        and report.status in ("通常", "訓練")
        and DispatchRule.objects.filter(organization=organization, hazard=hazard, enabled=True).exists()
    )
    people = people_specs(organization) if acts else []
    if stale:
        outcome = Outcome("ignore", None, report.status == "訓練", stale, "stale", state=settings_row.jma_state)
    else:
        outcome = decide(
            report,
            rules=rule_specs(organization, people) if acts else [],
            people=people,
            state=settings_row.jma_state or None,
            drill_mode=settings_row.drill_mode,
            # The bytes name the document: the same message polled and pushed in under two URLs is one.
            doc_key=document.sha256,
        )
    now = timezone.now()
    hold = min((a.hold_minutes for a in outcome.actions), default=0)
    decision = JmaDecision.objects.create(
        organization=organization,
        document=document,
        decided_at=now,
        decision=outcome.decision,
        hazard=outcome.hazard or "",
        drill=outcome.drill,
        reason=outcome.reason,
        reason_code=outcome.reason_code,
        rule_ids=outcome.rule_ids,
        new_person_ids=outcome.new_ids,
        withdrawn_person_ids=outcome.withdrawn_ids,
        actions=[_action_dict(a) for a in outcome.actions],
        due_at=now + timedelta(minutes=hold) if outcome.actions else None,
    )
    if outcome.reason_code not in UNCHANGED_STATE:
        settings_row.jma_state = prune_state(outcome.state, keep=STATE_EVENTS_KEPT)
        settings_row.updated_at = now
        settings_row.save(update_fields=["jma_state", "updated_at"])
    logger.info(
        "JMA %s for %s: %s (%s)",
        document.url,
        organization.slug,
        outcome.decision,
        outcome.reason,
    )
    return decision


def documents_undecided(*, now: datetime | None = None) -> list[int]:
    """Recent documents a crash (or a lost task) left undecided."""
    now = now or timezone.now()
    return list(
        JmaDocument.objects.filter(evaluated_at__isnull=True, received_at__gte=now - EVALUATE_WITHIN)
        .order_by("received_at", "id")
        .values_list("id", flat=True)[:100]
    )


def decisions_due(*, now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(
        JmaDecision.objects.filter(executed_at__isnull=True, due_at__lte=now)
        .order_by("due_at", "id")
        .values_list("id", flat=True)[:100]
    )


# --- executing -------------------------------------------------------------------------------------------------


def _rule_for(action: Mapping[str, Any]) -> DispatchRule | None:
    ids = action.get("rule_ids") or []
    return DispatchRule.objects.filter(id__in=ids).order_by("id").first() if ids else None


def _incident_for(organization: Organization, action: Mapping[str, Any]) -> Incident | None:
    return (
        Incident.objects.filter(organization=organization, jma_event=action["event"])
        .exclude(status=IncidentStatus.COMPLETED)
        .order_by("-id")
        .first()
    )


def _crisis_team(organization: Organization) -> list[int]:
    from directory.models import Role
    from safety.services import MAX_NOTIFY

    ids = (
        User.objects.filter(
            organization=organization,
            is_active=True,
            role_assignments__role__in=[Role.CRISIS_MANAGER, Role.ADMIN_ANPI],
        )
        .values_list("id", flat=True)
        .distinct()
        .order_by("id")
    )
    return list(ids[:MAX_NOTIFY])


def _incident_open(organization: Organization, action: Mapping[str, Any]) -> Incident:
    from safety.services import incident_create

    rule = _rule_for(action)
    titles = incident_titles(action["hazard"], action["places"], action["level"], drill=action["drill"])
    message = DEFAULT_MESSAGES[action["hazard"]]
    if rule is not None and rule.template is not None and rule.template.body.strip():
        message = rule.template.body.strip()
    incident = incident_create(
        organization=organization,
        actor=None,
        title=titles["ja"],
        message=message,
        questions=rule.questions if rule is not None and rule.questions is not None else None,
        is_drill=bool(action["drill"]),
        # Nobody pressed "send": the crisis managers and safety administrators learn it opened, with its link.
        notify_user_ids=_crisis_team(organization),
    )
    incident.jma_event = action["event"]
    incident.titles = titles
    incident.save(update_fields=["jma_event", "titles"])
    return incident


def decision_execute(*, decision_id: int) -> list[int]:
    """Carry out a due decision once: open or add to incidents, or withdraw people. Returns the incident ids."""
    from safety.services import dispatch_create

    with transaction.atomic():
        decision = JmaDecision.objects.filter(id=decision_id).select_related("organization").first()
        if decision is None:
            return []
        safety_settings(decision.organization, lock=True)  # one organisation's decisions run in order
        decision = JmaDecision.objects.select_for_update().get(id=decision_id)
        if decision.executed_at is not None:
            return list(decision.incident_ids)
        organization = decision.organization
        reachable = set(_safety_people(organization.id).values_list("id", flat=True))
        incident_ids: list[int] = []
        skipped: list[str] = []
        for action in decision.actions:
            if action["kind"] == "withdraw":
                incident_ids.extend(_withdraw(organization, action))
                continue
            person_ids = [p for p in action["person_ids"] if p in reachable]
            if not person_ids:
                continue
            if (
                action.get("rule_ids")
                and not DispatchRule.objects.filter(
                    organization=organization, id__in=action["rule_ids"], enabled=True
                ).exists()
            ):
                # Switched off (or deleted) during the hold: whoever did that meant it not to go.
                skipped.append(
                    f"not sent: its rule was switched off or deleted before the hold ended ({len(person_ids)} people)"
                )
                continue
            incident = _incident_for(organization, action) or _incident_open(organization, action)
            dispatch_create(incident=incident, actor=None, target={"mode": "chosen", "person_ids": person_ids})
            incident_ids.append(incident.id)
        decision.executed_at = timezone.now()
        decision.incident_ids = sorted(set(incident_ids))
        if skipped:
            decision.reason = "; ".join([decision.reason, *skipped])
        decision.save(update_fields=["executed_at", "incident_ids", "reason"])
        return list(decision.incident_ids)


def _pending(organization: Organization, decision_id: int) -> JmaDecision:
    decision = (
        JmaDecision.objects.select_for_update()
        .filter(organization=organization, id=decision_id, executed_at__isnull=True, due_at__isnull=False)
        .first()
    )
    if decision is None:
        raise ApplicationError(_("This decision is not waiting for its hold any more."), code="not_pending", status=409)
    return decision


def decision_cancel(*, organization: Organization, decision_id: int, actor: User) -> JmaDecision:
    """Stop a dispatch that is still on hold (a crisis manager judged the report false). Nobody is sent it, and
    the people it would have asked can be asked again by a later report of the same event."""
    with transaction.atomic():
        settings_row = safety_settings(organization, lock=True)
        decision = _pending(organization, decision_id)
        events = settings_row.jma_state.get("events", {})
        for action in decision.actions:
            event = events.get(action["event"].split("@", 1)[0])
            if event is None or action["kind"] == "withdraw":
                continue
            for person_id in action["person_ids"]:
                event.get("notified", {}).pop(str(person_id), None)
            if not event.get("notified"):
                event["open"] = False
        settings_row.save(update_fields=["jma_state"])
        now = timezone.now()
        decision.executed_at = now
        decision.reason = f"{decision.reason}; cancelled during the hold by {actor.display_name} ({actor.login_id})"
        decision.save(update_fields=["executed_at", "reason"])
        logger.info("held JMA decision %s cancelled by %s", decision.id, actor.login_id)
        return decision


def decision_send_now(*, organization: Organization, decision_id: int, actor: User) -> list[int]:
    """Send a dispatch that is on hold now, without waiting for the rest of its hold."""
    with transaction.atomic():
        safety_settings(organization, lock=True)
        decision = _pending(organization, decision_id)
        decision.due_at = timezone.now()
        decision.save(update_fields=["due_at"])
    return decision_execute(decision_id=decision_id)


def _withdraw(organization: Organization, action: Mapping[str, Any]) -> list[int]:
    """Take people back: those in a decision still on hold are simply dropped from it; those already asked lose
    their recipient and delivery rows (so the tallies are right) and are told it was withdrawn."""
    people = set(action["person_ids"])
    for pending in JmaDecision.objects.select_for_update().filter(
        organization=organization, executed_at__isnull=True, due_at__isnull=False
    ):
        changed = False
        for other in pending.actions:
            if other["event"] == action["event"] and other["kind"] != "withdraw":
                kept = [p for p in other["person_ids"] if p not in people]
                changed |= kept != other["person_ids"]
                other["person_ids"] = kept
        if changed:
            pending.new_person_ids = sorted(
                {p for a in pending.actions if a["kind"] != "withdraw" for p in a["person_ids"]}
            )
            pending.save(update_fields=["actions", "new_person_ids"])
    incident = _incident_for(organization, action)
    if incident is None:
        return []
    asked = list(Recipient.objects.filter(incident=incident, person_id__in=people).values_list("person_id", flat=True))
    if not asked:
        return [incident.id]
    Delivery.objects.filter(incident=incident, person_id__in=asked).delete()
    Recipient.objects.filter(incident=incident, person_id__in=asked).delete()
    _withdrawal_notice(incident, asked)
    from safety.services import _incident_changed, incident_complete

    if not Recipient.objects.filter(incident=incident).exists():
        incident_complete(incident=incident, actor=None)  # type: ignore[arg-type]
    else:
        _incident_changed(incident)
    return [incident.id]


WITHDRAWN_TEXTS = {
    "ja": (
        "【取消】",
        "気象庁の情報が取り消されたため、この安否確認は取り消されました。回答は不要です。",
    ),
    "en": (
        "[Withdrawn] ",
        "JMA withdrew the report, so this safety check is withdrawn. No answer is needed.",
    ),
}


def withdrawal_text(incident: Incident, language: str) -> tuple[str, str]:
    """The withdrawal notice (title, body) in a person's language (Japanese unless they read English)."""
    language = language if language in WITHDRAWN_TEXTS else "ja"
    prefix, body = WITHDRAWN_TEXTS[language]
    return f"{prefix}{incident.title_in(language)}"[:200], body


def _withdrawal_notice(incident: Incident, person_ids: Iterable[int]) -> None:
    """Tell the people taken back, by web push and e-mail, each in their own language."""
    from consumers.mail import MailDict, MailMessage
    from consumers.tasks import mail_send
    from directory.contacts import confirmed_private_addresses

    people = list(
        User.objects.filter(id__in=set(person_ids)).order_by("id").values_list("id", "email", "email2", "language")
    )
    private_addresses = confirmed_private_addresses([p[0] for p in people])
    messages: list[MailDict] = []
    for person_id, email, email2, language in people:
        title, body = withdrawal_text(incident, language)
        publish_on_commit(
            user_group(person_id),
            WITHDRAW_EVENT,
            {"incident_id": incident.id},
            push=push_request(
                [person_id],
                title=title,
                body=body,
                url=f"/{incident.organization.slug}/",
                tag=f"incident-{incident.id}",
                urgency="high",
            ),
        )
        private = private_addresses.get(person_id, [])
        to = [a for a in (email, email2) if a] + private
        if to:
            messages.append(
                MailMessage(to=to, subject=title, body=body, language=language, private=tuple(private)).as_dict()
            )
    if messages:
        transaction.on_commit(lambda: mail_send.delay(messages), robust=True)


# --- replay and verify (nothing stored, nothing sent) ----------------------------------------------------------


def _outcome_line(name: str, outcome: Outcome, login: Mapping[int, str]) -> dict[str, Any]:
    return {
        "file": name,
        "decision": outcome.decision,
        "hazard": outcome.hazard,
        "drill": outcome.drill,
        "new_targets": sorted(login[p] for p in outcome.new_ids if p in login),
        "withdrawn_targets": sorted(login[p] for p in outcome.withdrawn_ids if p in login),
        "reason": outcome.reason,
    }


def replay(
    organization: Organization, documents: Sequence[tuple[str, bytes]], *, drill_mode: bool | None = None
) -> list[tuple[dict[str, Any], Outcome]]:
    """What today's rules and directory would have done with these documents, in order, from an empty state.
    Raises JmaParseError (nothing done) for a document that does not parse, naming it."""
    from safety.jma.parser import JmaParseError

    reports: list[tuple[str, Report]] = []
    for name, raw in documents:
        try:
            reports.append((name, parse_report(raw)))
        except JmaParseError as exc:
            raise JmaParseError(f"{name}: {exc}") from None
    people = people_specs(organization)
    rules = rule_specs(organization, people)
    login = {p.id: p.login_id for p in people}
    if drill_mode is None:
        # Read, never create: a replay stores nothing, not even the default settings row.
        row = SafetySettings.objects.filter(organization=organization).values_list("drill_mode", flat=True).first()
        drill_mode = bool(row)
    state: dict[str, Any] = empty_state()
    lines: list[tuple[dict[str, Any], Outcome]] = []
    for (name, report), (_name, raw) in zip(reports, documents, strict=True):
        outcome = decide(
            report,
            rules=rules,
            people=people,
            state=state,
            drill_mode=drill_mode,
            doc_key=hashlib.sha256(raw).hexdigest(),
        )
        state = outcome.state
        lines.append((_outcome_line(name, outcome, login), outcome))
    return lines


def verify(organization: Organization, *, hazard: Hazard, area: str, level: str) -> Outcome:
    """Who a dispatch for `hazard` at `level` in `area` would reach today, and which rules fire (ValueError for
    an unknown area or level). Nothing is stored or sent."""
    report = synthetic_report(hazard, area, level)
    people = people_specs(organization)
    return decide(report, rules=rule_specs(organization, people), people=people, state=None, drill_mode=False)


def jma_autodispatch_after_commit(document_id: int) -> None:
    """Called by the ingest after a new document commits: decide it (a Celery task with a broker, inline when
    Celery runs eagerly). It never raises: the document is stored whatever happens here, the caller (the poller,
    the REST push endpoint) must not see an error for it, and the safety scan decides it if this fails."""
    from safety.tasks import jma_decide

    try:
        jma_decide.delay(document_id)
    except Exception:
        logger.exception("deciding JMA document %s failed; the safety scan will retry", document_id)


# --- rules and settings: the crisis manager's side ---------------------------------------------------------------

MAX_HOLD_MINUTES = 24 * 60
MAX_PLACES = 500


def _codes(raw: Any, known: Mapping[str, Any] | Iterable[str], what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw) or len(raw) > MAX_PLACES:
        raise ApplicationError(_("%(what)s must be a list of codes.") % {"what": what}, code="bad_rule")
    known_set = set(known)
    unknown = sorted({v.strip() for v in raw} - known_set)
    if unknown:
        raise ApplicationError(
            _("Unknown %(what)s: %(codes)s") % {"what": what, "codes": ", ".join(unknown[:5])}, code="bad_rule"
        )
    return sorted({v.strip() for v in raw})


def _ids(raw: Any, what: str) -> list[int]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise ApplicationError(_("%(what)s must be a list of ids.") % {"what": what}, code="bad_rule")
    return sorted(set(raw))


def _minutes(raw: Any, what: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_HOLD_MINUTES:
        raise ApplicationError(
            _("%(what)s is a whole number of minutes from 0 to %(max)d.") % {"what": what, "max": MAX_HOLD_MINUTES},
            code="bad_rule",
        )
    return raw


def rule_fields_clean(
    organization: Organization, fields: Mapping[str, Any], *, rule: DispatchRule | None
) -> dict[str, Any]:
    """Check a rule's fields (all of them for a new rule, the ones given for a change) as one whole rule."""
    from directory.models import Department
    from safety.jma.codes import EARTHQUAKE_AREAS, INTENSITY_ORDER, MUNICIPALITIES, TSUNAMI_AREAS
    from safety.models import Hazard, MessageTemplate, TsunamiLevel
    from safety.questions import questions_clean

    current: dict[str, Any] = {}
    if rule is not None:
        current = {name: getattr(rule, name) for name in RULE_FIELDS}
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise ApplicationError(_("Unknown field: %(name)s") % {"name": sorted(unknown)[0]}, code="bad_rule")
    merged = {**RULE_DEFAULTS, **current, **fields}
    out: dict[str, Any] = {}
    if not isinstance(merged["name"], str):
        raise ApplicationError(_("A rule needs a name (at most 100 characters)."), code="bad_rule")
    name = merged["name"].strip()
    if not name or len(name) > 100:
        raise ApplicationError(_("A rule needs a name (at most 100 characters)."), code="bad_rule")
    out["name"] = name
    hazard = merged["hazard"]
    if hazard not in Hazard.values:
        raise ApplicationError(_("Choose earthquake, tsunami or special warning."), code="bad_rule")
    if rule is not None and "hazard" in fields and hazard != rule.hazard and "areas" not in fields:
        merged["areas"] = []  # the places of one hazard mean nothing for another
    out["hazard"] = hazard
    if not isinstance(merged["enabled"], bool):
        raise ApplicationError(_("enabled must be true or false."), code="bad_rule")
    out["enabled"] = merged["enabled"]
    out["prefectures"] = _codes(merged["prefectures"], PREFECTURES, _("prefecture"))
    area_tables: dict[str, Mapping[str, Any]] = {
        "earthquake": EARTHQUAKE_AREAS,
        "tsunami": TSUNAMI_AREAS,
        "special_warning": MUNICIPALITIES,
    }
    out["areas"] = _codes(merged["areas"], area_tables[hazard], _("area"))
    if merged["min_intensity"] not in INTENSITY_ORDER:
        raise ApplicationError(_("Choose an intensity from 1 to 7."), code="bad_rule")
    out["min_intensity"] = merged["min_intensity"]
    if merged["tsunami_level"] not in TsunamiLevel.values:
        raise ApplicationError(_("Choose a tsunami level."), code="bad_rule")
    out["tsunami_level"] = merged["tsunami_level"]
    out["special_kinds"] = _codes(merged["special_kinds"], SPECIAL_WARNING_KINDS, _("special-warning kind"))
    if merged["target_mode"] not in RuleTarget.values:
        raise ApplicationError(_("Choose who the rule reaches."), code="bad_rule")
    out["target_mode"] = merged["target_mode"]
    departments = _ids(merged["department_ids"], _("Departments"))
    people = _ids(merged["person_ids"], _("People"))
    if Department.objects.filter(organization=organization, id__in=departments).count() != len(departments):
        raise ApplicationError(_("Some of the departments are not in this organisation."), code="bad_rule")
    if User.objects.filter(organization=organization, id__in=people).count() != len(people):
        raise ApplicationError(_("Some of the chosen people are not in this organisation."), code="bad_rule")
    if out["target_mode"] == RuleTarget.CHOSEN and not departments and not people:
        raise ApplicationError(_("Choose at least one department or person."), code="bad_rule")
    out["department_ids"], out["person_ids"] = departments, people
    out["questions"] = None if merged["questions"] is None else questions_clean(merged["questions"])
    template_id = merged["template_id"]
    if template_id is not None:
        if isinstance(template_id, bool) or not isinstance(template_id, int):
            raise ApplicationError(_("Unknown message template."), code="bad_rule")
        if not MessageTemplate.objects.filter(organization=organization, id=template_id).exists():
            raise ApplicationError(_("Unknown message template."), code="bad_rule")
    out["template_id"] = template_id
    out["hold_minutes"] = _minutes(merged["hold_minutes"], _("The hold delay"))
    out["suppress_minutes"] = _minutes(merged["suppress_minutes"], _("The suppression window"))
    return out


RULE_DEFAULTS: dict[str, Any] = {
    "name": "",
    "hazard": "",
    "enabled": True,
    "prefectures": [],
    "areas": [],
    "min_intensity": "5+",
    "tsunami_level": "warning",
    "special_kinds": [],
    "target_mode": RuleTarget.BASED,
    "department_ids": [],
    "person_ids": [],
    "questions": None,
    "template_id": None,
    "hold_minutes": 0,
    "suppress_minutes": 0,
}
RULE_FIELDS = tuple(RULE_DEFAULTS)


@transaction.atomic
def rule_create(*, organization: Organization, actor: User | None, **fields: Any) -> DispatchRule:
    """Add an automatic-dispatch rule (ApplicationError, nothing stored, for any bad field)."""
    cleaned = rule_fields_clean(organization, fields, rule=None)
    return DispatchRule.objects.create(organization=organization, **cleaned)


@transaction.atomic
def rule_update(*, rule: DispatchRule, actor: User | None, **fields: Any) -> DispatchRule:
    rule = DispatchRule.objects.select_for_update().get(id=rule.id)
    cleaned = rule_fields_clean(rule.organization, fields, rule=rule)
    for name, value in cleaned.items():
        setattr(rule, name, value)
    rule.updated_at = timezone.now()
    rule.save()
    return rule


@transaction.atomic
def rule_delete(*, rule: DispatchRule, actor: User | None) -> None:
    DispatchRule.objects.filter(id=rule.id).delete()


@transaction.atomic
def drill_mode_set(*, organization: Organization, actor: User | None, drill_mode: bool) -> SafetySettings:
    """Switch drill mode: while on, 訓練 messages dispatch as drill incidents (never as real ones)."""
    row = safety_settings(organization, lock=True)
    row.drill_mode = bool(drill_mode)
    row.updated_at = timezone.now()
    row.save(update_fields=["drill_mode", "updated_at"])
    return row
