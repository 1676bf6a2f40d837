"""Event streams and event types owned by the safety app.

`jma.all`: every JMA report as it is stored (public data; readable by crisis managers, safety administrators
and managers of any organisation). The stream name is also the channel-layer group name.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict
from zoneinfo import ZoneInfo

from django.http import Http404

from directory.models import Role, User
from directory.regions import PREFECTURES
from safety.jma.code_tables import MUNICIPALITIES, TSUNAMI_AGGREGATES, TSUNAMI_AREAS
from safety.jma.codes import SPECIAL_WARNING_KINDS, intensity_rank, tsunami_severity
from safety.models import JmaDocument

JMA_GROUP = "jma.all"
JMA_REPORT: Literal["jma.report"] = "jma.report"
JMA_SNAPSHOT_SIZE = 30
JMA_READER_ROLES = (Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER)


JST = ZoneInfo("Asia/Tokyo")
INTENSITY_LABELS = {
    "ja": {"5-": "5弱", "5+": "5強", "6-": "6弱", "6+": "6強"},
    "en": {"5-": "5 Lower", "5+": "5 Upper", "6-": "6 Lower", "6+": "6 Upper"},
}
TSUNAMI_KIND_NAMES = {
    "00": "津波なし",
    "50": "警報解除",
    "51": "津波警報",
    "52": "大津波警報",
    "53": "大津波警報：発表",
    "60": "津波注意報解除",
    "62": "津波注意報",
    "71": "津波予報（若干の海面変動）",
    "72": "津波予報（若干の海面変動）",
    "73": "津波予報（若干の海面変動）",
}


class PrefIntensity(TypedDict):
    code: str
    name: str
    rank: int  # 1 for intensity 1 … 9 for intensity 7 (CSS classes int-1 … int-9)
    label: str


class TsunamiArea(TypedDict):
    code: str
    name: str
    kind: str
    kind_name: str
    severity: str  # none / advisory / warning / major


class SpecialArea(TypedDict):
    code: str
    name: str
    kinds: list[str]


class JmaReportData(TypedDict):
    id: int
    title: str
    status: str
    info_type: str
    kind: str
    type_code: str
    report_datetime: str | None
    headline: str
    epicenter: str | None
    magnitude: str | None
    max_intensity: str | None
    intensity_by_pref: dict[str, str]
    tsunami_by_area: dict[str, str]
    special_by_area: dict[str, list[str]]
    is_drill: bool
    # For display: local time, labels and names from the code tables, strongest first.
    report_time: str
    max_intensity_label: str
    prefs: list[PrefIntensity]
    tsunami: list[TsunamiArea]
    special: list[SpecialArea]


def intensity_label(value: str, language: str = "ja") -> str:
    return INTENSITY_LABELS.get(language, INTENSITY_LABELS["ja"]).get(value, value)


def _prefs(by_pref: dict[str, str], language: str) -> list[PrefIntensity]:
    rows: list[PrefIntensity] = []
    for code, value in by_pref.items():
        pref = PREFECTURES.get(code)
        name = (pref.en if language == "en" else pref.ja) if pref else code
        rank = intensity_rank(value)
        rows.append(
            {
                "code": code,
                "name": name,
                "rank": rank + 1 if rank is not None else 0,
                "label": intensity_label(value, language),
            }
        )
    return sorted(rows, key=lambda r: (-r["rank"], r["code"]))


def _tsunami(by_area: dict[str, str]) -> list[TsunamiArea]:
    rows: list[TsunamiArea] = []
    for code, kind in by_area.items():
        name = TSUNAMI_AREAS.get(code) or (TSUNAMI_AGGREGATES[code][0] if code in TSUNAMI_AGGREGATES else code)
        severity = tsunami_severity(kind)
        rows.append(
            {
                "code": code,
                "name": name,
                "kind": kind,
                "kind_name": TSUNAMI_KIND_NAMES.get(kind, kind),
                "severity": severity.name.lower(),
            }
        )
    return sorted(rows, key=lambda r: (-tsunami_severity(r["kind"]), r["code"]))


def _special(by_area: dict[str, list[str]]) -> list[SpecialArea]:
    return [
        {
            "code": code,
            "name": MUNICIPALITIES.get(code, code),
            "kinds": [SPECIAL_WARNING_KINDS.get(k, k) for k in kinds],
        }
        for code, kinds in sorted(by_area.items())
    ]


def report_data(doc: JmaDocument, *, language: str = "ja") -> JmaReportData:
    """The one shape of a report for the live event, the snapshot and the page. Live events use Japanese names."""
    summary: dict[str, Any] = doc.summary or {}
    by_pref = dict(summary.get("intensity_by_pref") or {})
    by_area = dict(summary.get("tsunami_by_area") or {})
    special = {k: list(v) for k, v in (summary.get("special_by_area") or {}).items()}
    max_intensity = summary.get("max_intensity")
    return {
        "id": doc.id,
        "title": doc.title,
        "status": doc.status,
        "info_type": doc.info_type,
        "kind": doc.kind,
        "type_code": doc.type_code,
        "report_datetime": doc.report_datetime.isoformat() if doc.report_datetime else None,
        "headline": doc.headline,
        "epicenter": summary.get("epicenter_name") or None,
        "magnitude": summary.get("magnitude") or None,
        "max_intensity": summary.get("max_intensity"),
        "intensity_by_pref": by_pref,
        "tsunami_by_area": by_area,
        "special_by_area": special,
        "is_drill": doc.is_drill,
        "report_time": doc.report_datetime.astimezone(JST).strftime("%Y-%m-%d %H:%M") if doc.report_datetime else "",
        "max_intensity_label": intensity_label(max_intensity, language) if max_intensity else "",
        "prefs": _prefs(by_pref, language),
        "tsunami": _tsunami(by_area),
        "special": _special(special),
    }


def report_list(*, limit: int = JMA_SNAPSHOT_SIZE, language: str = "ja") -> list[JmaReportData]:
    """The latest reports, newest first by arrival."""
    docs = JmaDocument.objects.defer("raw").order_by("-received_at", "-id")[:limit]
    return [report_data(doc, language=language) for doc in docs]


def can_read_reports(user: User) -> bool:
    """JMA reports are public data, shown to the people who run the response in any organisation."""
    return user.has_role(*JMA_READER_ROLES)


def jma_stream_access(user: User, key: str) -> str:
    if key != "all" or not can_read_reports(user):
        raise Http404
    return JMA_GROUP


def jma_stream_snapshot(user: User, key: str) -> dict[str, object]:
    return {"reports": report_list(limit=JMA_SNAPSHOT_SIZE, language=user.language)}


# --- Safety confirmation events ---------------------------------------------------------------------------
# On the organisation stream (`org.<id>`): an incident opened, was sent, changed status or was completed.
# Pages refetch what concerns them (the person's own open requests, the directory badges); the event carries
# no recipients, so it tells nobody who was asked.
INCIDENT_CHANGED: Literal["safety.incident"] = "safety.incident"
# On the person's own stream (`user.<id>`): their answer was recorded (from any device, or by proxy).
ANSWER_RECORDED: Literal["safety.answered"] = "safety.answered"


class IncidentEventData(TypedDict):
    id: int
    title: str
    status: str
    is_drill: bool
    dispatch: int | None


class AnswerEventData(TypedDict):
    incident_id: int
    status: str
    needs_help: bool
    answered_at: str
    source: str


# On the organisation stream: an instruction (対策指示) was posted to an incident. Like INCIDENT_CHANGED it carries
# no text and no recipients: the pages of the people asked fetch it (`/api/safety/mine/<id>/`); the boards get
# the instruction itself on their own streams (safety/board.py).
INSTRUCTION_POSTED: Literal["safety.instruction"] = "safety.instruction"


class InstructionEventData(TypedDict):
    incident_id: int
    id: int


# --- The live board (safety/board.py) ------------------------------------------------------------------------------
# Streams `board.<incident>` (the whole incident) and `board.<incident>-<department>` (that department's subtree).
# `board.tally` carries the board's absolute numbers (board_view), sent by the incident's ticker, not per change;
# `board.instruction` an instruction posted to the incident.
BOARD_TALLY: Literal["board.tally"] = "board.tally"
BOARD_INSTRUCTION: Literal["board.instruction"] = "board.instruction"


def board_group(incident_id: int, department_id: int | None = None) -> str:
    return f"board.{incident_id}" if department_id is None else f"board.{incident_id}-{department_id}"


class InstructionData(TypedDict):
    id: int
    incident_id: int
    body: str
    author: str
    created_at: str
