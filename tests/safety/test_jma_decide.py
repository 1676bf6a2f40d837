"""What `safety.jma.decide.decide` makes of real JMA sequences, step by step (FORMAT_NOTES §9 and issue 8).

Pure tests: no database, plain RuleSpec and Person values. The messages are the shared fixtures
(../shared/fixtures/jma; outside CI a missing folder skips these tests, in CI it fails them), our reduced
reconstruction of the Noto 2024 VXSE53 (tests/safety/jma/), and a few variants made here from real bytes: the
取消 JMA would send for a message, a 訓練 message as if it were 通常, a special warning issued again.

People: person N (login pNN) is based in prefecture N, so `new=(3, 4, 7)` reads "the people of 岩手県, 宮城県
and 福島県". Persons 100-102 have no region; only "chosen" rules reach them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from safety.jma.codes import earthquake_area_prefecture, intensity_rank
from safety.jma.decide import Outcome, Person, RuleSpec, decide
from safety.jma.parser import Report, parse_report
from tests.services import shared_fixtures

OWN = Path(__file__).resolve().parent / "jma"
NOTO_VXSE53 = OWN / "noto2024_vxse53_serial2_reconstructed.xml"

PEOPLE = tuple(Person(n, f"p{n:02d}", f"{n:02d}") for n in range(1, 48)) + tuple(
    Person(n, f"chosen{n}", "") for n in (100, 101, 102)
)


# --- documents ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    """One message of a sequence: a label for the test output and how to get its bytes (read lazily, so that a
    missing fixtures folder skips at run time, not at collection)."""

    label: str
    raw: Callable[[], bytes]
    change: Callable[[Report], Report] | None = None

    def report(self) -> Report:
        report = parse_report(self.raw())
        return self.change(report) if self.change else report


def shared(slug: str) -> Doc:
    """A shared fixture by its slug (the file name before `__`)."""

    def raw() -> bytes:
        found = sorted(shared_fixtures("jma").glob(f"*/{slug}__*.xml"))
        assert len(found) == 1, f"{slug!r} names {len(found)} shared fixtures"
        return found[0].read_bytes()

    return Doc(slug, raw)


def own(path: Path) -> Doc:
    return Doc(path.stem, path.read_bytes)


def _edit(raw: bytes, *substitutions: tuple[str, str]) -> bytes:
    text = raw.decode("utf-8")
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.S)
        assert count == 1, f"{pattern!r} not found"
    return text.encode("utf-8")


def cancellation(doc: Doc, at: str) -> Doc:
    """The 取消 JMA sends for `doc`: same Title, EventID and Serial (FORMAT_NOTES §3), a later ReportDateTime, and a
    Body holding only a Text (the shape of iwatemiyagi2008_vxse52_CANCEL and vxse51_CANCEL_2022)."""
    return Doc(
        f"取消 of {doc.label}",
        lambda: _edit(
            doc.raw(),
            (r"<InfoType>発表</InfoType>", "<InfoType>取消</InfoType>"),
            (r"<ReportDateTime>[^<]*</ReportDateTime>", f"<ReportDateTime>{at}</ReportDateTime>"),
            (r"(<Body\b[^>]*>).*(</Body>)", r"\1<Text>先ほどの情報を取り消します。</Text>\2"),
        ),
    )


def as_status(doc: Doc, status: str) -> Doc:
    return Doc(
        f"{doc.label} as {status}", lambda: _edit(doc.raw(), (r"<Status>[^<]*</Status>", f"<Status>{status}</Status>"))
    )


def issued_again(doc: Doc, at: str) -> Doc:
    return Doc(
        f"{doc.label} issued again at {at}",
        lambda: _edit(doc.raw(), (r"<ReportDateTime>[^<]*</ReportDateTime>", f"<ReportDateTime>{at}</ReportDateTime>")),
    )


def without_prefecture(doc: Doc, pref: str) -> Doc:
    """`doc` as if every station of `pref` had failed to report except the 未入電 notes of its cities: the parsed
    report without that prefecture's reported intensities (its cities_not_reported stay)."""

    def change(report: Report) -> Report:
        areas = {code: v for code, v in report.intensity_by_area.items() if earthquake_area_prefecture(code) != pref}
        return dataclasses.replace(
            report,
            intensity_by_pref={p: v for p, v in report.intensity_by_pref.items() if p != pref},
            intensity_by_area=areas,
            intensity_by_city={c: v for c, v in report.intensity_by_city.items() if c[:2] != pref},
        )

    return Doc(f"{doc.label} without {pref}'s intensities", doc.raw, change)


