"""Issue 10, fault 4: real JMA sequences replayed in disorder give exactly the specified dispatches.

The documents are the shared real fixtures (and variants made here from their bytes the way JMA writes them: a
取消, a 訂正, a 訓練 copy). They go through the real entry points: a local HTTP server on 127.0.0.1 serves an Atom
feed and the documents, and `feed_poll` fetches and ingests them in feed order, as the beat's `jma_poll` does; the
REST push path (`jma_document_ingest`, source "push") brings some in a second time. Deciding and sending run as the
eager worker runs them, after commit (`jma_decide` → `decision_execute` → `dispatch_run`), through PostgreSQL, the
local push service (which decrypts what it gets) and a real SMTP server.

Every person below is based in one prefecture (REGION_CODE) and has a browser at the local push service, an
e-mail address and the app: three channels. "asked" is the incident's recipients at the end.

Expected dispatches (one rule per table, people by prefecture):

(a)/(b) 2008 岩手・宮城内陸 VXSE52 → VXSE53 serial 1 → serial 2; rule 震度4以上, people 岩手 宮城 新潟 東京.
    | delivered                                   | incidents | asked            | dispatch rows           |
    | in order, every document 4×                 | 1 real    | 岩手 宮城 新潟    | 2 (s1: 岩手 宮城; s2: 新潟) |
    | any order (20 seeded shuffles, each 4×)     | 1 real    | 岩手 宮城 新潟    | 1 if s2 comes first, else 2 |
    Every asked person: one delivery per channel (round 1), one push, one mail. 東京 (震度3) is never asked.

(c) 訂正 of serial 1 (新潟 3→4, 茨城 4→3); rule 震度4以上, people 岩手 宮城 茨城 新潟.
    | s1 then 訂正    | 1 incident; s1 asks 岩手 宮城 茨城; the 訂正 adds 新潟 and withdraws 茨城 (told, rows removed) |
    | 訂正 then s1    | 1 incident; the 訂正 asks 岩手 宮城 新潟; s1 is out of date: 茨城 never asked                  |
    Either way at the end: asked 岩手 宮城 新潟.

(d) 取消 of serial 2; the same rule and people as (a).
    | s1, s2, 取消(s2) in any order but the next | asked 岩手 宮城; 新潟 never asked, or asked then told withdrawn |
    | s2, 取消(s2), s1                | s2 asks all 3, its 取消 takes all back (incident completed);         |
    |                                 | s1, which still stands, asks 岩手 宮城 again: a 2nd incident          |
    | s2, s1 (out of date), 取消(s2)  | regression: only 新潟 is withdrawn; s1 still covers 岩手 宮城         |
    | s1, s2, 取消(s2), 取消(s1)      | nobody asked; incident completed; each asked person told once        |
    | one poll listing 取消(s2), s2   | regression (feeds list newest first): 新潟 is never asked            |

(e) 訓練 and 試験: the TRAINING VXSE52, the 訓練 nankai VTSE41 大津波警報, the 試験 VXSE42 and a 訓練 copy of serial 1,
    shuffled with the real sequence of (a).
    | drill mode off | exactly (a): 1 real incident, nothing for any drill or test |
    | drill mode on  | (a) plus 1 drill incident (【訓練】, is_drill) for 岩手 宮城, never merged; 試験 never sends |

(f) 2011 東北 tsunami VTSE41 14:49 → VTSE51 14:50 → VTSE41 14:53 → VTSE41 03-13 (lifted); rule 大津波警報,
    people 青森 岩手 宮城 福島 東京.
    | in order, each 2×       | 1 incident; 14:49 asks 岩手 宮城 福島; 14:53 (青森 警報→大津波警報) adds 青森, |
    |                         | once; the lift sends nothing                                              |
    | 14:53 before 14:49      | 1 incident, 1 dispatch row: all four at once; 14:49 and 14:50 are out of date |
    | a downgrade (14:53 re-issued at 15:00, 大津波警報 → 津波警報), then 14:53 again | nothing new |
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from directory.models import Organization, User
from safety import autodispatch
from safety.jma.ingest import jma_document_ingest
from safety.jma.parser import parse_report
from safety.jma.poller import PollResult, feed_poll
from safety.models import (
    Delivery,
    Dispatch,
    DispatchRule,
    Incident,
    IncidentStatus,
    JmaDecision,
    JmaDocument,
    JmaFeed,
    Recipient,
    SafetySettings,
)
from tests.pushservice import LocalPushService
from tests.safety.conftest import pushes_by_person, safety_person, subscribe
from tests.safety.test_jma_poller import JmaServer, atom
from tests.services import free_port, shared_fixtures

pytestmark = pytest.mark.django_db

CHANNELS = ("email", "inapp", "push")
SHUFFLES = int(os.environ.get("JMA_REPLAY_SHUFFLES", "20"))
SEED = 20240101

AOMORI, IWATE, MIYAGI, FUKUSHIMA, IBARAKI, TOKYO, NIIGATA = "02", "03", "04", "07", "08", "13", "15"


# --- documents -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    name: str
    raw: bytes = field(repr=False)

    @property
    def title(self) -> str:
        return parse_report(self.raw).title


def shared(slug: str) -> Doc:
    found = sorted(shared_fixtures("jma").glob(f"*/{slug}__*.xml"))
    assert len(found) == 1, f"{slug!r} names {len(found)} shared fixtures"
    return Doc(slug, found[0].read_bytes())


def _edit(doc: Doc, name: str, *substitutions: tuple[str, str]) -> Doc:
    text = doc.raw.decode("utf-8")
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.S)
        assert count == 1, f"{pattern!r} not found in {doc.name}"
    return Doc(name, text.encode("utf-8"))


def _at(at: str) -> tuple[str, str]:
    return (r"<ReportDateTime>[^<]*</ReportDateTime>", f"<ReportDateTime>{at}</ReportDateTime>")


def cancellation(doc: Doc, at: str) -> Doc:
    """The 取消 JMA sends for `doc`: same Title, EventID and Serial, a later ReportDateTime, a Body of one Text."""
    return _edit(
        doc,
        f"cancel-{doc.name}",
        (r"<InfoType>発表</InfoType>", "<InfoType>取消</InfoType>"),
        _at(at),
        (r"(<Body\b[^>]*>).*(</Body>)", r"\1<Text>先ほどの、震源・震度情報を取り消します。</Text>\2"),
    )


def as_drill(doc: Doc) -> Doc:
    return _edit(doc, f"drill-{doc.name}", (r"<Status>通常</Status>", "<Status>訓練</Status>"))


def _pref_max(code: str, old: str, new: str) -> tuple[str, str]:
    return (rf"(<Pref><Name>[^<]*</Name><Code>{code}</Code><MaxInt>){re.escape(old)}(</MaxInt>)", rf"\g<1>{new}\2")


EQ_52 = shared("iwatemiyagi2008_vxse52_hypocenter")
EQ_S1 = shared("iwatemiyagi2008_vxse53_serial1_max6plus_19prefs")
EQ_S2 = shared("iwatemiyagi2008_vxse53_serial2_max6plus_21prefs")
EQ_S2_CANCEL = cancellation(EQ_S2, "2008-06-14T09:00:00+09:00")
EQ_S1_CANCEL = cancellation(EQ_S1, "2008-06-14T09:01:00+09:00")
# A 訂正 of serial 1: 新潟県 3 → 4 (newly over the rule), 茨城県 4 → 3 (no longer over it).
EQ_S1_CORRECTED = _edit(
    EQ_S1,
    "correct-s1",
    (r"<InfoType>発表</InfoType>", "<InfoType>訂正</InfoType>"),
    _at("2008-06-14T08:50:00+09:00"),
    _pref_max(NIIGATA, "3", "4"),
    _pref_max(IBARAKI, "4", "3"),
)
DRILL_52 = shared("TRAINING_vxse52_suruga")
DRILL_TSUNAMI = shared("TRAINING_nankai2016_vtse41_MAJOR_29areas")
TEST_EEW = shared("TEST_vxse42_eew_delivery_test")
DRILL_S1 = as_drill(EQ_S1)
TS_1449 = shared("tohoku2011_vtse41_1449_MAJOR_iwate_miyagi_fukushima")
TS_1450 = shared("tohoku2011_vtse51_1450_arrival_times")
TS_1453 = shared("tohoku2011_vtse41_1453_MAJOR_adds_aomori")
TS_LIFTED = shared("tohoku2011_vtse41_0313_all_lifted_forecast_only")
# 14:53 issued again at 15:00 with every 大津波警報 (52, 53) down to 津波警報 (51): a downgrade.
TS_DOWNGRADE = Doc(
    "downgrade-1500",
    re.sub(
        rb"<Code>5[23]</Code>",
        b"<Code>51</Code>",
        _edit(TS_1453, "x", _at("2011-03-11T15:00:00+09:00")).raw,
    ),
)


# --- the pipeline: a local JMA feed, the poller, the push endpoint's ingest ----------------------------------------


class Pipeline:
    """Brings documents in as production does and runs what each commit sets off (deciding, sending) eagerly."""

    def __init__(self, server: JmaServer, capture: Callable[..., Any]) -> None:
        self.server = server
        self.capture = capture
        self.listed: list[bytes] = []  # the feed's entries, newest first

    @property
    def feed_url(self) -> str:
        return self.server.url("/feed/eqvol.xml")

    def link(self, doc: Doc, *, mirror: bool = False) -> str:
        path = f"/{'mirror' if mirror else 'data'}/{doc.name}.xml"
        self.server.documents[path] = doc.raw
        return self.server.url(path)

    def poll(self, *docs: Doc | tuple[Doc, str], keep: bool = True) -> PollResult:
        """List `docs` at the top of the feed, in this order (JMA lists the newest first), then poll it once.
        A (doc, "mirror") pair lists the same bytes under a second URL."""
        entries = []
        for item in docs:
            doc, where = item if isinstance(item, tuple) else (item, "data")
            url = self.link(doc, mirror=where == "mirror")
            entries.append(
                f"<entry><title>{doc.title}</title><id>{url}</id><updated>2024-01-01T00:00:00Z</updated>"
                f'<author><name>気象庁</name></author><link type="application/xml" href="{url}"/>'
                f'<content type="text">{doc.name}</content></entry>'.encode()
            )
        self.listed = entries + self.listed if keep else entries
        self.server.feeds["/feed/eqvol.xml"] = atom(self.listed)
        return self.repoll()

    def repoll(self) -> PollResult:
        with self.capture(execute=True):
            result = feed_poll(self.feed_url)
        assert result.ok, (result.error, result.failed)
        return result

    def push(self, doc: Doc) -> JmaDocument:
        """The same document pushed to the REST endpoint's ingest under its own URL."""
        with self.capture(execute=True):
            return jma_document_ingest(url=f"push:{doc.name}", raw=doc.raw, source="push")

    def reset(self) -> None:
        self.listed = []
        self.server.feeds.clear()
        self.server.documents.clear()


