"""`manage.py jma_replay --org SLUG FILE… --json`, as scripts use it for drills and audits (issue 8): one JSON object
per file with exactly the documented keys, what today's rules and directory would do, in order, from an empty
state. A simulation: nothing is stored and nothing is sent. Run through call_command and once as a real process
from the repository root against the test database."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.management import CommandError, call_command

from directory.models import Organization
from safety.autodispatch import rule_create, safety_settings
from safety.jma.decide import decide
from safety.jma.parser import parse_report
from safety.models import Delivery, Dispatch, Incident, JmaDecision, JmaDocument, Recipient, SafetySettings
from tests import factories
from tests.safety.test_jma_decide import NANKAI_41, NOTO_53, NOTO_L, cancellation
from tests.services import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["file", "decision", "hazard", "drill", "new_targets", "withdrawn_targets", "reason"]
PEOPLE = {  # login ID -> REGION_CODE
    "ishikawa": "17",
    "niigata": "15",
    "tokyo": "13",
    "iwate": "03",
    "tokushima": "36",
    "shizuoka": "22",
    "kochi": "39",
}


def setup_org(slug: str = "acme") -> Organization:
    org = factories.organization(slug=slug, name="ACME株式会社")
    for login, region in PEOPLE.items():
        factories.person(org, login, anpi_login_id=f"anpi-{login}", region_code=region)
    factories.person(org, "no-anpi", region_code="17")  # no safety-confirmation ID: never a target
    rule_create(organization=org, actor=None, name="震度3以上", hazard="earthquake", min_intensity="3")
    rule_create(organization=org, actor=None, name="大津波警報", hazard="tsunami", tsunami_level="major")
    return org


def files(tmp_path: Path) -> list[Path]:
    """Noto 2024: the real VXSE51, our VXSE53 reconstruction, a 取消 of that VXSE53, the VXSE51 again; then the
    2016 南海トラフ 訓練 major tsunami warning."""
    docs = [
        ("noto_vxse51.xml", NOTO_L),
        ("noto_vxse53.xml", NOTO_53),
        ("noto_vxse53_cancel.xml", cancellation(NOTO_53, "2024-01-01T16:40:00+09:00")),
        ("noto_vxse51_again.xml", NOTO_L),
        ("nankai_training_vtse41.xml", NANKAI_41),
    ]
    paths = []
    for name, doc in docs:
        path = tmp_path / name
        path.write_bytes(doc.raw())
        paths.append(path)
    return paths


def expected(paths: list[Path], *, drill_mode: bool) -> list[dict[str, Any]]:
    nankai = (
        {"decision": "dispatch", "new_targets": ["kochi", "shizuoka", "tokushima", "tokyo"]}
        if drill_mode
        else {"decision": "ignore", "new_targets": []}
    )
    rows: list[dict[str, Any]] = [
        {
            "decision": "dispatch",
            "hazard": "earthquake",
            "drill": False,
            "new_targets": ["ishikawa", "niigata", "shizuoka", "tokyo"],
        },
        {"decision": "update", "hazard": "earthquake", "drill": False, "new_targets": ["iwate", "tokushima"]},
        {"decision": "withdraw", "hazard": "earthquake", "drill": False, "withdrawn_targets": ["iwate", "tokushima"]},
        {"decision": "ignore", "hazard": "earthquake", "drill": False},  # the same document again
        {"hazard": "tsunami", "drill": True, **nankai},
    ]
    return [
        {"file": str(path), "new_targets": [], "withdrawn_targets": [], **row}
        for path, row in zip(paths, rows, strict=True)
    ]


def parse_lines(stdout: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for line in lines:
        assert isinstance(line, dict) and list(line) == KEYS, line
        assert isinstance(line["reason"], str) and line["reason"], line
    return lines


def without_reason(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in line.items() if k != "reason"} for line in lines]


def stored_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (JmaDocument, JmaDecision, Incident, Dispatch, Recipient, Delivery)
    }


def replay_command(*args: str) -> str:
    out = StringIO()
    call_command("jma_replay", *args, stdout=out)
    return out.getvalue()


# --- through call_command ------------------------------------------------------------------------------------------


def test_replay_prints_one_line_per_file_and_stores_and_sends_nothing(db, tmp_path, capture_events):
    org = setup_org()
    paths = files(tmp_path)
    # A stored state that has already seen the Noto VXSE51 (as the live service leaves it): replay must not use it.
    raw_l = paths[0].read_bytes()
    stored = decide(
        parse_report(raw_l),
        rules=[],
        people=[],
        state=None,
        drill_mode=False,
        doc_key=hashlib.sha256(raw_l).hexdigest(),
    ).state
    settings_row = safety_settings(org)
    settings_row.jma_state = stored
    settings_row.save(update_fields=["jma_state"])
    before = stored_counts()

    lines = parse_lines(replay_command("--org", "acme", *map(str, paths), "--json"))

    assert without_reason(lines) == without_reason(expected(paths, drill_mode=False))
    assert "duplicate" in lines[3]["reason"] and "drill" in lines[4]["reason"]
    # Each run starts from nothing: the same run again prints the same lines.
    assert parse_lines(replay_command("--org", "acme", *map(str, paths), "--json")) == lines
    assert stored_counts() == before == {name: 0 for name in before}
    assert SafetySettings.objects.get(organization=org).jma_state == stored
    assert capture_events.events == [] and mail.outbox == []


def test_replay_drill_mode_on_dispatches_the_training_message_as_a_drill(db, tmp_path):
    setup_org()
    paths = files(tmp_path)
    lines = parse_lines(replay_command("--org", "acme", *map(str, paths), "--json", "--drill-mode", "on"))
    assert without_reason(lines) == without_reason(expected(paths, drill_mode=True))
    assert not safety_settings(Organization.objects.get(slug="acme")).drill_mode  # the setting itself is untouched


def test_replay_uses_the_organisations_current_rules_and_directory(db, tmp_path):
    org = setup_org()
    path = files(tmp_path)[0]
    factories.person(org, "ishikawa2", anpi_login_id="anpi-ishikawa2", region_code="17")
    rule_create(
        organization=org,
        actor=None,
        name="本社",
        hazard="earthquake",
        min_intensity="6+",
        target_mode="chosen",
        person_ids=[factories.person(org, "hq", anpi_login_id="anpi-hq").id],
    )
    line = parse_lines(replay_command("--org", "acme", str(path), "--json"))[0]
    assert line["new_targets"] == ["hq", "ishikawa", "ishikawa2", "niigata", "shizuoka", "tokyo"]


def test_unknown_organisation_is_a_clear_error(db, tmp_path):
    setup_org()
    with pytest.raises(CommandError, match="no organisation with the ID 'nope'"):
        replay_command("--org", "nope", str(files(tmp_path)[0]), "--json")


def test_a_file_that_does_not_parse_is_named_and_nothing_is_printed(db, tmp_path):
    setup_org()
    good = files(tmp_path)[0]
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<Report")
    out = StringIO()
    with pytest.raises(CommandError, match=r"broken\.xml: .*not well-formed"):
        call_command("jma_replay", "--org", "acme", str(good), str(broken), "--json", stdout=out)
    assert out.getvalue() == ""
    with pytest.raises(CommandError, match=r"missing\.xml"):
        replay_command("--org", "acme", str(tmp_path / "missing.xml"), "--json")


# --- as a real process from the repository root ---------------------------------------------------------------------


def run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "jma_replay", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_replay_as_a_process_from_the_repository_root(tmp_path):
    org = setup_org("replay-proc")
    paths = files(tmp_path)
    state_before = safety_settings(org).jma_state

    done = run_replay("--org", "replay-proc", *map(str, paths), "--json")

    assert done.returncode == 0, done.stderr
    assert without_reason(parse_lines(done.stdout)) == without_reason(expected(paths, drill_mode=False))
    assert stored_counts() == {name: 0 for name in stored_counts()}
    assert SafetySettings.objects.get(organization=org).jma_state == state_before

    unknown = run_replay("--org", "nope", str(paths[0]), "--json")
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert "no organisation with the ID 'nope'" in unknown.stderr

    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"not xml at all")
    failed = run_replay("--org", "replay-proc", str(paths[0]), str(broken), "--json")
    assert failed.returncode != 0 and failed.stdout == ""
    assert f"{broken}: " in failed.stderr and "not well-formed" in failed.stderr


def test_replay_does_not_even_create_the_settings_row(db, tmp_path):
    org = setup_org()
    replay_command("--org", "acme", str(files(tmp_path)[0]), "--json")
    assert not SafetySettings.objects.filter(organization=org).exists()
