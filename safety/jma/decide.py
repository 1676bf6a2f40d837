"""What an organisation's automatic-dispatch rules make of one JMA report: a pure function of (report, rules,
people, state). No ORM, no clock, no I/O: the service around it (`safety.autodispatch`) loads the rules, the
people and the state, stores the new state and the audit row, and sends; the replay and verify pages and
`manage.py jma_replay` run the same function on a copy of nothing.

Decisions follow FORMAT_NOTES §9:
- an earthquake is one event per (status, EventID): VXSE51, VXSE52 and VXSE53 share it; a later report that
  raises the intensity in new places reaches only the people newly hit;
- a tsunami is its own event per (status, EventID); its messages are full snapshots, and a coast that newly
  reaches a rule's level dispatches, one that continues does not;
- a special warning is one event per (status, kind, prefecture) from its first 発表 until it is lifted there;
  municipalities that newly come under it join it; 継続 never dispatches;
- a duplicate does nothing, a version older than one applied is ignored, a 取消 withdraws what only the
  cancelled report caused (a VXSE52 取消 never touches the VXSE53 of the same quake);
- 試験 never dispatches, 訓練 only where drill mode is on, and then as a drill that never mixes with real events
  (the status is part of every key).

The state is plain JSON (dicts, lists, strings, numbers) so it can be stored in one column and copied.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from safety.jma.codes import (
    EARTHQUAKE_AREAS,
    INTENSITY_ORDER,
    PREFECTURES,
    SPECIAL_WARNING_KINDS,
    TSUNAMI_AREAS,
    TsunamiSeverity,
    earthquake_area_prefecture,
    intensity_rank,
    municipality_prefecture,
    tsunami_area_prefectures,
    tsunami_severity,
)
from safety.jma.parser import R06_TITLE_PREFIX, Report

__all__ = [
    "DECISIONS",
    "HAZARDS",
    "TSUNAMI_LEVELS",
    "Action",
    "Outcome",
    "Person",
    "RuleSpec",
    "decide",
    "empty_state",
    "hazard_of",
    "prune_state",
]

Hazard = Literal["earthquake", "tsunami", "special_warning"]
HAZARDS: tuple[Hazard, ...] = ("earthquake", "tsunami", "special_warning")
DECISIONS = ("dispatch", "update", "withdraw", "ignore")
TSUNAMI_LEVELS: dict[str, TsunamiSeverity] = {
    "advisory": TsunamiSeverity.ADVISORY,  # 津波注意報
    "warning": TsunamiSeverity.WARNING,  # 津波警報
    "major": TsunamiSeverity.MAJOR,  # 大津波警報
}
TSUNAMI_LEVEL_NAMES = {
    "advisory": ("津波注意報", "tsunami advisory"),
    "warning": ("津波警報", "tsunami warning"),
    "major": ("大津波警報", "major tsunami warning"),
}
_SEVERITY_LEVEL = {v: k for k, v in TSUNAMI_LEVELS.items()}
EARTHQUAKE_TYPES = frozenset({"VXSE51", "VXSE52", "VXSE53"})
TSUNAMI_TYPES = frozenset({"VTSE41", "VTSE51"})
SPECIAL_NEW = "発表"
SPECIAL_IN_FORCE = frozenset({"発表", "継続"})
STATE_VERSION = 1


@dataclass(frozen=True)
class RuleSpec:
    """One automatic-dispatch rule, as the decision needs it. Empty `prefectures` and `areas` mean anywhere;
    `areas` (when given) are 細分区域 codes, tsunami coasts or municipalities, by hazard. `chosen_ids` are the
    people a "chosen" rule reaches (its departments' subtrees and its people, resolved by the caller)."""

    id: int
    name: str
    hazard: Hazard
    prefectures: frozenset[str] = frozenset()
    areas: frozenset[str] = frozenset()
    min_intensity: str = "5+"
    tsunami_level: str = "warning"
    special_kinds: frozenset[str] = frozenset()  # empty: every kind
    target_mode: Literal["based", "chosen"] = "based"
    chosen_ids: frozenset[int] = frozenset()
    hold_minutes: int = 0
    suppress_minutes: int = 0


@dataclass(frozen=True)
class Person:
    id: int
    login_id: str
    region_code: str


@dataclass(frozen=True)
class Action:
    """One incident-level effect of a report: open an incident, add people to one, or withdraw people."""

    kind: Literal["dispatch", "update", "withdraw"]
    event: str  # the event key; the service maps it to its incident
    hazard: Hazard
    drill: bool
    person_ids: tuple[int, ...]
    rule_ids: tuple[int, ...] = ()
    places: tuple[str, ...] = ()  # prefecture codes (titles, "based" targets)
    level: str = ""  # "6+", "major", "33" …: the highest level that fired
    hold_minutes: int = 0
    # Every rule the report fired, also those whose people had all been reached by another rule already.
    fired_rule_ids: tuple[int, ...] = ()


@dataclass
class Outcome:
    """The decision for one report, summarised per document (what `jma_replay` prints), with its actions."""

    decision: Literal["dispatch", "update", "withdraw", "ignore"]
    hazard: Hazard | None
    drill: bool
    reason: str
    reason_code: str
    new_ids: list[int] = field(default_factory=list)
    withdrawn_ids: list[int] = field(default_factory=list)
    rule_ids: list[int] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "docs": {}, "events": {}, "recent": []}