@pytest.fixture
def pipeline(settings: Any, django_capture_on_commit_callbacks: Callable[..., Any]) -> Iterator[Pipeline]:
    settings.JMA_HTTP_TIMEOUT = 10
    server = JmaServer(free_port())
    server.start()
    try:
        yield Pipeline(server, django_capture_on_commit_callbacks)
    finally:
        server.stop()


@dataclass
class World:
    org: Organization
    push: LocalPushService
    smtp: Any
    people: dict[str, User]

    def login(self, person_id: int) -> str:
        return next(login for login, p in self.people.items() if p.id == person_id)

    def reset(self, pipeline: Pipeline) -> None:
        """Forget every document, decision and incident, as if none of the sequence had arrived."""
        Incident.objects.filter(organization=self.org).delete()
        JmaDecision.objects.all().delete()
        JmaDocument.objects.all().delete()
        JmaFeed.objects.all().delete()
        SafetySettings.objects.filter(organization=self.org).update(jma_state={})
        self.push.received.clear()
        self.smtp.messages.clear()
        pipeline.reset()


def world(org: Organization, push: LocalPushService, smtp: Any, rule: dict[str, Any], **regions: str) -> World:
    autodispatch.rule_create(organization=org, actor=None, **{"name": "rule", **rule})
    people = {}
    for login, region in regions.items():
        people[login] = safety_person(org, login, region_code=region)
        subscribe(push, people[login])
    return World(org, push, smtp, people)


