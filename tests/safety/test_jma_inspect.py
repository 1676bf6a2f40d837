"""`manage.py jma_inspect FILE…` as tools and people use it: a subprocess from the repository root, one JSON line
per file with exactly the documented keys, and exit status 1 (after printing every line) when a file fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.services import shared_fixtures

ROOT = Path(__file__).resolve().parents[2]
from tests.safety.test_jma_parser import INSPECT_KEYS as KEYS  # noqa: E402  (the issue's key list, kept in one place)

NOTO_VXSE51 = "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
TOHOKU_VXSE53 = "earthquake/tohoku2011_vxse53_MAXINT7_41prefs__32-39_11_05_240613_VXSE53.xml"
SATSUMA_TWO_IDS = "tsunami/satsuma2015_vtse51_serial3_after_lift_TWO_EVENTIDS__38-39_02_05_250206_VTSE51.xml"
NOTO_TSUNAMI = "tsunami/REAL_2024-01-01_noto_vtse51_observation__TsunamiInfo.xml"
TOKYO_SPECIAL = "weather/tokyo2016_vpww54_SPECIAL_4kinds__15_13_01_161226_VPWW54.xml"
EEW = "eew/bungo2024_vxse43_warning_serial2_6minus__37_01_02_240613_VXSE43.xml"


def fixture(name: str) -> str:
    return str(shared_fixtures("jma") / name)


def jma_inspect(tmp_path: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "STATE_DIR": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "manage.py", "jma_inspect", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_real_files_print_one_line_each_with_exactly_the_documented_keys(tmp_path: Path) -> None:
    files = [fixture(n) for n in (NOTO_VXSE51, TOHOKU_VXSE53, SATSUMA_TWO_IDS, NOTO_TSUNAMI, TOKYO_SPECIAL, EEW)]
    result = jma_inspect(tmp_path, *files)
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert [line["file"] for line in out] == files
    assert all(list(line) == KEYS for line in out)
    noto, tohoku, satsuma, tsunami, special, eew = out
    assert noto["kind"] == "earthquake" and noto["max_intensity"] == "6+" and noto["serial"] is None
    assert noto["intensity_by_pref"]["17"] == "6+"  # type: ignore[index]
    assert tohoku["max_intensity"] == "7" and tohoku["serial"] == 1 and tohoku["title"] == "震源・震度に関する情報"
    assert satsuma["event_ids"] == ["20151114055157", "20151114061750"]
    assert tsunami["tsunami_by_area"]["360"] == "53"  # type: ignore[index]
    assert special["special_by_area"] and special["event_ids"] == [] and special["kind"] == "weather"
    assert eew["kind"] == "eew" and eew["intensity_by_pref"] == {} and eew["intensity_by_area"] == {}
    assert "震源" in result.stdout  # ensure_ascii=False: Japanese is printed as is


def test_a_broken_file_prints_an_error_line_and_exits_1_after_the_rest(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_bytes(Path(fixture(NOTO_VXSE51)).read_bytes()[:500])
    missing = str(tmp_path / "missing.xml")
    result = jma_inspect(tmp_path, str(broken), fixture(TOHOKU_VXSE53), missing)
    assert result.returncode == 1
    first, second, third = lines(result)
    assert set(first) == {"file", "error"} and first["file"] == str(broken)
    assert "not well-formed" in str(first["error"])
    assert list(second) == KEYS and second["max_intensity"] == "7"
    assert set(third) == {"file", "error"} and third["file"] == missing


def test_a_hostile_file_is_an_error_line(tmp_path: Path) -> None:
    evil = tmp_path / "xxe.xml"
    evil.write_bytes(b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>')
    result = jma_inspect(tmp_path, str(evil))
    assert result.returncode == 1
    (line,) = lines(result)
    assert line["file"] == str(evil) and "XXE" in str(line["error"])