def prune_state(state: Mapping[str, Any], *, keep: int = 200) -> dict[str, Any]:
    """Keep `keep` events, open ones first, then the most recently touched (and the newest documents and
    recent dispatches), so the stored state stays small. The state given is not changed."""
    out: dict[str, Any] = dict(state)
    events = out.get("events", {})
    if len(events) > keep:
        # An open event (people were asked) is kept over closed ones: a late update or 取消 of a main shock must
        # find it after a swarm of aftershocks below the threshold.
        newest = sorted(
            events, key=lambda k: (bool(events[k].get("open")), events[k].get("touched", "")), reverse=True
        )[:keep]
        out["events"] = {k: events[k] for k in newest}
    docs = out.get("docs", {})
    if len(docs) > keep * 20:
        out["docs"] = dict(sorted(docs.items(), key=lambda kv: kv[1].get("at", ""))[-keep * 20 :])
    out["recent"] = out.get("recent", [])[-keep * 5 :]
    return out


# --- small helpers -----------------------------------------------------------------------------------------------


def _ignore(state: dict[str, Any], hazard: Hazard | None, drill: bool, code: str, reason: str) -> Outcome:
    return Outcome("ignore", hazard, drill, reason, code, state=state)


def hazard_of(report: Report) -> Hazard | None:
    """Which hazard's rules a report is for (None: it triggers nothing)."""
    if report.type_code in EARTHQUAKE_TYPES:
        return "earthquake"
    if report.type_code in TSUNAMI_TYPES:
        return "tsunami"
    if report.kind == "weather" and report.type_code != "VPNO50":
        return "special_warning"
    return None


def _at(report: Report) -> str:
    when = report.report_datetime or report.control_datetime
    return when.isoformat() if when else ""


def _office_key(report: Report) -> str:
    """Whose snapshot a warning message is: its office's (VPWW53 and VPWW54 carry the same one), or for the
    R06 per-hazard messages (VPWW55–61) the office's for that hazard, since each holds one hazard only."""
    office = report.editorial_office or report.publishing_office
    return f"{office}|{report.title}" if report.title.startswith(R06_TITLE_PREFIX) else office


def _doc_identity(report: Report) -> str:
    if report.kind == "weather":
        # VPWW53 and VPWW54 carry the same update with the same content: one identity for both.
        return "|".join(("weather", report.status, _office_key(report), report.info_type, _at(report)))
    return "|".join(
        (
            report.title,
            report.status,
            " ".join(report.event_ids),
            str(report.serial or ""),
            report.info_type,
            _at(report),
            _content_digest(report),
        )
    )


def _content_digest(report: Report) -> str:
    """A digest of what the report says. The FORMAT_NOTES §9.1 tuple alone is not unique: VXSE51 has no Serial, and
    two updates of one quake can share the minute (suruga2009 VXSE51 05:09 and its update 2, also 05:09, which adds
    長野県); the same message sent twice still has the same digest."""
    content = [
        report.headline,
        report.max_intensity,
        sorted(report.intensity_by_pref.items()),
        sorted(report.intensity_by_area.items()),
        sorted(report.intensity_by_city.items()),
        sorted(report.cities_not_reported),
        sorted(report.tsunami_by_area.items()),
        report.body_text,
    ]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:16]


def _version(report: Report) -> list[Any]:
    return [report.serial if report.serial is not None else -1, _at(report)]


def _older(mine: Sequence[Any], applied: Sequence[Any] | None) -> bool:
    """True when version `mine` is older than `applied` (by Serial where both have one, else by time)."""
    if not applied:
        return False
    if mine[0] >= 0 and applied[0] >= 0 and mine[0] != applied[0]:
        return bool(mine[0] < applied[0])
    return bool(mine[1] < applied[1])


def _people_in(people: Iterable[Person], prefectures: set[str]) -> set[int]:
    return {p.id for p in people if p.region_code in prefectures}


def _add_people(into: dict[str, int], rule: RuleSpec, people: Iterable[Person], prefectures: set[str]) -> None:
    """Who `rule` reaches when it fires in `prefectures` (its chosen people, or the people based there), each
    credited to the first rule that reached them."""
    ids = rule.chosen_ids if rule.target_mode == "chosen" else _people_in(people, prefectures)
    for pid in sorted(ids):
        into.setdefault(str(pid), rule.id)


def _names(prefectures: Iterable[str]) -> str:
    names = [PREFECTURES[p].ja if p in PREFECTURES else p for p in sorted(prefectures)]
    if len(names) > 6:
        return "、".join(names[:6]) + f" ほか{len(names) - 6}"
    return "、".join(names)