QUAKE_4 = {"hazard": "earthquake", "min_intensity": "4"}


@pytest.fixture
def quake(org: Organization, push_service: LocalPushService, smtp_server: Any) -> World:
    return world(org, push_service, smtp_server, QUAKE_4, iwate=IWATE, miyagi=MIYAGI, niigata=NIIGATA, tokyo=TOKYO)


# --- what came out -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """The dispatches of one replay: per incident (event key without its opening time, drill) who is asked."""

    incidents: dict[tuple[str, bool], tuple[str, ...]]
    dispatch_rows: dict[tuple[str, bool], list[tuple[str, ...]]]
    status: dict[tuple[str, bool], str]


def result(w: World, *, withdrawn: Sequence[str] = ()) -> Result:
    """Read the outcome and check the promises that hold whatever the order: each asked person has exactly one
    delivery row per channel, never resent (round 1), received exactly one push and one mail per incident (plus
    one withdrawal notice per incident that took them back), and nobody is asked twice."""
    incidents: dict[tuple[str, bool], tuple[str, ...]] = {}
    rows: dict[tuple[str, bool], list[tuple[str, ...]]] = {}
    status: dict[tuple[str, bool], str] = {}
    expected_pushes: Counter[str] = Counter()
    for incident in Incident.objects.filter(organization=w.org).order_by("id"):
        key = (incident.jma_event.split("@", 1)[0], incident.is_drill)
        if key in incidents:  # the event opened again after everyone was withdrawn: a second incident
            key = (f"{key[0]}#2", key[1])
        assert key not in incidents, f"three incidents for {key}"
        asked = sorted(
            w.login(p) for p in Recipient.objects.filter(incident=incident).values_list("person_id", flat=True)
        )
        incidents[key] = tuple(asked)
        status[key] = incident.status
        deliveries = Counter(
            (w.login(p), channel, rnd)
            for p, channel, rnd in Delivery.objects.filter(incident=incident).values_list(
                "person_id", "channel", "round"
            )
        )
        assert deliveries == Counter({(login, ch, 1): 1 for login in asked for ch in CHANNELS}), key
        rows[key] = [
            tuple(
                sorted(
                    w.login(p) for p in Recipient.objects.filter(first_dispatch=d).values_list("person_id", flat=True)
                )
            )
            for d in Dispatch.objects.filter(incident=incident).order_by("number")
        ]
        assert sorted(login for row in rows[key] for login in row) == list(asked), key
        for login in asked:
            expected_pushes[login] += 1
    received = pushes_by_person(w.push)
    pushes = Counter({w.login(p): len(items) for p, items in received.items()})
    withdrawals = Counter(w.login(p) for p, items in received.items() for i in items if _is_withdrawal(i))
    for login in withdrawn:
        expected_pushes[login] += 2  # asked, then told it is withdrawn
    assert +pushes == +expected_pushes, "pushes per person"
    assert +withdrawals == Counter(withdrawn), "withdrawal notices per person"
    mails = Counter(a.split("@", 1)[0] for m in w.smtp.messages for a in m.envelope_to)
    assert +mails == +expected_pushes, "mails per person"
    return Result(incidents, rows, status)