# --- fixtures by name ----------------------------------------------------------------------------------------------

IWATEMIYAGI_52 = shared("iwatemiyagi2008_vxse52_hypocenter")
IWATEMIYAGI_53_1 = shared("iwatemiyagi2008_vxse53_serial1_max6plus_19prefs")
IWATEMIYAGI_52_CANCEL = shared("iwatemiyagi2008_vxse52_CANCEL")
IWATEMIYAGI_53_2 = shared("iwatemiyagi2008_vxse53_serial2_max6plus_21prefs")
IWATEOKI_A = shared("iwateoki2010_vxse51_eventA_max3")
IWATEOKI_B = shared("iwateoki2010_vxse51_eventB_max4")
IWATEOKI_A_UPDATE = shared("iwateoki2010_vxse51_eventA_update_max4")
IWATEOKI_B_52 = shared("iwateoki2010_vxse52_eventB")
IWATEOKI_B_53 = shared("iwateoki2010_vxse53_eventB_serial1_max4_18prefs")
TOHOKU_51 = shared("tohoku2011_vxse51_max6plus_6prefs")
TOHOKU_53 = shared("tohoku2011_vxse53_MAXINT7_41prefs")
TOHOKU_TS_1449 = shared("tohoku2011_vtse41_1449_MAJOR_iwate_miyagi_fukushima")
TOHOKU_TS_1450 = shared("tohoku2011_vtse51_1450_arrival_times")
TOHOKU_TS_1453 = shared("tohoku2011_vtse41_1453_MAJOR_adds_aomori")
TOHOKU_TS_0313 = shared("tohoku2011_vtse41_0313_all_lifted_forecast_only")
NANKAI_41 = shared("TRAINING_nankai2016_vtse41_MAJOR_29areas")
NANKAI_51 = shared("TRAINING_nankai2016_vtse51")
NANKAI_LIFTED = shared("TRAINING_nankai2016_vtse41_lifted")
NEMURO_51 = shared("TRAINING_nemuro2025_vtse51_MAJOR")
NARA_ISSUED = shared("nara2011_vpww53_SPECIAL_heavyrain_issued")
NARA_CONTINUED = shared("nara2011_vpww53_SPECIAL_continued_and_new")
NARA_LIFTED = shared("nara2011_vpww53_SPECIAL_lifted")
WAKAYAMA_ISSUED = shared("wakayama2013_vpww53_SPECIAL_heavyrain")
WAKAYAMA_LIFTED = shared("wakayama2013_vpww53_SPECIAL_lifted_to_warning")
TOYAMA_TRAP = shared("toyama2015_vpww54_no_special_but_NextKinds_and_TOKUBETSU_KEIHOU_KYU")
SHIMANE_53 = shared("shimane2016_vpww53_SPECIAL_heavyrain")
SHIMANE_54 = shared("shimane2016_vpww54_SPECIAL_heavyrain")
HYOGO_4KINDS = shared("hyogo2013_vpww53_SPECIAL_4kinds")
NOTO_L = shared("REAL_2024-01-01_noto_vxse51_max6plus_31prefs")
NOTO_S = shared("REAL_2024-01-01_noto_aftershock_vxse51_max3")
NOTO_M = shared("REAL_2024-01-06_noto_vxse51_max5plus")
NOTO_53 = own(NOTO_VXSE53)
SURUGA_51 = shared("suruga2009_vxse51_max6minus_16prefs")
SURUGA_51_UPDATE2 = shared("suruga2009_vxse51_update2")
TEST_42 = shared("TEST_vxse42_eew_delivery_test")

