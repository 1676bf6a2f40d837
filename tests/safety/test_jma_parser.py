"""The JMA parser reads every shared fixture the way its file name and MANIFEST.md describe, plus hand-written basics.

Pure tests: no database. The shared fixtures live next to the repository (../shared/fixtures/jma); outside CI a
missing folder skips these tests, in CI it fails them.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from directory.regions import PREFECTURES
from safety.jma import codes
from safety.jma.parser import JmaParseError, parse_feed, parse_report
from tests.services import SHARED_FIXTURES, shared_fixtures

FIXTURES = SHARED_FIXTURES / "jma"
MESSAGE_FOLDERS = ("earthquake", "eew", "tsunami", "weather")
INSPECT_KEYS = [
    "file",
    "title",
    "status",
    "info_type",
    "event_ids",
    "serial",
    "kind",
    "max_intensity",
    "intensity_by_pref",
    "intensity_by_area",
    "tsunami_by_area",
    "special_by_area",
]
INTENSITY_SLUG = {"7": "7", "6plus": "6+", "6minus": "6-", "5plus": "5+", "5minus": "5-"}


def fixtures_dir() -> Path:
    return shared_fixtures("jma")


def _message_files() -> list[str]:
    found = sorted(
        str(p.relative_to(FIXTURES)) for folder in MESSAGE_FOLDERS for p in (FIXTURES / folder).glob("*.xml")
    )
    return found or ["<fixtures missing>"]


def read(name: str) -> bytes:
    return (fixtures_dir() / name).read_bytes()


# --- every shared message --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _message_files())
def test_every_shared_message_parses_as_its_name_and_manifest_describe(name: str) -> None:
    report = parse_report(read(name))
    folder, _, filename = name.partition("/")
    slug = filename.split("__", 1)[0]

    assert report.kind == folder
    assert list(report.inspect_dict(name)) == INSPECT_KEYS
    assert report.title and report.status and report.info_type
    assert report.report_datetime is not None and report.report_datetime.tzinfo is not None

    type_token = re.search(r"(?:^|_)(v[xtp][a-z]{2}\d\d)(?:_|$)", slug)
    if type_token:
        assert report.type_code == type_token.group(1).upper()

    if slug.startswith("TRAINING_"):
        assert report.status == "訓練" and not report.is_real
    elif slug.startswith("TEST_"):
        assert report.status == "試験" and not report.is_real
    else:
        assert report.status == "通常" and report.is_real

    if "CANCEL" in slug:
        assert report.info_type == "取消"
        assert not report.intensity_by_pref and not report.tsunami_by_area and report.max_intensity is None
    else:
        assert report.info_type == "発表"

    serial = re.search(r"serial(\d+)", slug)
    if serial:
        assert report.serial == int(serial.group(1))

    if folder == "earthquake":
        max_slug = re.search(r"(?:_max(\d(?:plus|minus)?)|MAXINT(7))(?:_|$)", slug)
        if max_slug:
            assert report.max_intensity == INTENSITY_SLUG.get(max_slug.group(1) or "7", max_slug.group(1))
        prefs = re.search(r"_(\d+)prefs", slug)
        if prefs:
            assert len(report.intensity_by_pref) == int(prefs.group(1))
        if report.max_intensity is not None:
            assert report.max_intensity in codes.INTENSITY_ORDER
            assert report.max_intensity == max(report.intensity_by_pref.values(), key=codes.INTENSITY_ORDER.index)
            assert set(report.intensity_by_pref) <= set(PREFECTURES)
            assert all(
                codes.earthquake_area_prefecture(a) in report.intensity_by_pref for a in report.intensity_by_area
            )

    if folder == "eew":
        assert report.intensity_by_pref == {} and report.intensity_by_area == {} and report.max_intensity is None

    if folder == "tsunami":
        assert set(report.tsunami_by_area) <= set(codes.TSUNAMI_AREAS)
        if "MAJOR" in slug:
            assert {"52", "53"} & set(report.tsunami_by_area.values())
        if "CANCEL" not in slug:
            assert report.tsunami_by_area

    if folder == "weather":
        if "SPECIAL" in slug and "lifted" not in slug:
            assert report.special_by_area
            assert all(kinds == sorted(kinds) for kinds in report.special_by_area.values())
            assert {k for kinds in report.special_by_area.values() for k in kinds} <= set(codes.SPECIAL_WARNING_KINDS)
        if "no_special" in slug or "lifted" in slug or report.type_code == "VPNO50":
            assert report.special_by_area == {}

    if "TWO_EVENTIDS" in slug:
        assert report.event_ids == ["20151114055157", "20151114061750"]
    elif folder != "weather":
        assert len(report.event_ids) == 1 and re.fullmatch(r"\d{14}", report.event_ids[0])
    else:
        assert report.event_ids == [] and report.serial is None


def test_noto_2024_vxse51_gives_ishikawa_6plus_and_the_noto_area() -> None:
    report = parse_report(read("earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"))
    assert report.type_code == "VXSE51" and report.serial is None
    assert report.event_ids == ["20240101161010"]
    assert report.intensity_by_pref["17"] == "6+"
    assert report.intensity_by_pref["15"] == "6-"
    assert report.intensity_by_area["390"] == "6+"  # 石川県能登
    assert report.report_datetime == datetime.fromisoformat("2024-01-01T16:13:00+09:00")


def test_tohoku_vxse53_has_hypocentre_and_nan_magnitude() -> None:
    report = parse_report(read("earthquake/tohoku2011_vxse53_MAXINT7_41prefs__32-39_11_05_240613_VXSE53.xml"))
    assert report.max_intensity == "7" and report.intensity_by_pref["04"] == "7"
    assert report.epicenter_name == "三陸沖" and report.epicenter_code
    assert report.magnitude == "NaN" and report.magnitude_description == "Ｍ８を超える巨大地震"
    assert report.origin_time is not None and report.origin_time.tzinfo is not None
    assert report.coordinate.startswith("+") and report.coordinate_description


def test_iwatemiyagi_vxse53_lists_cities_whose_5minus_reports_are_missing() -> None:
    report = parse_report(
        read("earthquake/iwatemiyagi2008_vxse53_serial1_max6plus_19prefs__32-35_06_03_240613_VXSE53.xml")
    )
    assert report.cities_not_reported
    assert all(len(code) == 7 for code in report.cities_not_reported)


def test_distant_vxse53_has_no_intensity() -> None:
    report = parse_report(read("earthquake/distant_vxse53_southpacific_no_intensity__32-35_01_03_100514_VXSE53.xml"))
    assert report.max_intensity is None and report.intensity_by_pref == {} and report.epicenter_name == "南太平洋"


def test_noto_2024_vtse51_has_major_warning_for_ishikawa_noto() -> None:
    report = parse_report(read("tsunami/REAL_2024-01-01_noto_vtse51_observation__TsunamiInfo.xml"))
    assert report.tsunami_by_area["360"] == "53"
    assert codes.tsunami_severity("53") is codes.TsunamiSeverity.MAJOR
    assert "17" in codes.tsunami_area_prefectures("360")


def test_nextkinds_and_tokubetsu_keihou_kyu_are_not_special_warnings() -> None:
    raw = read(
        "weather/toyama2015_vpww54_no_special_but_NextKinds_and_TOKUBETSU_KEIHOU_KYU__15_11_02_150916_VPWW54.xml"
    )
    assert "特別警報".encode() in raw  # the trap is really there
    assert parse_report(raw).special_by_area == {}


def test_tokyo_2016_vpww54_special_kinds_per_municipality() -> None:
    report = parse_report(read("weather/tokyo2016_vpww54_SPECIAL_4kinds__15_13_01_161226_VPWW54.xml"))
    municipal = {code: kinds for code, kinds in report.special_by_area.items() if len(code) == 7}
    assert municipal
    assert all(codes.municipality_prefecture(code) == "13" for code in municipal)
    assert all(kinds == sorted(kinds) for kinds in municipal.values())


def test_vpww53_and_vpww54_of_the_same_update_agree() -> None:
    a = parse_report(read("weather/shimane2016_vpww53_SPECIAL_heavyrain__15_12_01_161130_VPWW53.xml"))
    b = parse_report(read("weather/shimane2016_vpww54_SPECIAL_heavyrain__15_12_01_161130_VPWW54.xml"))
    assert a.special_by_area == b.special_by_area != {}
    assert a.type_code == "VPWW53" and b.type_code == "VPWW54"


def test_files_without_declaration_and_with_crlf_parse() -> None:
    raw = read("weather/REAL_2022-09-17_kagoshima_vpww53_SPECIAL_wind_wave_surge__weatherAlart1-4.xml")
    assert not raw.lstrip().startswith(b"<?xml") and b"\r\n" in raw
    report = parse_report(raw)
    assert report.status == "通常" and report.special_by_area


def test_identity_is_the_content_fallback_key() -> None:
    report = parse_report(read("earthquake/iwateoki2010_vxse51_eventA_max3__32-35_08_01_100915_VXSE51.xml"))
    assert report.identity == ("震度速報", "通常", ("20100705065511",), None, "発表", "2010-07-05T06:57:00+09:00")
    other = parse_report(read("earthquake/iwateoki2010_vxse51_eventB_max4__32-35_08_02_100915_VXSE51.xml"))
    assert other.identity != report.identity


# --- feeds -----------------------------------------------------------------------------------------------------------


def test_eqvol_feed_parses_with_document_links() -> None:
    entries = parse_feed(read("feeds/REAL_eqvol_2024-01-01T2053_noto_169entries__eqvol.xml"))
    assert len(entries) == 169
    assert all(e.link.startswith("https://www.data.jma.go.jp/developer/xml/data/") for e in entries)
    assert all(e.updated.tzinfo is not None for e in entries)
    assert {e.title for e in entries} >= {"震度速報", "震源・震度に関する情報", "津波情報a"}


def test_extra_feed_uses_link_href_not_the_r1_suffixed_id() -> None:
    entries = parse_feed(read("feeds/extra_2024-07-25T1416_350entries_specials_CAVEAT_r1_ids__extra_20240725.xml"))
    assert len(entries) == 350
    assert not any("#" in e.link for e in entries)
    assert all(e.link.endswith(".xml") and e.author for e in entries)


def test_a_report_is_not_a_feed_and_a_feed_is_not_a_report() -> None:
    with pytest.raises(JmaParseError, match="not an Atom feed"):
        parse_feed(read("earthquake/vxse51_CANCEL_2022__32-35_10_01_220510_VXSE51.xml"))
    with pytest.raises(JmaParseError, match="not a JMA report"):
        parse_report(read("feeds/REAL_eqvol_2024-01-01T2053_noto_169entries__eqvol.xml"))


# --- hand-written basics ---------------------------------------------------------------------------------------------

SEIS = "http://xml.kishou.go.jp/jmaxml1/body/seismology1/"
METE = "http://xml.kishou.go.jp/jmaxml1/body/meteorology1/"


DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def message(
    title: str,
    body: str,
    *,
    status: str = "通常",
    event_id: str = "20240101161010",
    serial: str = "",
    info_type: str = "発表",
    body_ns: str = SEIS,
    declaration: str = DECLARATION,
) -> bytes:
    return f"""{declaration}<Report xmlns="http://xml.kishou.go.jp/jmaxml1/">
  <Control><Title> {title} </Title><DateTime>2024-01-01T07:13:00Z</DateTime><Status>{status}</Status>
    <EditorialOffice>気象庁本庁</EditorialOffice><PublishingOffice>気象庁</PublishingOffice></Control>
  <Head xmlns="http://xml.kishou.go.jp/jmaxml1/informationBasis1/">
    <Title>{title}</Title><ReportDateTime>2024-01-01T16:13:00+09:00</ReportDateTime>
    <TargetDateTime>2024-01-01T16:10:00+09:00</TargetDateTime>
    <EventID> {event_id} </EventID><InfoType>{info_type}</InfoType><Serial>{serial}</Serial>
    <InfoKind>震度速報</InfoKind><InfoKindVersion>1.0_0</InfoKindVersion>
    <Headline><Text>
      テスト
    </Text></Headline>
  </Head>
  <Body xmlns="{body_ns}" xmlns:jmx_eb="http://xml.kishou.go.jp/jmaxml1/elementBasis1/">{body}</Body>