def _is_withdrawal(payload: dict[str, Any]) -> bool:
    return str(payload.get("title", "")).startswith(("【取消】", "[Withdrawn]"))


REAL_QUAKE = ("earthquake|通常|20080614084350", False)
REAL_QUAKE_AGAIN = ("earthquake|通常|20080614084350#2", False)
DRILL_QUAKE = ("earthquake|訓練|20080614084350", True)
REAL_TSUNAMI = ("tsunami|通常|20110311144640", False)
DRILL_TSUNAMI_EVENT = ("tsunami|訓練|20160901071000", True)


# --- (a) in order, every document four times -----------------------------------------------------------------------


def test_a_sequence_delivered_in_order_with_every_document_four_times_dispatches_once_per_newly_hit_person(
    quake: World, pipeline: Pipeline
) -> None:
    for doc in (EQ_52, EQ_S1, EQ_S2):
        pipeline.poll(doc, doc)  # listed twice in one feed
        assert pipeline.repoll().fetched == []  # the feed polled again: a 304, nothing fetched
        pipeline.poll((doc, "mirror"))  # the same bytes under another URL
        pipeline.push(doc)  # and pushed in as well

    got = result(quake)
    assert got.incidents == {REAL_QUAKE: ("iwate", "miyagi", "niigata")}
    assert got.dispatch_rows[REAL_QUAKE] == [("iwate", "miyagi"), ("niigata",)]
    assert JmaDocument.objects.count() == 9  # 3 documents × (feed URL, mirror URL, push URL)
    codes = Counter(JmaDecision.objects.filter(organization=quake.org).values_list("reason_code", flat=True))
    assert codes == Counter({"duplicate": 6, "no_intensity": 1, "dispatch": 1, "update": 1})