# Who each real message reaches with a "based" rule at 震度3 (Noto VXSE51 L: 31 prefectures at 3 or more).
NOTO_L_AT_3 = (
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    37,
)
NANKAI_MAJOR = (8, 12, 13, 14, 22, 23, 24, 27, 28, 30, 35, 36, 37, 38, 39, 44, 45, 46, 47)


# --- rules ---------------------------------------------------------------------------------------------------------


def quake(rule_id: int, min_intensity: str, **fields: object) -> RuleSpec:
    return RuleSpec(
        id=rule_id, name=f"quake {min_intensity}", hazard="earthquake", min_intensity=min_intensity, **fields
    )


def tsunami(rule_id: int, level: str, **fields: object) -> RuleSpec:
    return RuleSpec(id=rule_id, name=f"tsunami {level}", hazard="tsunami", tsunami_level=level, **fields)


def special(rule_id: int, **fields: object) -> RuleSpec:
    return RuleSpec(id=rule_id, name="special", hazard="special_warning", **fields)


def chosen(*ids: int) -> dict[str, object]:
    return {"target_mode": "chosen", "chosen_ids": frozenset(ids)}


# --- the table -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    decision: str
    reason_code: str
    hazard: str | None
    drill: bool = False
    new: tuple[int, ...] = ()
    gone: tuple[int, ...] = ()
    incident: str = ""  # same label = same incident (action event); different labels = different incidents


def dispatch(hazard: str, new: Sequence[int], incident: str, *, drill: bool = False) -> Expect:
    return Expect("dispatch", "dispatch", hazard, drill, tuple(new), (), incident)


def update(hazard: str, new: Sequence[int], incident: str, *, drill: bool = False) -> Expect:
    return Expect("update", "update", hazard, drill, tuple(new), (), incident)


def withdraw(hazard: str, gone: Sequence[int], incident: str) -> Expect:
    return Expect("withdraw", "withdraw", hazard, False, (), tuple(gone), incident)


def ignore(reason_code: str, hazard: str | None, *, drill: bool = False) -> Expect:
    return Expect("ignore", reason_code, hazard, drill)


@dataclass(frozen=True)
class Scenario:
    steps: Sequence[tuple[Doc, Expect]]
    rules: Sequence[RuleSpec]
    drill_mode: bool = False
    people: Sequence[Person] = field(default=PEOPLE)


EQ, TS, SW = "earthquake", "tsunami", "special_warning"

