"""Parse JMA 防災情報XML messages and Atom PULL feeds into typed, immutable values. Pure: no ORM, no I/O.

Everything that arrives is hostile until proven otherwise: the bytes are size-checked and decoded as UTF-8 here
(a BOM is allowed, a declaration naming another encoding is refused), the XML is parsed with defusedxml with DTDs,
entities and external references forbidden, and elements are matched by namespace URI and by code, never by prefix
or display name. All element text is trimmed. Any failure is a `JmaParseError` whose message says why.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # only for the Element type and ParseError; parsing is defusedxml
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

from safety.jma.codes import SPECIAL_WARNING_KINDS, SPECIAL_WARNING_STATUSES

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "FeedEntry",
    "JmaParseError",
    "Kind",
    "Report",
    "parse_feed",
    "parse_report",
]

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024  # real messages are < 1 MB; a 350-entry feed is ~200 KB

NS_JMX = "http://xml.kishou.go.jp/jmaxml1/"
NS_HEAD = "http://xml.kishou.go.jp/jmaxml1/informationBasis1/"
NS_SEIS = "http://xml.kishou.go.jp/jmaxml1/body/seismology1/"
NS_METE = "http://xml.kishou.go.jp/jmaxml1/body/meteorology1/"
NS_EB = "http://xml.kishou.go.jp/jmaxml1/elementBasis1/"
NS_ATOM = "http://www.w3.org/2005/Atom"
BODY_NAMESPACES = (NS_SEIS, NS_METE)

Kind = Literal["earthquake", "eew", "tsunami", "weather", "other"]

# Control/Title (exact strings, FORMAT_NOTES §2) -> JMA type code.
TITLE_TYPE_CODES: dict[str, str] = {
    "震度速報": "VXSE51",
    "震源に関する情報": "VXSE52",
    "震源・震度に関する情報": "VXSE53",
    "緊急地震速報配信テスト": "VXSE42",
    "緊急地震速報（警報）": "VXSE43",
    "緊急地震速報（予報）": "VXSE44",
    "緊急地震速報（地震動予報）": "VXSE45",
    "津波警報・注意報・予報a": "VTSE41",
    "津波情報a": "VTSE51",
    "沖合の津波観測に関する情報": "VTSE52",
    "気象警報・注意報": "VPWW50",
    "気象特別警報・警報・注意報": "VPWW53",
    "気象警報・注意報（Ｈ２７）": "VPWW54",
    "気象警報・注意報（Ｒ０６）（大雨）": "VPWW55",
    "気象警報・注意報（Ｒ０６）（土砂）": "VPWW56",
    "気象特別警報報知": "VPNO50",
}
# The other R06 per-hazard titles (高潮, 暴風, …) are weather warnings too; their type code is not in our fixtures.
R06_TITLE_PREFIX = "気象警報・注意報（Ｒ０６）"

TYPE_KINDS: dict[str, Kind] = {
    "VXSE51": "earthquake",
    "VXSE52": "earthquake",
    "VXSE53": "earthquake",
    "VXSE42": "eew",
    "VXSE43": "eew",
    "VXSE44": "eew",
    "VXSE45": "eew",
    "VTSE41": "tsunami",
    "VTSE51": "tsunami",
    "VTSE52": "tsunami",
    "VPNO50": "weather",
}

_DECLARATION = re.compile(rb"^\s*<\?xml\b([^>]*)\?>")
_DECLARED_ENCODING = re.compile(rb"""\bencoding\s*=\s*["']([A-Za-z0-9._:-]*)["']""")
_UTF8_NAMES = frozenset({"utf-8", "utf8"})


class JmaParseError(Exception):
    """The bytes are not a JMA message (or feed) we can trust; `str(error)` says why, for people and logs."""


@dataclass(frozen=True)
class Report:
    """One parsed JMA message: Control, Head, and the Body parts the dispatcher needs, all text trimmed."""

    title: str  # Control/Title
    status: str  # Control/Status: 通常 / 訓練 / 試験
    editorial_office: str
    publishing_office: str
    control_datetime: datetime | None  # Control/DateTime (UTC)
    head_title: str
    info_type: str  # Head/InfoType: 発表 / 訂正 / 取消 (/ 遅延)
    info_kind: str
    event_ids: list[str]  # Head/EventID split on white space
    serial: int | None  # Head/Serial, None when empty
    kind: Kind
    type_code: str | None  # VXSE53, VTSE41, … derived from Control/Title; None when unknown
    report_datetime: datetime | None
    target_datetime: datetime | None
    headline: str  # Head/Headline/Text
    max_intensity: str | None = None  # Body/Intensity/Observation/MaxInt
    intensity_by_pref: dict[str, str] = field(default_factory=dict)
    intensity_by_area: dict[str, str] = field(default_factory=dict)
    intensity_by_city: dict[str, str] = field(default_factory=dict)
    cities_not_reported: list[str] = field(default_factory=list)  # City/Code with Condition 震度５弱以上未入電
    areas_not_reported: list[str] = field(default_factory=list)  # Area/Code of those cities
    tsunami_by_area: dict[str, str] = field(default_factory=dict)
    special_by_area: dict[str, list[str]] = field(default_factory=dict)
    # Every 特別警報 kind named in Body/Warning/Item/Kind per area code, with its Status (発表, 継続, 解除,
    # 特別警報から警報, …): what the dispatcher needs to tell a new issue from a continuation and a lifting.
    special_status_by_area: dict[str, dict[str, str]] = field(default_factory=dict)
    origin_time: datetime | None = None
    epicenter_name: str = ""
    epicenter_code: str = ""
    coordinate: str = ""  # ISO 6709-like text, e.g. +37.5+137.3-16000/
    coordinate_description: str = ""  # e.g. 北緯３７．５度　東経１３７．３度　深さ　１６ｋｍ
    magnitude: str = ""  # text of jmx_eb:Magnitude, "NaN" when undetermined
    magnitude_type: str = ""  # Mj / M
    magnitude_description: str = ""  # e.g. Ｍ７．６, Ｍ不明
    body_text: str = ""  # Body/Text (e.g. the reason of a 取消)

    @property
    def is_real(self) -> bool:
        """Only 通常 messages may trigger a real dispatch; 訓練 and 試験 never do."""
        return self.status == "通常"

    @property
    def is_cancellation(self) -> bool:
        return self.info_type == "取消"

    @property
    def identity(self) -> tuple[str, str, tuple[str, ...], int | None, str, str]:
        """Content fallback for de-duplication (FORMAT_NOTES §9.1) when the document URL is not known."""
        return (
            self.title,
            self.status,
            tuple(self.event_ids),
            self.serial,
            self.info_type,
            self.report_datetime.isoformat() if self.report_datetime else "",
        )

    def inspect_dict(self, file: str) -> dict[str, Any]:
        """The stable `jma_inspect` line for this report: exactly these keys, in this order."""
        return {
            "file": file,
            "title": self.title,
            "status": self.status,
            "info_type": self.info_type,
            "event_ids": list(self.event_ids),
            "serial": self.serial,
            "kind": self.kind,
            "max_intensity": self.max_intensity,
            "intensity_by_pref": dict(self.intensity_by_pref),
            "intensity_by_area": dict(self.intensity_by_area),
            "tsunami_by_area": dict(self.tsunami_by_area),
            "special_by_area": {code: list(kinds) for code, kinds in self.special_by_area.items()},
        }


@dataclass(frozen=True)
class FeedEntry:
    """One Atom entry of a JMA PULL feed. `link` is the document URL (link/@href, never the entry id)."""

    title: str
    updated: datetime
    link: str
    author: str
    content: str


# --- bytes to element tree -------------------------------------------------------------------------------------------


def _load(raw: bytes, *, what: str) -> ET.Element:
    """Size-check, decode and safely parse `raw`; return the root element or raise JmaParseError."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise JmaParseError(f"{what} must be bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise JmaParseError(f"{what} is too large: {len(raw)} bytes, the limit is {MAX_DOCUMENT_BYTES} bytes")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise JmaParseError(f"{what} is empty")
    try:
        raw.decode("utf-8")  # the check only: expat then reads the same bytes as UTF-8
    except UnicodeDecodeError as exc:
        raise JmaParseError(
            f"{what} is not valid UTF-8 (byte {exc.start}); JMA XML is always UTF-8, whatever it declares"
        ) from None
    declaration = _DECLARATION.match(raw)
    if declaration:
        encoding = _DECLARED_ENCODING.search(declaration.group(1))
        if encoding:
            declared = encoding.group(1).decode("ascii", "replace")
            if declared.lower() not in _UTF8_NAMES:
                raise JmaParseError(
                    f"encoding mismatch: {what} declares encoding {declared!r} but JMA XML is UTF-8; refusing to guess"
                )
    try:
        root = _defused_fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise JmaParseError(
            f"{what} contains a forbidden construct ({type(exc).__name__}): DTDs, entity declarations and external "
            "references are refused (XXE / entity expansion)"
        ) from None
    except ET.ParseError as exc:
        raise JmaParseError(f"{what} is not well-formed XML: {exc}") from None
    except (ValueError, UnicodeError, RecursionError) as exc:  # expat oddities on hostile input
        raise JmaParseError(f"{what} could not be parsed: {exc}") from None
    if not isinstance(root, ET.Element):
        raise JmaParseError(f"{what} has no root element")
    return root


# --- element helpers -------------------------------------------------------------------------------------------------


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _child(parent: ET.Element | None, ns: str, *path: str) -> ET.Element | None:
    node = parent
    for tag in path:
        if node is None:
            return None
        node = node.find(_q(ns, tag))
    return node


def _children(parent: ET.Element | None, ns: str, tag: str) -> list[ET.Element]:
    return [] if parent is None else parent.findall(_q(ns, tag))


def _text(node: ET.Element | None) -> str:
    return "" if node is None or node.text is None else node.text.strip()


def _ctext(parent: ET.Element | None, ns: str, *path: str) -> str:
    return _text(_child(parent, ns, *path))


def _datetime(value: str, *, where: str) -> datetime | None:
    """An ISO 8601 datetime from JMA (with `Z` or an offset) as an aware datetime; None when empty."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise JmaParseError(f"{where} is not an ISO 8601 date-time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise JmaParseError(f"{where} has no time zone: {value[:40]!r}")
    return parsed


def _type_code(title: str) -> str | None:
    return TITLE_TYPE_CODES.get(title)


def _kind(type_code: str | None, title: str) -> Kind:
    if type_code is None:
        return "weather" if title.startswith(R06_TITLE_PREFIX) else "other"
    if type_code.startswith("VPWW5"):
        return "weather"
    return TYPE_KINDS.get(type_code, "other")


# --- body parts ------------------------------------------------------------------------------------------------------


def _intensity(
    body: ET.Element | None,
) -> tuple[str | None, dict[str, str], dict[str, str], dict[str, str], list[str], list[str]]:
    observation = _child(body, NS_SEIS, "Intensity", "Observation")
    if observation is None:
        return None, {}, {}, {}, [], []
    by_pref: dict[str, str] = {}
    by_area: dict[str, str] = {}
    by_city: dict[str, str] = {}
    not_reported: list[str] = []
    areas_not_reported: list[str] = []
    for pref in _children(observation, NS_SEIS, "Pref"):
        code = _ctext(pref, NS_SEIS, "Code")
        value = _ctext(pref, NS_SEIS, "MaxInt")
        if code and value:
            by_pref[code] = value
        for area in _children(pref, NS_SEIS, "Area"):
            area_code = _ctext(area, NS_SEIS, "Code")
            area_value = _ctext(area, NS_SEIS, "MaxInt")
            if area_code and area_value:
                by_area[area_code] = area_value
            for city in _children(area, NS_SEIS, "City"):
                city_code = _ctext(city, NS_SEIS, "Code")
                city_value = _ctext(city, NS_SEIS, "MaxInt")
                if city_code and city_value:
                    by_city[city_code] = city_value
                if city_code and _ctext(city, NS_SEIS, "Condition") == "震度５弱以上未入電":
                    not_reported.append(city_code)
                    if area_code and area_code not in areas_not_reported:
                        areas_not_reported.append(area_code)
    max_int = _ctext(observation, NS_SEIS, "MaxInt") or None
    return max_int, by_pref, by_area, by_city, not_reported, areas_not_reported


def _tsunami(body: ET.Element | None) -> dict[str, str]:
    forecast = _child(body, NS_SEIS, "Tsunami", "Forecast")
    result: dict[str, str] = {}
    for item in _children(forecast, NS_SEIS, "Item"):
        code = _ctext(item, NS_SEIS, "Area", "Code")
        kind = _ctext(item, NS_SEIS, "Category", "Kind", "Code")
        if code and kind:
            result[code] = kind
    return result


def _item_areas(item: ET.Element) -> Iterator[ET.Element]:
    yield from _children(item, NS_METE, "Area")
    for areas in _children(item, NS_METE, "Areas"):
        yield from _children(areas, NS_METE, "Area")


def _special(body: ET.Element | None) -> dict[str, list[str]]:
    """Special warnings in force per area code, from every Body/Warning block (Item/Kind only, never NextKinds)."""
    found: dict[str, set[str]] = {}
    for warning in _children(body, NS_METE, "Warning"):
        for item in _children(warning, NS_METE, "Item"):
            kinds = {
                _ctext(kind, NS_METE, "Code")
                for kind in _children(item, NS_METE, "Kind")
                if _ctext(kind, NS_METE, "Code") in SPECIAL_WARNING_KINDS
                and _ctext(kind, NS_METE, "Status") in SPECIAL_WARNING_STATUSES
            }
            if not kinds:
                continue
            for area in _item_areas(item):
                code = _ctext(area, NS_METE, "Code")
                if code:
                    found.setdefault(code, set()).update(kinds)
    return {code: sorted(kinds) for code, kinds in sorted(found.items())}


def _special_statuses(body: ET.Element | None) -> dict[str, dict[str, str]]:
    """Per area code, the Status of every 特別警報 kind its Item/Kind names (never NextKinds or Significancy)."""
    found: dict[str, dict[str, str]] = {}
    for warning in _children(body, NS_METE, "Warning"):
        for item in _children(warning, NS_METE, "Item"):
            kinds = {
                _ctext(kind, NS_METE, "Code"): _ctext(kind, NS_METE, "Status")
                for kind in _children(item, NS_METE, "Kind")
                if _ctext(kind, NS_METE, "Code") in SPECIAL_WARNING_KINDS
            }
            if not kinds:
                continue
            for area in _item_areas(item):
                code = _ctext(area, NS_METE, "Code")
                if code:
                    found.setdefault(code, {}).update(kinds)
    return {code: dict(sorted(kinds.items())) for code, kinds in sorted(found.items())}


def _first(nodes: Iterable[ET.Element | None]) -> ET.Element | None:
    for node in nodes:
        if node is not None:
            return node
    return None


# --- public API ------------------------------------------------------------------------------------------------------


def parse_report(raw: bytes) -> Report:
    """Parse one JMA message. Raises JmaParseError for anything that is not a well-formed, safe JMA Report."""
    root = _load(raw, what="the document")
    if root.tag != _q(NS_JMX, "Report"):
        raise JmaParseError(f"not a JMA report: the root element is {root.tag!r}, expected {{{NS_JMX}}}Report")
    control = _child(root, NS_JMX, "Control")
    head = _child(root, NS_HEAD, "Head")
    body = _first(_child(root, ns, "Body") for ns in BODY_NAMESPACES)
    missing = [name for name, node in (("Control", control), ("Head", head), ("Body", body)) if node is None]
    if missing:
        raise JmaParseError(f"not a JMA report: missing {', '.join(missing)} (namespace-qualified)")

    title = _ctext(control, NS_JMX, "Title")
    status = _ctext(control, NS_JMX, "Status")
    if not title or not status:
        raise JmaParseError("not a JMA report: Control/Title or Control/Status is empty")
    serial_text = _ctext(head, NS_HEAD, "Serial")
    try:
        serial = int(serial_text) if serial_text else None
    except ValueError:
        raise JmaParseError(f"Head/Serial is not an integer: {serial_text[:40]!r}") from None

    type_code = _type_code(title)
    kind = _kind(type_code, title)
    max_int, by_pref, by_area, by_city, not_reported, areas_not_reported = (
        _intensity(body) if kind == "earthquake" else (None, {}, {}, {}, [], [])
    )

    earthquake = _child(body, NS_SEIS, "Earthquake")
    hypo_area = _child(earthquake, NS_SEIS, "Hypocenter", "Area")
    coordinate = _child(hypo_area, NS_EB, "Coordinate")
    magnitude = _child(earthquake, NS_EB, "Magnitude")
    epicenter_code = next(
        (
            _text(code)
            for code in _children(hypo_area, NS_SEIS, "Code")
            if code.get("type", "").strip() in ("", "震央地名")
        ),
        "",
    )
    return Report(
        title=title,
        status=status,
        editorial_office=_ctext(control, NS_JMX, "EditorialOffice"),
        publishing_office=_ctext(control, NS_JMX, "PublishingOffice"),
        control_datetime=_datetime(_ctext(control, NS_JMX, "DateTime"), where="Control/DateTime"),
        head_title=_ctext(head, NS_HEAD, "Title"),
        info_type=_ctext(head, NS_HEAD, "InfoType"),
        info_kind=_ctext(head, NS_HEAD, "InfoKind"),
        event_ids=_ctext(head, NS_HEAD, "EventID").split(),
        serial=serial,
        kind=kind,
        type_code=type_code,
        report_datetime=_datetime(_ctext(head, NS_HEAD, "ReportDateTime"), where="Head/ReportDateTime"),
        target_datetime=_datetime(_ctext(head, NS_HEAD, "TargetDateTime"), where="Head/TargetDateTime"),
        headline=_ctext(head, NS_HEAD, "Headline", "Text"),
        max_intensity=max_int,
        intensity_by_pref=by_pref,
        intensity_by_area=by_area,
        intensity_by_city=by_city,
        cities_not_reported=not_reported,
        areas_not_reported=areas_not_reported,
        tsunami_by_area=_tsunami(body) if kind == "tsunami" else {},
        special_by_area=_special(body) if kind == "weather" else {},
        special_status_by_area=_special_statuses(body) if kind == "weather" else {},
        origin_time=_datetime(_ctext(earthquake, NS_SEIS, "OriginTime"), where="Body/Earthquake/OriginTime"),
        epicenter_name=_ctext(hypo_area, NS_SEIS, "Name"),
        epicenter_code=epicenter_code,
        coordinate=_text(coordinate),
        coordinate_description=(coordinate.get("description", "") if coordinate is not None else "").strip(),
        magnitude=_text(magnitude),
        magnitude_type=(magnitude.get("type", "") if magnitude is not None else "").strip(),
        magnitude_description=(magnitude.get("description", "") if magnitude is not None else "").strip(),
        body_text=_ctext(body, NS_SEIS, "Text") or _ctext(body, NS_METE, "Text"),
    )


def parse_feed(raw: bytes) -> list[FeedEntry]:
    """Parse a JMA Atom PULL feed (eqvol.xml, extra.xml, …) into its entries, in feed order."""
    root = _load(raw, what="the feed")
    if root.tag != _q(NS_ATOM, "feed"):
        raise JmaParseError(f"not an Atom feed: the root element is {root.tag!r}, expected {{{NS_ATOM}}}feed")
    entries: list[FeedEntry] = []
    for position, entry in enumerate(_children(root, NS_ATOM, "entry"), start=1):
        link = _first(
            node for node in _children(entry, NS_ATOM, "link") if node.get("rel", "alternate").strip() == "alternate"
        )
        href = (link.get("href", "") if link is not None else "").strip()
        updated = _datetime(_ctext(entry, NS_ATOM, "updated"), where=f"feed entry {position} updated")
        if not href or updated is None:
            raise JmaParseError(f"feed entry {position} has no link/@href or no updated time")
        entries.append(
            FeedEntry(
                title=_ctext(entry, NS_ATOM, "title"),
                updated=updated,
                link=href,
                author=_ctext(entry, NS_ATOM, "author", "name"),
                content=_ctext(entry, NS_ATOM, "content"),
            )
        )
    return entries
