"""Settings come from the environment alone: bad values stop start-up naming the variable, and the
production profile passes `manage.py check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from consumers.webpush import vapid_keys_generate
from tests.services import ROOT

pytestmark = pytest.mark.timeout(60)

PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "x" * 20 + "-production-secret-key-for-the-test-only-0123456789",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/tsunagu",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "EMAIL_URL": "smtp+tls://mailer:secret@mail.example.com:587",
    "SITE_URL": "https://anpi.example.co.jp",
    "ALLOWED_HOSTS": "anpi.example.co.jp",
}


def manage(*args: str, env: dict[str, str], state_dir) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.startswith(("VAPID", "EMAIL", "DJANGO_"))
    }
    clean.update(STATE_DIR=str(state_dir), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=50
    )


def test_production_profile_passes_check_deploy(tmp_path):
    private, public = vapid_keys_generate()
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**PRODUCTION, "VAPID_PRIVATE_KEY": private, "VAPID_PUBLIC_KEY": public},
        state_dir=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG must be one of"),
        ("AXES_FAILURE_LIMIT", "ten", "AXES_FAILURE_LIMIT must be an integer"),
        ("AXES_FAILURE_LIMIT", "1", "AXES_FAILURE_LIMIT must be at least 3"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL must be a URL with scheme"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a URL with scheme"),
        ("EMAIL_URL", "smtp://", "EMAIL_URL must name a host"),
        ("EMAIL_URL", "pigeon://coop", "EMAIL_URL must be a URL with scheme"),
        ("LANGUAGE_CODE", "fr", "LANGUAGE_CODE must be one of"),
        ("VAPID_PUBLIC_KEY", "abc", "VAPID_PRIVATE_KEY must be set when VAPID_PUBLIC_KEY is"),
        ("VAPID_PRIVATE_KEY", "not-a-key", "VAPID_PRIVATE_KEY is not a base64url P-256 private key"),
        ("TRUSTED_PROXY_COUNT", "-1", "TRUSTED_PROXY_COUNT must be at least 0"),
        ("REDIS_URL", "redis://127.0.0.1:notaport/0", "REDIS_URL has an invalid port"),
        ("CHANNEL_REDIS_URLS", "not-a-url", "CHANNEL_REDIS_URLS must be a URL with scheme"),
        ("SITE_URL", "http://", "SITE_URL must name a host"),
    ],
)
def test_bad_environment_value_stops_start_up_naming_the_variable(tmp_path, name, value, message):
    result = manage("check", env={name: value}, state_dir=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[-1]


def test_production_refuses_to_start_without_its_services(tmp_path):
    env = {k: v for k, v in PRODUCTION.items() if k != "REDIS_URL"}
    result = manage("check", env=env, state_dir=tmp_path)
    assert result.returncode != 0 and "REDIS_URL must be set in production" in result.stderr


def test_mismatched_vapid_pair_is_refused_and_private_key_is_never_printed(tmp_path):
    private, _ = vapid_keys_generate()
    _, other_public = vapid_keys_generate()
    result = manage("check", env={"VAPID_PRIVATE_KEY": private, "VAPID_PUBLIC_KEY": other_public}, state_dir=tmp_path)
    assert result.returncode != 0 and "VAPID_PUBLIC_KEY does not belong to VAPID_PRIVATE_KEY" in result.stderr
    assert private not in result.stderr + result.stdout


def test_vapid_keys_are_generated_once_outside_the_repository(tmp_path):
    first = manage(
        "shell", "-c", "from consumers.vapid import vapid_keys; print(vapid_keys().public)", env={}, state_dir=tmp_path
    )
    second = manage(
        "shell", "-c", "from consumers.vapid import vapid_keys; print(vapid_keys().public)", env={}, state_dir=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and len(first.stdout.strip().splitlines()[-1]) == 87
    key_file = tmp_path / "vapid.json"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not (ROOT / "vapid.json").exists()