SCENARIOS = [
    pytest.param(
        Scenario(
            [
                (IWATEMIYAGI_52, ignore("no_intensity", EQ)),
                (IWATEMIYAGI_53_1, dispatch(EQ, (2, 3, 4, 5, 6, 7, 8, 9), "quake")),
                (IWATEMIYAGI_52_CANCEL, ignore("cancel_nothing", EQ)),  # the VXSE53's people stay asked
                (IWATEMIYAGI_53_2, update(EQ, (15,), "quake")),  # 新潟県 4 is new in serial 2
            ],
            [quake(1, "4")],
        ),
        id="iwatemiyagi2008-vxse52-vxse53-serials-and-the-vxse52-cancellation",
    ),
    pytest.param(
        Scenario(
            [
                (IWATEMIYAGI_53_1, dispatch(EQ, (2, 3, 4, 5, 6, 7, 8, 9), "quake")),
                (IWATEMIYAGI_52_CANCEL, ignore("cancel_unknown", EQ)),  # no VXSE52 was applied: nothing to take back
            ],
            [quake(1, "4")],
        ),
        id="iwatemiyagi2008-vxse52-cancellation-never-cancels-the-vxse53",
    ),
    pytest.param(
        Scenario(
            [
                (IWATEMIYAGI_53_1, dispatch(EQ, (2, 3, 4, 5, 6, 7, 8, 9), "quake")),
                (IWATEMIYAGI_53_2, update(EQ, (15,), "quake")),
                (cancellation(IWATEMIYAGI_53_2, "2008-06-14T09:00:00+09:00"), withdraw(EQ, (15,), "quake")),
            ],
            [quake(1, "4")],
        ),
        id="iwatemiyagi2008-cancelling-vxse53-serial2-withdraws-only-whom-serial2-reached",
    ),
    pytest.param(
        Scenario(
            [
                (IWATEMIYAGI_53_2, dispatch(EQ, (2, 3, 4, 5, 6, 7, 8, 9, 15), "quake")),
                (IWATEMIYAGI_53_1, ignore("out_of_date", EQ)),
                (IWATEMIYAGI_53_2, ignore("duplicate", EQ)),
            ],
            [quake(1, "4")],
        ),
        id="iwatemiyagi2008-vxse53-serial2-then-serial1-is-out-of-date",
    ),
    pytest.param(
        Scenario(
            [
                (IWATEOKI_A, dispatch(EQ, (3,), "A")),
                (IWATEOKI_B, dispatch(EQ, (2, 3, 4), "B")),  # same minute, same areas, another EventID
                (IWATEOKI_A_UPDATE, update(EQ, (2, 4, 5), "A")),
                (IWATEOKI_B_52, ignore("no_intensity", EQ)),
                (IWATEOKI_B_53, update(EQ, (5, 6, 7), "B")),
                (IWATEOKI_A, ignore("duplicate", EQ)),
            ],
            [quake(1, "3")],
        ),
        id="iwateoki2010-events-A-and-B-interleaved-are-two-incidents",
    ),
    pytest.param(
        Scenario(
            [
                (TOHOKU_51, dispatch(EQ, (3, 4, 7), "quake")),
                (TOHOKU_53, update(EQ, (2, 5, 6, 8, 9, 10, 11, 12, 13, 14, 19), "quake")),
            ],
            [quake(1, "5+")],
        ),
        id="tohoku2011-vxse51-then-vxse53-adds-people",
    ),
    pytest.param(
        Scenario(
            [
                (TOHOKU_TS_1449, dispatch(TS, (3, 4, 7), "tsunami")),
                (TOHOKU_TS_1450, ignore("continuing", TS)),
                (TOHOKU_TS_1453, update(TS, (2,), "tsunami")),  # 青森県太平洋沿岸 becomes 大津波警報
                (TOHOKU_TS_0313, ignore("lifted", TS)),
            ],
            [tsunami(1, "major")],
        ),
        id="tohoku2011-major-tsunami-upgrades-add-coasts-then-lifted",
    ),
    pytest.param(
        Scenario(
            [
                (TOHOKU_51, dispatch(EQ, (3, 4), "quake")),  # 宮城県 6+, 岩手県 6-
                (TOHOKU_TS_1449, dispatch(TS, (3, 4, 7), "tsunami")),  # same EventID, its own incident
            ],
            [quake(1, "6-"), tsunami(2, "major")],
        ),
        id="tohoku2011-tsunami-is-its-own-incident-under-the-quakes-eventid",
    ),
    pytest.param(
        Scenario(
            [
                (NANKAI_41, ignore("drill", TS, drill=True)),
                (NANKAI_51, ignore("drill", TS, drill=True)),
            ],
            [tsunami(1, "major")],
        ),
        id="nankai2016-drill-with-drill-mode-off-is-ignored",
    ),
    pytest.param(
        Scenario(
            [
                (NANKAI_41, dispatch(TS, NANKAI_MAJOR, "drill", drill=True)),
                (NANKAI_51, ignore("continuing", TS, drill=True)),
                (as_status(NANKAI_41, "通常"), dispatch(TS, NANKAI_MAJOR, "real")),  # never merged with the drill
                (NANKAI_LIFTED, ignore("lifted", TS, drill=True)),
            ],
            [tsunami(1, "major")],
            drill_mode=True,
        ),
        id="nankai2016-drill-with-drill-mode-on-is-a-separate-drill-incident",
    ),
    pytest.param(
        Scenario(
            [(NEMURO_51, dispatch(TS, (13,), "drill", drill=True))],
            [tsunami(1, "advisory", prefectures=frozenset({"13"}))],
            drill_mode=True,
        ),
        id="nemuro2025-a-tokyo-rule-reaches-only-tokyo-though-tokyo-bay-touches-chiba-and-kanagawa",
    ),
    pytest.param(
        Scenario(
            [
                (NARA_ISSUED, dispatch(SW, (29,), "first")),
                (NARA_CONTINUED, ignore("already_notified", SW)),  # 継続 + 13 new municipalities, same prefecture
                (NARA_LIFTED, ignore("lifted", SW)),
                (issued_again(NARA_ISSUED, "2011-09-08T12:00:00+09:00"), dispatch(SW, (29,), "second")),
            ],
            [special(1)],
        ),
        id="nara2011-special-warning-issued-continued-lifted-and-issued-again",
    ),
    pytest.param(
        Scenario(
            [
                (NARA_ISSUED, dispatch(SW, (29,), "first")),
                (NARA_CONTINUED, update(SW, (100, 101), "first")),  # 大和郡山市 newly comes under it
                (NARA_LIFTED, ignore("lifted", SW)),
            ],
            [special(1), special(2, areas=frozenset({"2920300"}), **chosen(100, 101))],
        ),
        id="nara2011-a-municipality-that-newly-comes-under-it-joins-the-incident",
    ),
    pytest.param(
        Scenario(
            [
                (WAKAYAMA_ISSUED, dispatch(SW, (30,), "special")),
                (WAKAYAMA_LIFTED, ignore("lifted", SW)),  # 特別警報から警報: lifted, never a new dispatch
            ],
            [special(1)],
        ),
        id="wakayama2013-special-warning-downgraded-to-a-warning",
    ),
    pytest.param(
        Scenario([(TOYAMA_TRAP, ignore("below_threshold", SW))], [special(1)]),
        id="toyama2015-tokubetsu-keihou-kyu-and-next-kinds-never-dispatch",
    ),
    pytest.param(
        Scenario(
            [
                (SHIMANE_53, dispatch(SW, (32,), "special")),
                (SHIMANE_54, ignore("duplicate", SW)),  # VPWW54 carries the same update
            ],
            [special(1)],
        ),
        id="shimane2016-vpww53-and-vpww54-are-one-update",
    ),
    pytest.param(
        Scenario(
            [
                (NOTO_L, dispatch(EQ, NOTO_L_AT_3, "noto")),
                (NOTO_53, update(EQ, (3, 36), "noto")),  # 岩手県 and 徳島県 3 are new in the VXSE53
            ],
            [quake(1, "3")],
        ),
        id="noto2024-vxse51-then-vxse53-reaches-only-the-newly-hit",
    ),
    pytest.param(
        Scenario(
            [
                (NOTO_L, dispatch(EQ, NOTO_L_AT_3, "noto")),
                (NOTO_53, update(EQ, (3, 36), "noto")),
                (cancellation(NOTO_53, "2024-01-01T16:40:00+09:00"), withdraw(EQ, (3, 36), "noto")),
                (cancellation(NOTO_53, "2024-01-01T16:40:00+09:00"), ignore("duplicate", EQ)),
            ],
            [quake(1, "3")],
        ),
        id="noto2024-a-vxse53-cancellation-withdraws-the-people-only-it-reached",
    ),
    pytest.param(
        Scenario(
            [(NOTO_L, dispatch(EQ, (15, 16, 17, 18), "noto")), (NOTO_53, ignore("already_notified", EQ))],
            [quake(1, "5+")],
        ),
        id="noto2024-vxse53-at-5plus-reaches-nobody-new",
    ),
    pytest.param(
        Scenario(
            [
                (NOTO_L, dispatch(EQ, NOTO_L_AT_3, "main")),
                (NOTO_S, ignore("suppressed", EQ)),  # 16:34 石川県 3 after 石川県 6+ at 16:13
                (NOTO_M, ignore("suppressed", EQ)),  # 01-06 石川県 5+, 6,555 minutes later, still in the week
            ],
            [quake(1, "3", suppress_minutes=7 * 24 * 60)],
        ),
        id="noto2024-weaker-aftershocks-within-the-window-are-suppressed",
    ),
    pytest.param(
        Scenario(
            [
                (NOTO_S, dispatch(EQ, (17,), "aftershock")),
                (NOTO_M, dispatch(EQ, (16, 17, 18, 21), "stronger")),  # 石川県 5+ > 3: never suppressed
            ],
            [quake(1, "3", suppress_minutes=7 * 24 * 60)],
        ),
        id="noto2024-a-stronger-aftershock-is-not-suppressed",
    ),
    pytest.param(
        Scenario(
            [
                (NOTO_L, dispatch(EQ, (15, 16, 17, 18), "main")),
                (NOTO_M, dispatch(EQ, (17,), "later")),  # 6,555 minutes later: outside a one-day window
            ],
            [quake(1, "5+", suppress_minutes=24 * 60)],
        ),
        id="noto2024-outside-the-window-nothing-is-suppressed",
    ),
    pytest.param(
        Scenario(
            [
                (NOTO_L, dispatch(EQ, (15, 16, 17, 18), "main")),
                (cancellation(NOTO_L, "2024-01-01T16:20:00+09:00"), withdraw(EQ, (15, 16, 17, 18), "main")),
                (NOTO_M, dispatch(EQ, (17,), "later")),  # the cancelled quake suppresses nothing
            ],
            [quake(1, "5+", suppress_minutes=7 * 24 * 60)],
        ),
        id="noto2024-a-cancelled-report-does-not-suppress-later-quakes",
    ),
    pytest.param(
        Scenario(
            [
                (SURUGA_51, dispatch(EQ, (10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 29), "quake")),
                (SURUGA_51_UPDATE2, update(EQ, (27,), "quake")),  # same minute (05:09), no Serial: not a duplicate
            ],
            [quake(1, "3")],
        ),
        id="suruga2009-two-vxse51-of-the-same-minute-are-not-duplicates",
    ),
    pytest.param(
        Scenario([(TEST_42, ignore("test", None))], [quake(1, "1"), tsunami(2, "advisory"), special(3)]),
        id="test-status-vxse42-never-dispatches",
    ),
    pytest.param(
        Scenario([(TEST_42, ignore("test", None))], [quake(1, "1")], drill_mode=True),
        id="test-status-vxse42-never-dispatches-in-drill-mode-either",
    ),
    pytest.param(
        Scenario([(IWATEOKI_A, ignore("nobody_there", EQ))], [quake(1, "3")], people=[Person(1, "tokyo", "13")]),
        id="nobody-based-there",
    ),
    pytest.param(
        Scenario([(IWATEOKI_A, ignore("no_rule", EQ)), (TOHOKU_TS_1449, ignore("no_rule", TS))], [special(1)]),
        id="no-rule-for-the-hazard",
    ),
    pytest.param(
        Scenario([(IWATEOKI_A, ignore("below_threshold", EQ))], [quake(1, "4")]),
        id="below-the-threshold",
    ),
    pytest.param(
        Scenario(
            [
                (TOHOKU_51, dispatch(EQ, (100, 102), "quake")),  # 宮城県 6+ fires the "6+ anywhere" rule
                (TOHOKU_53, update(EQ, (101,), "quake")),  # 茨城県 6+ fires the 茨城県 rule; 100 was asked
            ],
            [
                quake(1, "6-", prefectures=frozenset({"08"}), **chosen(100, 101)),
                quake(2, "6+", **chosen(100, 102)),
            ],
        ),
        id="chosen-people-instead-of-the-people-based-there",
    ),
    pytest.param(
        Scenario(
            [(IWATEMIYAGI_53_1, dispatch(EQ, (3, 4, 7), "quake"))],
            [
                quake(1, "6+", areas=frozenset({"213", "220"})),  # 岩手県内陸南部, 宮城県北部: 6+
                quake(2, "5-", areas=frozenset({"251", "301"})),  # 福島県浜通り 5-, 茨城県南部 4
            ],
        ),
        id="rules-scoped-to-saibun-kuiki-areas",
    ),
    pytest.param(
        Scenario([(IWATEMIYAGI_53_1, ignore("below_threshold", EQ))], [quake(1, "5-", areas=frozenset({"301"}))]),
        id="an-area-rule-ignores-stronger-shaking-elsewhere",
    ),
    pytest.param(
        Scenario(
            [(without_prefecture(IWATEMIYAGI_53_1, "06"), dispatch(EQ, (6,), "quake"))],
            [quake(1, "5-", prefectures=frozenset({"06"}))],
        ),
        id="unreported-5minus-station-counts-as-5minus-for-a-prefecture-rule",
    ),
    pytest.param(
        Scenario(
            [(without_prefecture(IWATEMIYAGI_53_1, "06"), dispatch(EQ, (6,), "quake"))],
            [quake(1, "5-", areas=frozenset({"241"}))],  # 山形県最上, where 大蔵村 has not reported
        ),
        id="unreported-5minus-station-counts-as-5minus-for-an-area-rule",
    ),
    pytest.param(
        Scenario(
            [(without_prefecture(IWATEMIYAGI_53_1, "06"), ignore("below_threshold", EQ))],
            [quake(1, "5+", prefectures=frozenset({"06"}))],
        ),
        id="unreported-5minus-station-is-never-more-than-5minus",
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_decisions_over_real_sequences(scenario: Scenario) -> None:
    state: dict[str, object] | None = None
    incidents: dict[str, str] = {}
    for step, (doc, expect) in enumerate(scenario.steps, start=1):
        outcome = decide(
            doc.report(), rules=scenario.rules, people=scenario.people, state=state, drill_mode=scenario.drill_mode
        )
        where = f"step {step} ({doc.label}): {outcome.reason}"
        got = (
            outcome.decision,
            outcome.reason_code,
            outcome.hazard,
            outcome.drill,
            tuple(outcome.new_ids),
            tuple(outcome.withdrawn_ids),
        )
        assert got == (expect.decision, expect.reason_code, expect.hazard, expect.drill, expect.new, expect.gone), where
        assert outcome.reason, where
        _check_actions(outcome, expect, incidents, where)
        state = json.loads(json.dumps(outcome.state))  # the service stores it in a JSON column
    assert len(set(incidents.values())) == len(incidents), f"different labels share an incident: {incidents}"


def _check_actions(outcome: Outcome, expect: Expect, incidents: dict[str, str], where: str) -> None:
    if expect.decision == "ignore":
        assert outcome.actions == [], where
        return
    events = {action.event for action in outcome.actions}
    assert len(events) == 1, where
    assert all(a.hazard == expect.hazard and a.drill == expect.drill for a in outcome.actions), where
    assert incidents.setdefault(expect.incident, events.pop()) in {a.event for a in outcome.actions}, (
        f"{where}: expected the incident of {expect.incident!r}"
    )
    people = sorted(p for a in outcome.actions for p in a.person_ids)
    assert people == sorted(expect.new or expect.gone), where


# --- beyond the table ----------------------------------------------------------------------------------------------


def test_the_noto_reconstruction_reads_as_the_real_vxse53() -> None:
    report = NOTO_53.report()
    assert (report.title, report.status, report.info_type) == ("震源・震度に関する情報", "通常", "発表")
    assert (report.event_ids, report.serial, report.max_intensity) == (["20240101161010"], 2, "7")
    assert report.report_datetime == datetime.fromisoformat("2024-01-01T16:24:00+09:00")
    assert len(report.intensity_by_pref) == 45 and report.intensity_by_pref["17"] == "7"
    assert report.intensity_by_area["390"] == "7" and len(report.intensity_by_area) == 119
    assert report.magnitude == "7.6" and report.epicenter_name == "石川県能登地方"
    # The real message has no City/Condition; the 未入電 stations sit in cities that have a MaxInt.
    assert report.cities_not_reported == [] and report.intensity_by_city == {"1720400": "6+", "1746300": "6-"}
    # Cross-check against the real VXSE51 of the same quake: the full report never lists a prefecture lower.
    vxse51 = NOTO_L.report()
    assert vxse51.event_ids == report.event_ids
    lower = {
        p: (v, report.intensity_by_pref.get(p))
        for p, v in vxse51.intensity_by_pref.items()
        if (intensity_rank(report.intensity_by_pref.get(p, "")) or -1) < (intensity_rank(v) or 0)
    }
    assert lower == {}


def test_each_special_warning_kind_is_its_own_incident_and_rules_pick_kinds() -> None:
    report = HYOGO_4KINDS.report()
    every = decide(report, rules=[special(1)], people=PEOPLE, state=None, drill_mode=False)
    assert every.decision == "dispatch" and every.new_ids == [28]
    kinds = {a.level: a.event for a in every.actions}
    assert set(kinds) == {"33", "35", "37", "38"} and len(set(kinds.values())) == 4
    surge = decide(
        report, rules=[special(1, special_kinds=frozenset({"38"}))], people=PEOPLE, state=None, drill_mode=False
    )
    assert [(a.level, a.person_ids) for a in surge.actions] == [("38", (28,))]
    wind_only_tokyo = decide(
        report,
        rules=[special(1, special_kinds=frozenset({"35"}), prefectures=frozenset({"13"}))],
        people=PEOPLE,
        state=None,
        drill_mode=False,
    )
    assert (wind_only_tokyo.decision, wind_only_tokyo.reason_code) == ("ignore", "below_threshold")


def test_a_document_key_makes_the_same_document_a_duplicate() -> None:
    report = IWATEOKI_A.report()
    first = decide(report, rules=[quake(1, "3")], people=PEOPLE, state=None, drill_mode=False, doc_key="https://x/1")
    again = decide(
        report, rules=[quake(1, "3")], people=PEOPLE, state=first.state, drill_mode=False, doc_key="https://x/1"
    )
    assert (first.decision, again.decision, again.reason_code) == ("dispatch", "ignore", "duplicate")


def test_decide_never_changes_the_state_it_is_given() -> None:
    first = decide(TOHOKU_51.report(), rules=[quake(1, "5+")], people=PEOPLE, state=None, drill_mode=False)
    before = json.dumps(first.state, sort_keys=True)
    decide(TOHOKU_53.report(), rules=[quake(1, "5+")], people=PEOPLE, state=first.state, drill_mode=False)
    assert json.dumps(first.state, sort_keys=True) == before


def test_every_rule_that_fires_is_named_even_when_another_reached_its_people_first() -> None:
    """Verify and replay say which rules fire: a second rule that reaches the same people fires too."""
    from safety.jma.decide import synthetic_report

    anywhere = RuleSpec(1, "5強以上", "earthquake", min_intensity="5+")
    ishikawa = RuleSpec(2, "石川 6弱以上", "earthquake", prefectures=frozenset({"17"}), min_intensity="6-")
    niigata = RuleSpec(3, "新潟 5弱以上", "earthquake", prefectures=frozenset({"15"}), min_intensity="5-")
    people = [Person(1, "kanazawa", "17"), Person(2, "tokyo", "13")]
    outcome = decide(
        synthetic_report("earthquake", "17", "6-"),
        rules=[anywhere, ishikawa, niigata],
        people=people,
        state=None,
        drill_mode=False,
    )
    assert outcome.decision == "dispatch" and outcome.new_ids == [1]
    assert outcome.rule_ids == [1, 2]
    assert outcome.actions[0].rule_ids == (1,)  # the form and message come from the rule that reached them