def _intensity_label(value: str) -> str:
    return value.replace("-", "弱").replace("+", "強")


def _max_intensity(values: Iterable[str]) -> str:
    ranked = [v for v in values if intensity_rank(v) is not None]
    return max(ranked, key=lambda v: intensity_rank(v) or 0) if ranked else ""


# --- the decision ------------------------------------------------------------------------------------------------


def decide(
    report: Report,
    *,
    rules: Sequence[RuleSpec],
    people: Sequence[Person],
    state: Mapping[str, Any] | None,
    drill_mode: bool,
    doc_key: str = "",
) -> Outcome:
    """Decide what `report` does for one organisation. `state` is what earlier reports left (None: nothing);
    the returned Outcome carries the new state, which the caller stores only if it acts on the outcome.

    `doc_key` names the document (its URL, or the SHA-256 of its bytes); without one, the content identity of
    FORMAT_NOTES §9.1 does. Two weather messages of one office and time (VPWW53 and VPWW54) are one update."""
    new_state: dict[str, Any] = dict(state) if state else empty_state()  # copied deeply once past the early exits
    hazard = hazard_of(report)
    drill = report.status == "訓練"
    if report.status == "試験":
        return _ignore(new_state, hazard, False, "test", "test message (試験): never dispatched")
    if report.status not in ("通常", "訓練"):
        return _ignore(new_state, hazard, False, "status", f"unknown status {report.status!r}: never dispatched")
    if drill and not drill_mode:
        return _ignore(
            new_state, hazard, True, "drill", "drill message (訓練): drill mode is off for this organisation"
        )
    if hazard is None:
        what = {
            "eew": "earthquake early warning (緊急地震速報): rules act on observed intensity, not forecasts",
            "weather": "special-warning notice (気象特別警報報知): the areas come with the VPWW53/54 message",
        }.get(report.kind, f"{report.title or 'this message'} is not an earthquake, tsunami or special-warning report")
        return _ignore(new_state, None, drill, "not_trigger", f"not a trigger: {what}")
    mine = [r for r in rules if r.hazard == hazard]
    if not mine:
        return _ignore(new_state, hazard, drill, "no_rule", f"no rule: no enabled {hazard.replace('_', ' ')} rule")
    new_state = copy.deepcopy(new_state)
    identity = doc_key or _doc_identity(report)
    same_update = _doc_identity(report) if report.kind == "weather" else identity
    if identity in new_state["docs"] or same_update in new_state["docs"]:
        return _ignore(new_state, hazard, drill, "duplicate", "duplicate: this report was already applied")
    if hazard == "earthquake":
        outcome = _earthquake(report, mine, people, new_state, drill, identity)
    elif hazard == "tsunami":
        outcome = _tsunami(report, mine, people, new_state, drill, identity)
    else:
        outcome = _special(report, mine, people, new_state, drill, identity)
    if outcome.reason_code != "out_of_date":
        seen = {"event": outcome.actions[0].event if outcome.actions else "", "at": _at(report)}
        new_state["docs"][identity] = seen
        new_state["docs"][same_update] = seen
    return outcome


def _summarise(
    state: dict[str, Any], hazard: Hazard, drill: bool, actions: list[Action], quiet: tuple[str, str]
) -> Outcome:
    """One outcome per document from its actions; `quiet` is the (code, reason) when there is none."""
    new_ids = sorted({p for a in actions if a.kind != "withdraw" for p in a.person_ids})
    gone = sorted({p for a in actions if a.kind == "withdraw" for p in a.person_ids})
    rule_ids = sorted({r for a in actions for r in (a.fired_rule_ids or a.rule_ids)})
    if not actions:
        return Outcome("ignore", hazard, drill, quiet[1], quiet[0], state=state)
    kinds = {a.kind for a in actions}
    decision: Literal["dispatch", "update", "withdraw"] = (
        "dispatch" if "dispatch" in kinds else "update" if "update" in kinds else "withdraw"
    )
    parts = []
    for a in actions:
        where = _names(a.places)
        if a.kind == "withdraw":
            parts.append(f"withdrawn: {len(a.person_ids)} people asked only because of the cancelled report")
        else:
            verb = "new incident" if a.kind == "dispatch" else "added to the open incident"
            parts.append(f"{verb}: {len(a.person_ids)} people ({_level_text(hazard, a.level)} in {where})")
    return Outcome(decision, hazard, drill, "; ".join(parts), decision, new_ids, gone, rule_ids, actions, state)


def _level_text(hazard: Hazard, level: str) -> str:
    if hazard == "earthquake":
        return f"震度{_intensity_label(level)}"
    if hazard == "tsunami":
        return TSUNAMI_LEVEL_NAMES.get(level, (level, level))[0]
    return SPECIAL_WARNING_KINDS.get(level, level)