</Report>""".encode()


INTENSITY_BODY = """<Intensity><Observation><MaxInt>4 </MaxInt>
  <Pref><Name>石川県</Name><Code> 17 </Code><MaxInt>
  4</MaxInt><Area><Name>石川県能登</Name><Code>390</Code><MaxInt>4 </MaxInt></Area></Pref>
</Observation></Intensity>"""


def test_text_is_trimmed_everywhere() -> None:
    report = parse_report(message("震度速報", INTENSITY_BODY, serial=" 3 "))
    assert report.max_intensity == "4"
    assert report.intensity_by_pref == {"17": "4"} and report.intensity_by_area == {"390": "4"}
    assert report.title == "震度速報" and report.headline == "テスト" and report.serial == 3
    assert report.event_ids == ["20240101161010"]


def test_crlf_bom_and_missing_declaration_are_fine() -> None:
    raw = message("震度速報", INTENSITY_BODY, declaration="").replace(b"\n", b"\r\n")
    assert parse_report(b"\xef\xbb\xbf" + raw).max_intensity == "4"
    assert parse_report(message("震度速報", INTENSITY_BODY, declaration="<?xml version='1.0' encoding='utf-8'?>"))


def test_namespace_prefixes_do_not_matter_only_uris() -> None:
    prefixed = """<j:Report xmlns:j="http://xml.kishou.go.jp/jmaxml1/">
  <j:Control><j:Title>震度速報</j:Title><j:Status>訓練</j:Status></j:Control>
  <h:Head xmlns:h="http://xml.kishou.go.jp/jmaxml1/informationBasis1/"><h:EventID>1</h:EventID><h:Serial/></h:Head>
  <s:Body xmlns:s="http://xml.kishou.go.jp/jmaxml1/body/seismology1/"><s:Intensity><s:Observation>
    <s:MaxInt>7</s:MaxInt></s:Observation></s:Intensity></s:Body>