# --- (b) the same sequence in any order ----------------------------------------------------------------------------


def _deliver_shuffled(
    pipeline: Pipeline, docs: Sequence[Doc], rng: random.Random, ways: Sequence[str] = ("data", "data", "mirror")
) -> list[Doc]:
    """Bring every document in once per entry of `ways` ("data": listed in the feed, so twice is a re-listing;
    "mirror": the same bytes under a second URL; "push": through the push endpoint's ingest) in a random order,
    cut into polls at random. Returns the order in which each document was first processed."""
    arrivals: list[tuple[Doc, str]] = [(d, how) for d in docs for how in ways]
    rng.shuffle(arrivals)
    first: list[Doc] = []
    batch: list[Doc | tuple[Doc, str]] = []
    for doc, how in arrivals:
        if doc not in first:
            first.append(doc)
        if how == "push":
            if batch:
                pipeline.poll(*batch)
                batch = []
            pipeline.push(doc)
            continue
        batch.append(doc if how == "data" else (doc, "mirror"))
        if rng.random() < 0.4:
            pipeline.poll(*batch)
            batch = []
    if batch:
        pipeline.poll(*batch)
    assert pipeline.repoll().fetched == []
    return first


def test_twenty_seeded_shuffles_with_duplicates_give_the_same_dispatches(quake: World, pipeline: Pipeline) -> None:
    rng = random.Random(SEED)
    seen_orders = set()
    for run in range(SHUFFLES):
        quake.reset(pipeline)
        order = _deliver_shuffled(pipeline, [EQ_52, EQ_S1, EQ_S2], rng, ("data", "data", "mirror", "push"))
        seen_orders.add(tuple(d.name for d in order))
        got = result(quake)
        where = f"run {run}, first arrivals {[d.name for d in order]}"
        assert got.incidents == {REAL_QUAKE: ("iwate", "miyagi", "niigata")}, where
        if order.index(EQ_S2) < order.index(EQ_S1):
            assert got.dispatch_rows[REAL_QUAKE] == [("iwate", "miyagi", "niigata")], where
        else:
            assert got.dispatch_rows[REAL_QUAKE] == [("iwate", "miyagi"), ("niigata",)], where
    if SHUFFLES >= 20:
        assert len(seen_orders) >= 5, "the shuffles should cover (nearly) all six orders"


# --- (c) 訂正 ------------------------------------------------------------------------------------------------------


@pytest.fixture
def corrected(org: Organization, push_service: LocalPushService, smtp_server: Any) -> World:
    return world(org, push_service, smtp_server, QUAKE_4, iwate=IWATE, miyagi=MIYAGI, ibaraki=IBARAKI, niigata=NIIGATA)


def test_a_correction_adds_the_newly_covered_and_withdraws_those_it_takes_out(
    corrected: World, pipeline: Pipeline
) -> None:
    pipeline.poll(EQ_S1)
    assert result(corrected).incidents == {REAL_QUAKE: ("ibaraki", "iwate", "miyagi")}

    pipeline.poll(EQ_S1_CORRECTED)
    pipeline.push(EQ_S1_CORRECTED)

    got = result(corrected, withdrawn=["ibaraki"])
    assert got.incidents == {REAL_QUAKE: ("iwate", "miyagi", "niigata")}
    assert got.dispatch_rows[REAL_QUAKE] == [("iwate", "miyagi"), ("niigata",)]  # 茨城's rows are gone