def _event(state: dict[str, Any], key: str, hazard: Hazard, drill: bool) -> dict[str, Any]:
    events = state["events"]
    if key not in events:
        events[key] = {
            "hazard": hazard,
            "drill": drill,
            "open": False,  # an incident exists for it
            "versions": {},  # type code (or office) -> [serial, time] of the newest applied
            "hits": {},  # document identity -> {"type", "serial", "persons": {person id: rule id}, …}
            "notified": {},  # person id -> rule id: asked in this event
            "touched": "",
            "since": "",  # when it opened: a special warning lifted and issued again is a new incident
        }
    event: dict[str, Any] = events[key]
    return event


def _withdraw(
    event: dict[str, Any], key: str, hazard: Hazard, drill: bool, cancelled: list[str]
) -> tuple[list[Action], int]:
    """Forget what the cancelled documents caused; people notified only because of them are withdrawn."""
    for identity in cancelled:
        event["hits"].pop(identity, None)
    still = {pid for hit in event["hits"].values() for pid in hit["persons"]}
    gone = sorted(int(pid) for pid in event["notified"] if pid not in still)
    for pid in gone:
        event["notified"].pop(str(pid), None)
    if not event["notified"]:
        event["open"] = False
    if not gone:
        return [], 0
    return [Action("withdraw", f"{key}@{event['since']}", hazard, drill, tuple(gone))], len(gone)


def _same_report(event: Mapping[str, Any], report: Report, *, match_serial: bool = True) -> list[str]:
    """The applied documents a 取消 or 訂正 names: same type and Serial; without a Serial (VXSE51, VTSE41), the
    latest applied version of that type only."""
    same = [
        (hit.get("at", ""), identity)
        for identity, hit in event["hits"].items()
        if hit.get("type") == report.type_code
        and (not match_serial or report.serial is None or hit.get("serial") == report.serial)
    ]
    if report.serial is None and same:
        latest = max(at for at, _identity in same)
        return [[identity for at, identity in same if at == latest][-1]]  # the last applied of the newest time
    return [identity for _at_, identity in same]


def _cancel(
    report: Report, state: dict[str, Any], hazard: Hazard, drill: bool, keys: list[str], *, match_serial: bool
) -> Outcome:
    """A 取消: the documents it names are the same type (and Serial, where it has one) of the same event."""
    actions: list[Action] = []
    found = 0
    for key in keys:
        # Kept even when nothing is found: the feeds list the newest first, so a catch-up poll applies a 取消
        # before the report it cancels, and that report must then be ignored (`_cancelled_first`).
        event = _event(state, key, hazard, drill)
        event.setdefault("cancelled", []).append(
            {"type": report.type_code or "", "serial": report.serial, "at": _at(report)}
        )
        cancelled = _same_report(event, report, match_serial=match_serial)
        found += len(cancelled)
        # The cancelled reports never happened: they must not suppress a later quake as aftershocks either.
        state["recent"] = [r for r in state["recent"] if r.get("doc") not in cancelled]
        event["versions"].pop(report.type_code or "", None)
        event["touched"] = _at(report)
        done, _count = _withdraw(event, key, hazard, drill, cancelled)
        actions.extend(done)
    if not found:
        quiet = ("cancel_unknown", f"cancellation (取消) of a {report.type_code} this organisation never applied")
    else:
        quiet = ("cancel_nothing", "cancellation (取消): nobody was asked only because of the cancelled report")
    return _summarise(state, hazard, drill, actions, quiet)


def _cancelled_first(event: Mapping[str, Any] | None, report: Report) -> bool:
    """A 取消 of this report was applied before it arrived: the same type and Serial, or for a type without a
    Serial (VXSE51, VTSE41) any version issued no later than the 取消."""
    for cancel in (event or {}).get("cancelled", []):
        if cancel["type"] != (report.type_code or ""):
            continue
        if report.serial is not None and cancel["serial"] is not None:
            if cancel["serial"] == report.serial:
                return True
        elif _at(report) <= cancel["at"]:
            return True
    return False


# --- earthquake --------------------------------------------------------------------------------------------------


def _earthquake_places(report: Report, rule: RuleSpec) -> dict[str, str]:
    """Places (prefecture or area code) in the rule's scope with the intensity there; a place with a city whose
    station probably saw 5弱 or more but has not reported (震度５弱以上未入電) counts as at least 5弱."""
    unreported_prefs = {code[:2] for code in report.cities_not_reported}
    if rule.areas:
        values = {a: v for a, v in report.intensity_by_area.items() if a in rule.areas}
        for area in report.areas_not_reported:
            if area in rule.areas:
                values[area] = _max_intensity([values.get(area, ""), "5-"])
        return values
    values = {p: v for p, v in report.intensity_by_pref.items() if not rule.prefectures or p in rule.prefectures}
    for pref in unreported_prefs:
        if not rule.prefectures or pref in rule.prefectures:
            values[pref] = _max_intensity([values.get(pref, ""), "5-"])
    return values


def _place_prefecture(place: str) -> str:
    return earthquake_area_prefecture(place) or "" if len(place) == 3 else place