</j:Report>""".encode()
    report = parse_report(prefixed)
    assert (report.title, report.status, report.max_intensity) == ("震度速報", "訓練", "7")
    wrong_ns = message("震度速報", INTENSITY_BODY).replace(b"informationBasis1/", b"informationBasis9/")
    with pytest.raises(JmaParseError, match="missing Head"):
        parse_report(wrong_ns)


def test_wrong_body_namespace_finds_no_intensity() -> None:
    report = parse_report(message("震度速報", INTENSITY_BODY, body_ns=METE))
    assert report.max_intensity is None and report.intensity_by_pref == {}


def test_kind_and_type_code_come_from_control_title() -> None:
    cases = {
        "震度速報": ("earthquake", "VXSE51"),
        "震源に関する情報": ("earthquake", "VXSE52"),
        "震源・震度に関する情報": ("earthquake", "VXSE53"),
        "緊急地震速報（警報）": ("eew", "VXSE43"),
        "緊急地震速報配信テスト": ("eew", "VXSE42"),
        "津波警報・注意報・予報a": ("tsunami", "VTSE41"),
        "沖合の津波観測に関する情報": ("tsunami", "VTSE52"),
        "気象警報・注意報（Ｈ２７）": ("weather", "VPWW54"),
        "気象警報・注意報（Ｒ０６）（高潮）": ("weather", None),
        "気象特別警報報知": ("weather", "VPNO50"),
        "降灰予報（定時）": ("other", None),
    }
    for title, (kind, type_code) in cases.items():
        report = parse_report(message(title, ""))
        assert (report.kind, report.type_code) == (kind, type_code), title


def test_eew_never_reports_observed_intensity() -> None:
    report = parse_report(message("緊急地震速報（予報）", INTENSITY_BODY, serial="12"))
    assert report.kind == "eew" and report.intensity_by_pref == {} and report.max_intensity is None


def test_special_warnings_need_a_special_code_and_an_in_force_status() -> None:
    body = """<Warning type="気象警報・注意報（市町村等）">
      <Item><Kind><Name>大雨特別警報</Name><Code>33</Code><Status>継続</Status></Kind>
            <Kind><Name>暴風特別警報</Name><Code> 35 </Code><Status>発表</Status>
              <NextKinds><NextKind><Name>波浪特別警報</Name><Code>37</Code></NextKind></NextKinds></Kind>
            <Area><Name>A市</Name><Code>1720200</Code></Area></Item>
      <Item><Kind><Name>大雨特別警報</Name><Code>33</Code><Status>解除</Status></Kind>
            <Area><Name>B市</Name><Code>1720300</Code></Area></Item>
      <Item><Kind><Name>レベル４大雨危険警報</Name><Code>43</Code><Status>発表</Status></Kind>
            <Area><Name>C市</Name><Code>1720400</Code></Area></Item>
      <Item><Kind><Name>大雨警報</Name><Code>03</Code><Status>特別警報から警報</Status></Kind>
            <Area><Name>D市</Name><Code>1720500</Code></Area></Item>
    </Warning>
    <Warning type="気象警報・注意報（府県予報区等）">
      <Item><Kind><Name>大雪特別警報</Name><Code>36</Code><Status>発表</Status></Kind>
            <Areas><Area><Name>石川県</Name><Code>170000</Code></Area></Areas></Item>
    </Warning>"""
    report = parse_report(message("気象特別警報・警報・注意報", body, event_id="", body_ns=METE))
    assert report.special_by_area == {"1720200": ["33", "35"], "170000": ["36"]}
    assert report.event_ids == [] and report.serial is None


def test_tsunami_forecast_by_area_code() -> None:
    body = """<Tsunami><Forecast>
      <Item><Area><Name>石川県能登</Name><Code>360</Code></Area>
        <Category><Kind><Name>大津波警報：発表</Name><Code>53</Code></Kind></Category></Item>
      <Item><Area><Name>佐渡</Name><Code> 341</Code></Area>
        <Category><Kind><Name>津波警報</Name><Code>51 </Code></Kind></Category></Item>
    </Forecast></Tsunami>"""
    report = parse_report(message("津波警報・注意報・予報a", body))
    assert report.tsunami_by_area == {"360": "53", "341": "51"}


def test_inspect_dict_has_exactly_the_documented_keys() -> None:
    line = parse_report(message("震度速報", INTENSITY_BODY)).inspect_dict("x.xml")
    assert list(line) == INSPECT_KEYS and line["file"] == "x.xml"


def test_bad_serial_and_bad_dates_are_parse_errors() -> None:
    with pytest.raises(JmaParseError, match="Serial"):
        parse_report(message("震度速報", "", serial="abc"))
    with pytest.raises(JmaParseError, match="ReportDateTime"):
        parse_report(message("震度速報", "").replace(b"2024-01-01T16:13:00+09:00", b"yesterday"))


# --- code tables -----------------------------------------------------------------------------------------------------


def test_every_tsunami_forecast_region_touches_at_least_one_prefecture() -> None:
    assert set(codes.TSUNAMI_AREA_PREFECTURES) == set(codes.TSUNAMI_AREAS)
    for code in codes.TSUNAMI_AREAS:
        prefs = codes.tsunami_area_prefectures(code)
        assert prefs and set(prefs) <= set(PREFECTURES), code
    assert codes.tsunami_area_prefectures("312") == ("12", "13", "14")  # 東京湾内湾


def test_tsunami_aggregates_agree_with_the_coast_mapping() -> None:
    # 結合表現 named after one prefecture (e.g. 482 神奈川県) must only contain coasts touching that prefecture.
    by_name = {p.ja: code for code, p in PREFECTURES.items()}
    for code, (name, members) in codes.TSUNAMI_AGGREGATES.items():
        assert members and set(members) <= set(codes.TSUNAMI_AREAS), code
        if name in by_name:
            assert all(by_name[name] in codes.TSUNAMI_AREA_PREFECTURES[m] for m in members), name


def test_earthquake_areas_and_municipalities_map_to_prefectures() -> None:
    assert codes.EARTHQUAKE_AREAS["390"] == ("石川県能登", "17")
    assert all(pref in PREFECTURES for _, pref in codes.EARTHQUAKE_AREAS.values())
    assert all(codes.municipality_prefecture(code) for code in codes.MUNICIPALITIES)
    assert codes.municipality_prefecture("1720200") == "17"
    assert codes.municipality_prefecture("9900000") is None


def test_intensity_order_and_threshold() -> None:
    assert codes.INTENSITY_ORDER == ["1", "2", "3", "4", "5-", "5+", "6-", "6+", "7"]
    assert codes.intensity_at_least("5+", "5-") and codes.intensity_at_least("5-", "5-")
    assert not codes.intensity_at_least("4", "5-") and not codes.intensity_at_least(None, "1")
    assert not codes.intensity_at_least("不明", "1")
    with pytest.raises(ValueError, match="threshold"):
        codes.intensity_at_least("5-", "5弱")


def test_tsunami_severity_order() -> None:
    s = codes.tsunami_severity
    assert s("62") < s("51") < s("52") == s("53")
    assert all(s(c) is codes.TsunamiSeverity.NONE for c in ("00", "50", "60", "71", "72", "73", "99"))


def test_special_warning_kinds_are_the_code_table_special_ones() -> None:
    assert set(codes.SPECIAL_WARNING_KINDS) == {"32", "33", "35", "36", "37", "38", "39"}
    assert sorted(codes.SPECIAL_WARNING_STATUSES) == ["発表", "継続"]