def test_a_correction_that_arrives_before_the_report_it_corrects_wins(corrected: World, pipeline: Pipeline) -> None:
    pipeline.poll(EQ_S1_CORRECTED, EQ_S1)  # one poll, the 訂正 listed (and so ingested) first
    pipeline.push(EQ_S1)

    got = result(corrected)
    assert got.incidents == {REAL_QUAKE: ("iwate", "miyagi", "niigata")}
    assert got.dispatch_rows[REAL_QUAKE] == [("iwate", "miyagi", "niigata")]
    late = JmaDecision.objects.get(document__url=pipeline.link(EQ_S1))
    assert late.reason_code == "out_of_date"


# --- (d) 取消 ------------------------------------------------------------------------------------------------------


def test_a_cancellation_in_any_order_leaves_only_the_people_the_rest_reached(quake: World, pipeline: Pipeline) -> None:
    import itertools

    for order in itertools.permutations([EQ_S1, EQ_S2, EQ_S2_CANCEL]):
        quake.reset(pipeline)
        for doc in order:
            pipeline.poll(doc)
            pipeline.push(doc)
        names = [d.name for d in order]
        s1, s2, c2 = order.index(EQ_S1), order.index(EQ_S2), order.index(EQ_S2_CANCEL)
        if s2 < c2 < s1:
            # Serial 2 asked all three and its 取消 took them all back (the incident completes); serial 1, which
            # still stands, then asks 岩手 and 宮城 again: the event's second incident.
            got = result(quake, withdrawn=["iwate", "miyagi", "niigata"])
            assert got.incidents == {REAL_QUAKE: (), REAL_QUAKE_AGAIN: ("iwate", "miyagi")}, names
            assert got.status[REAL_QUAKE] == IncidentStatus.COMPLETED, names
            continue
        # 新潟 is asked only by serial 2. If serial 2 was applied before its 取消, 新潟 was asked and then told.
        got = result(quake, withdrawn=["niigata"] if s2 < c2 else [])
        assert got.incidents == {REAL_QUAKE: ("iwate", "miyagi")}, names
        assert got.status[REAL_QUAKE] == IncidentStatus.ACCEPTING, names


def test_a_cancellation_listed_before_its_report_in_one_poll_means_nobody_is_asked_for_it(
    quake: World, pipeline: Pipeline
) -> None:
    """Regression: JMA's feeds list the newest entry first and the poller ingests in feed order, so a catch-up
    poll that finds a report and its 取消 applies the 取消 first. The report must not then be sent."""
    pipeline.poll(EQ_S1)
    pipeline.poll(EQ_S2_CANCEL, EQ_S2)  # newest first, as eqvol.xml lists them

    got = result(quake)
    assert got.incidents == {REAL_QUAKE: ("iwate", "miyagi")}
    late = JmaDecision.objects.get(document__url=pipeline.link(EQ_S2))
    assert late.decision == "ignore" and late.due_at is None, late.reason


def test_cancelling_every_report_completes_the_incident_and_tells_everyone_once(
    quake: World, pipeline: Pipeline
) -> None:
    for doc in (EQ_S1, EQ_S2, EQ_S2_CANCEL, EQ_S1_CANCEL):
        pipeline.poll(doc)
        pipeline.poll((doc, "mirror"))
        pipeline.push(doc)

    got = result(quake, withdrawn=["iwate", "miyagi", "niigata"])
    assert got.incidents == {REAL_QUAKE: ()}
    assert got.status[REAL_QUAKE] == IncidentStatus.COMPLETED

    # Both 取消 first (a catch-up after an outage), then the reports: nothing at all is sent.
    quake.reset(pipeline)
    pipeline.poll(EQ_S1_CANCEL, EQ_S2_CANCEL, EQ_S2, EQ_S1)
    assert result(quake).incidents == {}