def _suppressed(state: dict[str, Any], rule: RuleSpec, key: str, pref: str, level: str, at: str) -> bool:
    """An aftershock: the rule dispatched another event for this prefecture, at this level or higher, within
    its suppression window. A stronger shake is never suppressed."""
    if rule.suppress_minutes <= 0 or not at:
        return False
    now = datetime.fromisoformat(at)
    for recent in state["recent"]:
        if recent["rule"] != rule.id or recent["event"] == key or pref not in recent["places"]:
            continue
        if recent["event"].split("|")[1] != key.split("|")[1] or not recent.get("at"):
            continue  # a drill never suppresses a real quake, nor a real one a drill
        then = datetime.fromisoformat(recent["at"])
        if timedelta(0) <= now - then <= timedelta(minutes=rule.suppress_minutes) and (
            intensity_rank(recent["places"][pref]) or 0
        ) >= (intensity_rank(level) or 0):
            return True
    return False


def _earthquake(
    report: Report,
    rules: Sequence[RuleSpec],
    people: Sequence[Person],
    state: dict[str, Any],
    drill: bool,
    identity: str,
) -> Outcome:
    key = "|".join(("earthquake", report.status, " ".join(report.event_ids)))
    if report.is_cancellation:
        return _cancel(report, state, "earthquake", drill, [key], match_serial=True)
    event = state["events"].get(key)
    if _cancelled_first(event, report):
        return _ignore(state, "earthquake", drill, "cancelled", "cancelled: its 取消 arrived first (never dispatched)")
    version = _version(report)
    type_code = report.type_code or ""
    if event is not None and _older(version, event["versions"].get(type_code)):
        if report.serial is not None and not _same_report(event, report):
            # An older Serial arriving late still says who was hit (as it would have, in order): a 取消 of the
            # newer Serial must not withdraw them. Nobody is asked by it. A 訂正'd version is not recorded.
            persons: dict[str, int] = {}
            for rule in rules:
                threshold = intensity_rank(rule.min_intensity) or 0
                prefs: set[str] = set()
                for place, value in _earthquake_places(report, rule).items():
                    rank = intensity_rank(value)
                    if rank is not None and rank >= threshold and _place_prefecture(place):
                        prefs.add(_place_prefecture(place))
                if prefs:
                    _add_people(persons, rule, people, prefs)
            event["hits"][identity] = {
                "type": type_code,
                "serial": report.serial,
                "persons": persons,
                "at": _at(report),
            }
        return _ignore(
            state, "earthquake", drill, "out_of_date", f"out of date: a newer {type_code} of this quake was applied"
        )
    if not report.intensity_by_pref and not report.cities_not_reported:
        event = _event(state, key, "earthquake", drill)
        event["versions"][type_code] = version
        event["touched"] = _at(report)
        event["hits"][identity] = {"type": type_code, "serial": report.serial, "persons": {}, "at": _at(report)}
        return _ignore(
            state,
            "earthquake",
            drill,
            "no_intensity",
            f"below the threshold: this {type_code} carries no intensities (hypocentre only or a distant quake)",
        )
    event = _event(state, key, "earthquake", drill)
    event["versions"][type_code] = version
    event["touched"] = _at(report)
    corrected = report.info_type == "訂正"
    if corrected:  # a correction replaces the version it corrects (FORMAT_NOTES §9.5)
        replaced = _same_report(event, report)
        for old in replaced:
            event["hits"].pop(old, None)
        state["recent"] = [r for r in state["recent"] if r.get("doc") not in replaced]
    hit_persons: dict[str, int] = {}
    fired: dict[int, dict[str, str]] = {}  # rule id -> {prefecture: level}
    reached_places: dict[str, str] = {}
    suppressed: list[str] = []
    below: list[str] = []
    for rule in rules:
        threshold = intensity_rank(rule.min_intensity) or 0
        places = _earthquake_places(report, rule)
        for place, value in places.items():
            rank = intensity_rank(value)
            if rank is None or rank < threshold:
                below.append(value)
                continue
            pref = _place_prefecture(place)
            if not pref:
                continue
            if _suppressed(state, rule, key, pref, value, _at(report)):
                suppressed.append(pref)
                continue
            reached_places[pref] = _max_intensity([reached_places.get(pref, ""), value])
            fired.setdefault(rule.id, {})[pref] = _max_intensity([fired.get(rule.id, {}).get(pref, ""), value])
        if rule.id in fired:
            _add_people(hit_persons, rule, people, set(fired[rule.id]))
    event["hits"][identity] = {"type": type_code, "serial": report.serial, "persons": hit_persons, "at": _at(report)}
    if not reached_places:
        if suppressed:
            quiet = ("suppressed", f"aftershock suppressed: {_names(set(suppressed))} within the rule's window")
        else:
            strongest = _max_intensity(list(report.intensity_by_pref.values()) + below)
            needed = min((r.min_intensity for r in rules), key=lambda v: intensity_rank(v) or 0)
            quiet = (
                "below_threshold",
                f"below the threshold: at most 震度{_intensity_label(strongest or '?')} where the rules look, "
                f"they need 震度{_intensity_label(needed)} or more",
            )
        outcome = _summarise(state, "earthquake", drill, [], quiet)
    else:
        outcome = _reach(
            state, key, event, "earthquake", drill, rules, fired, reached_places, hit_persons, report, identity=identity
        )
    if corrected:  # people asked only because of what the correction took back are withdrawn
        withdrawn, _count = _withdraw(event, key, "earthquake", drill, [])
        if withdrawn:
            return _summarise(state, "earthquake", drill, outcome.actions + withdrawn, ("", ""))
    return outcome


