"""Regressions found in review of the automatic-dispatch decision, each on real JMA messages (edited the way JMA
writes the case where the fixtures lack it): a tsunami 取消 while the warning is still in force, a special
warning downgraded with 特別警報から警報, the R06 per-hazard messages, drills and real quakes in one window, a
main shock's event surviving a swarm, a tsunami message naming two EventIDs, 震度1 rules, and 訂正."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import timedelta
from typing import Any

from safety.jma.decide import Outcome, Person, RuleSpec, decide, prune_state
from safety.jma.parser import parse_report
from tests.services import shared_fixtures

PEOPLE = [Person(n, f"p{n:02d}", f"{n:02d}") for n in range(1, 48)]  # one person per prefecture, id = code


def raw(slug: str) -> bytes:
    [path] = list(shared_fixtures("jma").glob(f"*/{slug}__*.xml"))
    return path.read_bytes()


def edit(data: bytes, *subs: tuple[str, str], count: int = 1) -> bytes:
    text = data.decode()
    for pattern, replacement in subs:
        text, n = re.subn(pattern, replacement, text, count=count, flags=re.S)
        assert n >= 1, pattern
    return text.encode()


def cancel(data: bytes, at: str) -> bytes:
    """The 取消 of a message as JMA writes it: the same head, InfoType 取消, a Body that is only a Text."""
    return edit(
        data,
        ("<InfoType>発表</InfoType>", "<InfoType>取消</InfoType>"),
        (r"<ReportDateTime>[^<]+</ReportDateTime>", f"<ReportDateTime>{at}</ReportDateTime>"),
        (r"<Body(\s[^>]*)?>.*</Body>", r"<Body\1><Text>取り消します。</Text></Body>"),
    )


def run(documents: list[bytes], rules: list[RuleSpec], *, drill_mode: bool = False) -> list[Outcome]:
    state: dict[str, Any] | None = None
    outcomes = []
    for data in documents:
        outcome = decide(
            parse_report(data),
            rules=rules,
            people=PEOPLE,
            state=state,
            drill_mode=drill_mode,
            doc_key=hashlib.sha256(data).hexdigest(),
        )
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


def test_a_tsunami_cancellation_keeps_people_the_standing_warning_still_covers() -> None:
    """The 14:53 VTSE41 is cancelled while the 14:49/14:50 messages still hold the 大津波警報: nobody is told to
    stand down (before the fix, all of them were withdrawn)."""
    major = RuleSpec(10, "大津波警報", "tsunami", tsunami_level="major")
    v1449 = raw("tohoku2011_vtse41_1449_MAJOR_iwate_miyagi_fukushima")
    v1450 = raw("tohoku2011_vtse51_1450_arrival_times")
    v1453 = raw("tohoku2011_vtse41_1453_MAJOR_adds_aomori")
    outcomes = run([v1449, v1450, v1453, cancel(v1453, "2011-03-11T15:10:00+09:00")], [major])
    assert outcomes[0].decision == "dispatch" and {3, 4, 7} <= set(outcomes[0].new_ids)
    # Only 青森県, which the cancelled message alone raised to 大津波警報, is withdrawn.
    assert outcomes[2].decision == "update" and outcomes[2].new_ids == [2]
    assert outcomes[3].decision == "withdraw" and outcomes[3].withdrawn_ids == [2]
    # The VTSE51 came first: cancelling it leaves the VTSE41's coverage in place too.
    outcomes = run([v1450, v1453, cancel(v1450, "2011-03-11T15:10:00+09:00")], [major])
    assert outcomes[0].decision == "dispatch" and outcomes[2].withdrawn_ids == []


def test_a_cancellation_without_serial_takes_back_only_the_latest_version() -> None:
    """VXSE51 has no Serial: its 取消 names the newest 震度速報 of the quake, not every earlier one."""
    rule = RuleSpec(1, "5弱以上", "earthquake", min_intensity="5-")
    first = raw("suruga2009_vxse51_max6minus_16prefs")
    update = raw("suruga2009_vxse51_update2")  # adds 長野県 5弱
    outcomes = run([first, update, cancel(update, "2009-08-11T05:20:00+09:00")], [rule])
    assert outcomes[0].new_ids == [22] and outcomes[1].new_ids == [20]
    assert outcomes[2].decision == "withdraw" and outcomes[2].withdrawn_ids == [20]


def test_a_special_warning_downgraded_to_a_warning_closes_and_the_next_one_dispatches() -> None:
    rule = RuleSpec(20, "特別警報", "special_warning")
    issued = raw("REAL_2022-09-17_kagoshima_vpww53_SPECIAL_wind_wave_surge")
    down = issued
    for special, warning in (("35", "05"), ("37", "07"), ("38", "08")):
        down = edit(
            down,
            (
                rf"<Code>{special}</Code>(\s*)<Status>発表</Status>",
                rf"<Code>{warning}</Code>\1<Status>特別警報から警報</Status>",
            ),
            count=0,
        )
    down = edit(down, (r"<ReportDateTime>2022-09-17T21:40:00\+09:00", "<ReportDateTime>2022-09-19T11:00:00+09:00"))
    again = edit(issued, (r"<ReportDateTime>2022-09-17T21:40:00\+09:00", "<ReportDateTime>2022-09-25T11:00:00+09:00"))
    first, lifted, next_one = run([issued, down, again], [rule])
    assert first.decision == "dispatch" and len(first.actions) == 3
    assert (lifted.decision, lifted.reason_code) == ("ignore", "lifted")
    assert next_one.decision == "dispatch" and len(next_one.actions) == 3
    assert {a.event for a in next_one.actions}.isdisjoint({a.event for a in first.actions})


def test_r06_messages_of_two_hazards_from_one_office_are_two_snapshots() -> None:
    """VPWW55 (大雨) and VPWW56 (土砂) each hold one hazard: the second is neither a duplicate nor does the next
    VPWW55 lift the landslide special warning."""
    rule = RuleSpec(20, "特別警報", "special_warning")
    r55 = parse_report(raw("R06_shimane2024_vpww55_heavyrain_level3"))
    r56 = dataclasses.replace(
        parse_report(raw("R06_shimane2024_vpww56_landslide")), report_datetime=r55.report_datetime
    )
    rain = dataclasses.replace(
        r55, special_status_by_area={"3220100": {"33": "発表"}}, special_by_area={"3220100": ["33"]}
    )
    slide = dataclasses.replace(
        r56, special_status_by_area={"3220100": {"39": "発表"}}, special_by_area={"3220100": ["39"]}
    )
    assert rain.report_datetime is not None
    rain_later = dataclasses.replace(
        rain,
        report_datetime=rain.report_datetime + timedelta(minutes=2),
        special_status_by_area={"3220100": {"33": "継続"}},
    )
    state: dict[str, Any] | None = None
    results = []
    for report, key in ((rain, "a"), (slide, "b"), (rain_later, "c")):
        outcome = decide(report, rules=[rule], people=PEOPLE, state=state, drill_mode=False, doc_key=key)
        state = outcome.state
        results.append(outcome)
    assert [o.decision for o in results] == ["dispatch", "dispatch", "ignore"]
    assert results[2].reason_code == "continuing"
    # the landslide special warning is still in force
    assert state is not None and any("|39|32" in key for key in state["events"])


def test_a_drill_never_suppresses_a_real_quake() -> None:
    rule = RuleSpec(1, "5強以上", "earthquake", min_intensity="5+", suppress_minutes=60)
    real = raw("tohoku2011_vxse51_max6plus_6prefs")
    drill = edit(
        real,
        ("<Status>通常</Status>", "<Status>訓練</Status>"),
        (r"<EventID>\d+</EventID>", "<EventID>20110311140000</EventID>"),
    )
    drill_outcome, real_outcome = run([drill, real], [rule], drill_mode=True)
    assert drill_outcome.drill and drill_outcome.decision == "dispatch"
    assert not real_outcome.drill and real_outcome.decision == "dispatch" and real_outcome.new_ids == [3, 4, 7]


def test_a_main_shock_survives_a_swarm_of_aftershocks_below_the_threshold() -> None:
    rule = RuleSpec(1, "5強以上", "earthquake", min_intensity="5+")
    main1 = parse_report(raw("iwatemiyagi2008_vxse53_serial1_max6plus_19prefs"))
    main2 = parse_report(raw("iwatemiyagi2008_vxse53_serial2_max6plus_21prefs"))
    small = parse_report(raw("REAL_2021-02-19_iwate_vxse53_max4_3prefs"))
    assert main1.report_datetime is not None
    state = prune_state(decide(main1, rules=[rule], people=PEOPLE, state=None, drill_mode=False, doc_key="m1").state)
    for i in range(210):
        aftershock = dataclasses.replace(
            small, event_ids=[f"2008061409{i:04d}"], report_datetime=main1.report_datetime + timedelta(minutes=10 + i)
        )
        state = prune_state(
            decide(aftershock, rules=[rule], people=PEOPLE, state=state, drill_mode=False, doc_key=f"a{i}").state
        )
    later = dataclasses.replace(main2, report_datetime=main1.report_datetime + timedelta(minutes=300))
    outcome = decide(later, rules=[rule], people=PEOPLE, state=state, drill_mode=False, doc_key="m2")
    assert (outcome.decision, outcome.reason_code) == ("ignore", "already_notified")  # not a second incident


def test_a_tsunami_message_naming_two_eventids_continues_the_event() -> None:
    rule = RuleSpec(10, "津波注意報以上", "tsunami", tsunami_level="advisory")
    serial1 = raw("satsuma2015_vtse51_serial1")
    serial2 = edit(
        serial1,
        ("<EventID>20151114055157</EventID>", "<EventID>20151114055157 20151114061750</EventID>"),
        ("<Serial>1</Serial>", "<Serial>2</Serial>"),
        (
            r"<ReportDateTime>2015-11-14T05:58:00\+09:00</ReportDateTime>",
            "<ReportDateTime>2015-11-14T06:20:00+09:00</ReportDateTime>",
        ),
    )
    outcomes = run([raw("satsuma2015_vtse41_advisory"), serial1, serial2], [rule])
    assert outcomes[0].decision == "dispatch"
    assert outcomes[2].decision == "ignore" and outcomes[2].reason_code == "continuing"


def test_a_rule_for_intensity_1_fires_on_intensity_1() -> None:
    rule = RuleSpec(1, "震度1以上", "earthquake", min_intensity="1")
    [outcome] = run([raw("REAL_2021-02-16_osakanambu_vxse53_max1_osakaoffice")], [rule])
    assert outcome.decision == "dispatch" and outcome.new_ids == [30]


def test_a_correction_replaces_the_version_it_corrects() -> None:
    """A 訂正 that lowers 宮城県 from 6強 to 4 takes back the people asked only because of the 6強."""
    rule = RuleSpec(1, "5強以上", "earthquake", min_intensity="5+")
    serial1 = raw("iwatemiyagi2008_vxse53_serial1_max6plus_19prefs")
    corrected = edit(
        serial1,
        ("<InfoType>発表</InfoType>", "<InfoType>訂正</InfoType>"),
        (r"(<ReportDateTime>)[^<]+", r"\g<1>2008-06-14T09:30:00+09:00"),
        (r"(<Pref>\s*<Name>宮城県</Name>\s*<Code>04</Code>\s*<MaxInt>)[^<]+", r"\g<1>4"),
    )
    first, fix = run([serial1, corrected], [rule])
    assert first.new_ids == [3, 4, 5]
    assert fix.decision == "withdraw" and fix.withdrawn_ids == [4]