# --- (e) 訓練 and 試験 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drill_mode", [False, True], ids=["drill-mode-off", "drill-mode-on"])
def test_drills_and_tests_mixed_into_the_real_sequence_never_make_a_real_dispatch(
    quake: World, pipeline: Pipeline, drill_mode: bool
) -> None:
    autodispatch.drill_mode_set(organization=quake.org, actor=None, drill_mode=drill_mode)
    DispatchRule.objects.create(organization=quake.org, name="津波", hazard="tsunami", tsunami_level="warning")
    rng = random.Random(SEED + drill_mode)
    for run in range(2):
        quake.reset(pipeline)
        _deliver_shuffled(pipeline, [EQ_52, EQ_S1, EQ_S2, DRILL_52, DRILL_TSUNAMI, TEST_EEW, DRILL_S1], rng)
        got = result(quake)
        expected: dict[tuple[str, bool], tuple[str, ...]] = {REAL_QUAKE: ("iwate", "miyagi", "niigata")}
        if drill_mode:
            # The 訓練 copy of serial 1: its own drill incident (新潟 is 3 in serial 1), and the nankai drill's
            # 津波警報 for the 岩手, 宮城 and 東京 coasts: a drill tsunami incident. Neither merges with the real one.
            expected[DRILL_QUAKE] = ("iwate", "miyagi")
            expected[DRILL_TSUNAMI_EVENT] = ("iwate", "miyagi", "tokyo")
        assert got.incidents == expected, f"run {run}"
        drills = Incident.objects.filter(organization=quake.org, is_drill=True)
        assert all(i.titles["ja"].startswith("【訓練】") for i in drills)
        assert not Incident.objects.filter(organization=quake.org, is_drill=False, jma_event__contains="訓練").exists()
        test_decisions = JmaDecision.objects.filter(document__status="試験").values_list("reason_code", flat=True)
        assert set(test_decisions) == {"test"}


# --- (f) a tsunami upgrade, once, and a downgrade, nothing ---------------------------------------------------------


@pytest.fixture
def tsunami(org: Organization, push_service: LocalPushService, smtp_server: Any) -> World:
    rule = {"hazard": "tsunami", "tsunami_level": "major"}
    return world(
        org,
        push_service,
        smtp_server,
        rule,
        aomori=AOMORI,
        iwate=IWATE,
        miyagi=MIYAGI,
        fukushima=FUKUSHIMA,
        tokyo=TOKYO,
    )


def test_a_tsunami_upgrade_adds_the_newly_covered_coast_once_and_the_lift_sends_nothing(
    tsunami: World, pipeline: Pipeline
) -> None:
    for doc in (TS_1449, TS_1450, TS_1453, TS_LIFTED):
        pipeline.poll(doc, doc)
        pipeline.push(doc)
    got = result(tsunami)
    assert got.incidents == {REAL_TSUNAMI: ("aomori", "fukushima", "iwate", "miyagi")}
    assert got.dispatch_rows[REAL_TSUNAMI] == [("fukushima", "iwate", "miyagi"), ("aomori",)]


def test_a_tsunami_upgrade_that_arrives_first_makes_the_earlier_messages_out_of_date(
    tsunami: World, pipeline: Pipeline
) -> None:
    pipeline.poll(TS_1453, TS_1450, TS_1449)  # one catch-up poll, newest first
    pipeline.push(TS_1449)
    got = result(tsunami)
    assert got.incidents == {REAL_TSUNAMI: ("aomori", "fukushima", "iwate", "miyagi")}
    assert got.dispatch_rows[REAL_TSUNAMI] == [("aomori", "fukushima", "iwate", "miyagi")]


def test_a_tsunami_downgrade_and_a_re_upgrade_within_the_event_send_nothing_new(
    tsunami: World, pipeline: Pipeline
) -> None:
    pipeline.poll(TS_1449)
    pipeline.poll(TS_1453)
    before = result(tsunami)
    pipeline.poll(TS_DOWNGRADE)
    pipeline.push(TS_DOWNGRADE)
    assert JmaDecision.objects.get(document__url=pipeline.link(TS_DOWNGRADE)).decision == "ignore"
    # The 14:53 message again under another URL is a duplicate; re-issued as new bytes it is out of date.
    pipeline.poll((TS_1453, "mirror"))
    assert result(tsunami) == before