def _strongest_first(hazard: Hazard, reached: Mapping[str, str]) -> tuple[str, ...]:
    """The places hit, strongest first (then by code): the incident title names the first eight."""

    def rank(level: str) -> int:
        if hazard == "earthquake":
            return intensity_rank(level) or 0
        if hazard == "tsunami":
            return int(TSUNAMI_LEVELS.get(level, TsunamiSeverity.ADVISORY))
        return 0

    return tuple(sorted(reached, key=lambda p: (-rank(reached[p]), p)))


def _reach(
    state: dict[str, Any],
    key: str,
    event: dict[str, Any],
    hazard: Hazard,
    drill: bool,
    rules: Sequence[RuleSpec],
    fired: Mapping[int, Mapping[str, str]],
    reached_places: Mapping[str, str],
    hit_persons: Mapping[str, int],
    report: Report,
    *,
    identity: str,
    level: str | None = None,
) -> Outcome:
    """Turn the people a report hits into a dispatch (new incident) or an update (people not asked yet)."""
    new = {pid: rule for pid, rule in hit_persons.items() if pid not in event["notified"]}
    at = _at(report)
    for rule_id, places in fired.items():
        state["recent"].append({"rule": rule_id, "event": key, "doc": identity, "places": dict(places), "at": at})
    if not new:
        if not hit_persons:
            quiet = ("nobody_there", f"nobody based there: no one's REGION_CODE is in {_names(reached_places)}")
        else:
            quiet = (
                "already_notified",
                f"already notified: the {len(hit_persons)} people hit were asked earlier in this event",
            )
        return _summarise(state, hazard, drill, [], quiet)
    kind: Literal["dispatch", "update"] = "update" if event["open"] else "dispatch"
    if not event["open"]:
        event["since"] = _at(report)
    event["open"] = True
    event["notified"].update(new)
    by_rule = {r.id: r for r in rules}
    rule_ids = tuple(sorted({rule for rule in new.values()}))
    hold = min(by_rule[r].hold_minutes for r in rule_ids) if rule_ids else 0
    if level is None:
        level = _max_intensity(reached_places.values())
    action = Action(
        kind,
        f"{key}@{event['since']}",
        hazard,
        drill,
        tuple(sorted(int(p) for p in new)),
        rule_ids,
        _strongest_first(hazard, reached_places),
        level,
        hold,
        tuple(sorted(fired)),
    )
    return _summarise(state, hazard, drill, [action], ("", ""))


# --- tsunami -----------------------------------------------------------------------------------------------------


def _tsunami_key(state: Mapping[str, Any], report: Report) -> str:
    """(status, EventID); a message naming several EventIDs (satsuma2015) continues an event with one of them."""
    ids = set(report.event_ids)
    for key, event in state["events"].items():
        if event["hazard"] == "tsunami" and key.split("|")[1] == report.status and ids & set(event.get("ids", [])):
            return str(key)
    return "|".join(("tsunami", report.status, report.event_ids[0] if report.event_ids else ""))


def _tsunami(
    report: Report,
    rules: Sequence[RuleSpec],
    people: Sequence[Person],
    state: dict[str, Any],
    drill: bool,
    identity: str,
) -> Outcome:
    key = _tsunami_key(state, report)
    if report.is_cancellation:
        outcome = _cancel(report, state, "tsunami", drill, [key], match_serial=True)
        event = state["events"].get(key)
        if event is not None:
            latest = max(event["hits"].values(), key=lambda h: h.get("at", ""), default=None)
            event["in_force"] = dict(latest["snapshot"]) if latest else {}
        return outcome
    event = state["events"].get(key)
    if _cancelled_first(event, report):
        return _ignore(state, "tsunami", drill, "cancelled", "cancelled: its 取消 arrived first (never dispatched)")
    version = [-1, _at(report)]  # snapshots: the newest by time replaces the rest, whatever the type
    if event is not None and _older(version, event["versions"].get("snapshot")):
        return _ignore(
            state, "tsunami", drill, "out_of_date", "out of date: a newer tsunami message of this event was applied"
        )
    event = _event(state, key, "tsunami", drill)
    event["ids"] = sorted(set(event.get("ids", [])) | set(report.event_ids))
    event["versions"]["snapshot"] = version
    event["touched"] = _at(report)
    before: dict[str, int] = dict(event.get("in_force", {}))
    now = {coast: int(tsunami_severity(kind)) for coast, kind in report.tsunami_by_area.items()}
    event["in_force"] = {c: s for c, s in now.items() if s > 0}
    hit_persons: dict[str, int] = {}  # newly reached: asked now
    covered: dict[str, int] = {}  # everyone this snapshot keeps at a rule's level (a 取消 must not drop them)
    fired: dict[int, dict[str, str]] = {}
    reached: dict[str, str] = {}
    top = 0
    for rule in rules:
        threshold = int(TSUNAMI_LEVELS.get(rule.tsunami_level, TsunamiSeverity.WARNING))
        covering: set[str] = set()
        for coast, severity in now.items():
            prefs = set(tsunami_area_prefectures(coast))
            if rule.areas and coast not in rule.areas:
                continue
            if not rule.areas and rule.prefectures:
                # 東京湾内湾 touches 千葉・東京・神奈川: a 東京都 rule reaches only 東京都
                prefs &= rule.prefectures
            if not prefs or severity < threshold:
                continue
            covering |= prefs
            if before.get(coast, 0) >= threshold:
                continue  # already at the level (継続): no new dispatch
            top = max(top, severity)
            level = _SEVERITY_LEVEL[TsunamiSeverity(severity)]
            for pref in prefs:
                if (TSUNAMI_LEVELS.get(reached.get(pref, ""), 0)) < severity:
                    reached[pref] = level
                fired.setdefault(rule.id, {})[pref] = level
        if covering:
            _add_people(covered, rule, people, covering)
        if rule.id in fired:
            _add_people(hit_persons, rule, people, set(fired[rule.id]))
    event["hits"][identity] = {
        "type": report.type_code,
        "serial": report.serial,
        "persons": covered,
        "snapshot": event["in_force"],
        "at": _at(report),
    }
    if not reached:
        strongest = max(now.values(), default=0)
        if any(before.get(c, 0) >= s > 0 for c, s in now.items()) and strongest:
            quiet = ("continuing", "continuing: no coast newly reached a rule's level (継続 does not dispatch)")
        elif before and not event["in_force"]:
            quiet = ("lifted", "lifted: no tsunami warning or advisory remains in force (no dispatch)")
        else:
            quiet = ("below_threshold", "below the threshold: no coast in the rules' scope reached their level")
        return _summarise(state, "tsunami", drill, [], quiet)
    return _reach(
        state,
        key,
        event,
        "tsunami",
        drill,
        rules,
        fired,
        reached,
        hit_persons,
        report,
        identity=identity,
        level=_SEVERITY_LEVEL[TsunamiSeverity(top)],
    )


# --- special warnings --------------------------------------------------------------------------------------------


def _special(
    report: Report,
    rules: Sequence[RuleSpec],
    people: Sequence[Person],
    state: dict[str, Any],
    drill: bool,
    identity: str,
) -> Outcome:
    office = _office_key(report)
    # Per (kind, prefecture): municipalities in force now, and those newly issued (発表).
    in_force: dict[tuple[str, str], set[str]] = {}
    issued: dict[tuple[str, str], set[str]] = {}
    prefectures: set[str] = set()
    for area, kinds in report.special_status_by_area.items():
        pref = municipality_prefecture(area)
        if pref is None:
            continue  # coarser areas (府県予報区, 一次細分区域): the municipalities say the same, finer
        prefectures.add(pref)
        for kind, status in kinds.items():
            if status in SPECIAL_IN_FORCE:
                in_force.setdefault((kind, pref), set()).add(area)
            if status == SPECIAL_NEW:
                issued.setdefault((kind, pref), set()).add(area)
    for area in report.special_by_area:
        pref = municipality_prefecture(area)
        if pref:
            prefectures.add(pref)
    version_key = f"office:{office}"
    applied = state.setdefault("offices", {}).get(version_key)
    if _older([-1, _at(report)], applied):
        return _ignore(
            state, "special_warning", drill, "out_of_date", f"out of date: a newer warning from {office} was applied"
        )
    state["offices"][version_key] = [-1, _at(report)]
    if report.is_cancellation:
        return _ignore(
            state,
            "special_warning",
            drill,
            "cancel_unknown",
            "cancellation (取消) of a warning message: no dispatch to take back",
        )
    actions: list[Action] = []
    lifted: list[str] = []
    continuing = False
    quiet_reach: tuple[str, str] | None = None
    # Every open special-warning event of a prefecture this office covers, and every kind in force now.
    keys = {
        k
        for k, e in state["events"].items()
        if e["hazard"] == "special_warning"
        and k.split("|")[1] == report.status
        and (k.split("|")[3] in prefectures or office in e.get("offices", {}))
    }
    keys |= {"|".join(("special_warning", report.status, kind, pref)) for kind, pref in in_force}
    for key in sorted(keys):
        _h, _s, kind, pref = key.split("|")
        event = _event(state, key, "special_warning", drill)
        event["touched"] = _at(report)
        offices: dict[str, list[str]] = event.setdefault("offices", {})
        before = {m for o, ms in offices.items() for m in ms}
        now = in_force.get((kind, pref), set())
        offices[office] = sorted(now)
        if not any(offices.values()):
            lifted.append(f"{SPECIAL_WARNING_KINDS.get(kind, kind)} {_names([pref])}")
            del state["events"][key]  # lifted: the next 発表 opens a new incident
            continue
        newly = issued.get((kind, pref), set()) - before
        if now and not newly:
            continuing = True
        hit_persons: dict[str, int] = {}
        fired: dict[int, dict[str, str]] = {}
        for rule in rules:
            if rule.special_kinds and kind not in rule.special_kinds:
                continue
            if rule.areas:
                hits = newly & rule.areas
            elif rule.prefectures and pref not in rule.prefectures:
                hits = set()
            else:
                hits = newly
            if not hits:
                continue
            fired[rule.id] = {pref: kind}
            _add_people(hit_persons, rule, people, {pref})
        if not fired:
            continue
        event["hits"][identity] = {"type": report.type_code, "serial": None, "persons": hit_persons}
        outcome = _reach(
            state,
            key,
            event,
            "special_warning",
            drill,
            rules,
            fired,
            {pref: kind},
            hit_persons,
            report,
            identity=identity,
            level=kind,
        )
        actions.extend(outcome.actions)
        if not outcome.actions:
            quiet_reach = (outcome.reason_code, outcome.reason)
    if actions:
        return _summarise(state, "special_warning", drill, actions, ("", ""))
    if quiet_reach is not None:
        quiet = quiet_reach
    elif lifted and not in_force:
        quiet = ("lifted", f"lifted: {', '.join(lifted)} (no dispatch)")
    elif continuing:
        quiet = (
            "continuing",
            "continuing: no municipality newly came under a special warning (継続 does not dispatch)",
        )
    elif in_force:
        quiet = (
            "below_threshold",
            "below the threshold: the special warnings in force are outside the rules' kinds or places",
        )
    else:
        quiet = ("below_threshold", "below the threshold: no special warning (特別警報) is in force in this message")
    return _summarise(state, "special_warning", drill, [], quiet)


# --- verify (検証) -------------------------------------------------------------------------------------------------


def synthetic_report(hazard: Hazard, area: str, level: str) -> Report:
    """A made-up 通常 report of `hazard` at `level` in `area` (a prefecture, 細分区域, coast or municipality),
    so "who would receive it?" runs through the very same decision as a real report."""
    base: dict[str, Any] = {
        "status": "通常",
        "editorial_office": "verify",
        "publishing_office": "verify",
        "control_datetime": None,
        "head_title": "verify",
        "info_type": "発表",
        "info_kind": "",
        "event_ids": ["verify"],
        "serial": 1,
        "report_datetime": None,
        "target_datetime": None,
        "headline": "",
    }
    if hazard == "earthquake":
        if intensity_rank(level) is None:
            raise ValueError(f"unknown intensity {level!r}; expected one of {INTENSITY_ORDER}")
        if area in PREFECTURES:
            by_pref, by_area = {area: level}, {}
        elif area in EARTHQUAKE_AREAS:
            by_pref, by_area = {EARTHQUAKE_AREAS[area][1]: level}, {area: level}
        else:
            raise ValueError(f"unknown prefecture or 細分区域 {area!r}")
        return Report(
            title="震源・震度に関する情報",
            kind="earthquake",
            type_code="VXSE53",
            max_intensity=level,
            intensity_by_pref=by_pref,
            intensity_by_area=by_area,
            **base,
        )
    if hazard == "tsunami":
        kind = {"advisory": "62", "warning": "51", "major": "52"}.get(level)
        if kind is None:
            raise ValueError(f"unknown tsunami level {level!r}")
        if area in TSUNAMI_AREAS:
            coasts = {area: kind}
        elif area in PREFECTURES:
            coasts = {c: kind for c in TSUNAMI_AREAS if area in tsunami_area_prefectures(c)}
            if not coasts:
                raise ValueError(f"{PREFECTURES[area].ja} has no coast (津波予報区)")
        else:
            raise ValueError(f"unknown coast or prefecture {area!r}")
        return Report(
            title="津波警報・注意報・予報a", kind="tsunami", type_code="VTSE41", tsunami_by_area=coasts, **base
        )
    if level not in SPECIAL_WARNING_KINDS:
        raise ValueError(f"unknown special-warning kind {level!r}")
    from safety.jma.codes import MUNICIPALITIES

    if area in PREFECTURES:
        areas = [m for m in MUNICIPALITIES if m[:2] == area]
    elif area in MUNICIPALITIES:
        areas = [area]
    else:
        raise ValueError(f"unknown prefecture or municipality {area!r}")
    statuses = {m: {level: SPECIAL_NEW} for m in areas}
    return Report(
        title="気象特別警報・警報・注意報",
        kind="weather",
        type_code="VPWW53",
        special_by_area={m: [level] for m in areas},
        special_status_by_area=statuses,
        **base,
    )
