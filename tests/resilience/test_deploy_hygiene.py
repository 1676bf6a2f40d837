"""Deploy hygiene (issue 10, item 12): the security headers every response carries, HSTS in production only,
no inline script or style a strict Content-Security-Policy would block, no secret in the repository beyond
audited false positives, and a dependency audit that says so when its database cannot be reached.

`manage.py check --deploy` is tested in tests/config/test_settings.py. The browser half of the CSP (every page
in a real Chromium, zero violations) is tests/resilience/test_csp_browser.py."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from chat import services as chat_services
from config.security import DEFAULT_CSP, csp_header, csp_policy
from tests import factories
from tests.conftest import signed_in
from tests.services import IN_CI, ROOT, free_port

pytestmark = pytest.mark.timeout(300)

AUDIT = ROOT / "bin" / "audit"
POLICY = csp_header(DEFAULT_CSP)
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "p" * 20 + "-production-secret-key-for-the-test-only-0123456789",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "EMAIL_URL": "smtp://mail.example.com:25",
    "SITE_URL": "https://anpi.example.co.jp",
    "ALLOWED_HOSTS": "anpi.example.co.jp",
}


def audit_module() -> ModuleType:
    loader = SourceFileLoader("bin_audit", str(AUDIT))
    module = module_from_spec(spec_from_loader("bin_audit", loader))
    loader.exec_module(module)
    return module


def require_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        message = f"{name} is not installed: pip install -e '.[dev]'"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def run(command: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# --- Headers --------------------------------------------------------------------------------------------------


def assert_headers(response: Any, where: str, *, html: bool) -> None:
    headers = response.headers
    assert headers.get("Content-Security-Policy") == POLICY, (where, headers.get("Content-Security-Policy"))
    assert "unsafe-inline" not in POLICY and "unsafe-eval" not in POLICY
    assert "geolocation=(self)" in headers.get("Permissions-Policy", ""), where
    assert "camera=()" in headers.get("Permissions-Policy", ""), where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Referrer-Policy") == "same-origin", where
    assert headers.get("Cross-Origin-Opener-Policy") == "same-origin", where
    if html:
        assert headers.get("X-Frame-Options") == "DENY", where
    # Development answers over plain HTTP: no HSTS, even on a request that says it is secure.
    assert "Strict-Transport-Security" not in headers, where


@pytest.mark.django_db
def test_pages_api_static_files_and_errors_carry_the_security_headers(org, admin_client: Client) -> None:
    anonymous = Client()
    checks = [
        (anonymous.get("/acme/"), "sign-in page", True, 200),
        (anonymous.get("/acme/", secure=True), "sign-in page over https", True, 200),
        (admin_client.get("/acme/home/"), "home page", True, 200),
        (admin_client.get("/acme/api/me/"), "API answer", False, 200),
        (anonymous.get("/acme/api/me/"), "API refusal", False, 403),
        (anonymous.get("/acme/no-such-page/"), "404 page", True, 404),
        (anonymous.get("/sw.js"), "service worker", False, 200),
        (anonymous.get("/static/frontend/app.css"), "static file", False, 200),
        (anonymous.get("/static/frontend/manuals/employee.html"), "static HTML manual", False, 200),
        (anonymous.get("/healthz"), "health check", False, 200),
    ]
    for response, where, html, status in checks:
        assert response.status_code == status, (where, response.status_code)
        assert_headers(response, where, html=html)


@pytest.mark.django_db
def test_a_talk_file_keeps_its_own_sandboxing_policy(org) -> None:
    alice = factories.person(org, "alice", talk_available=True)
    bob = factories.person(org, "bob", talk_available=True)
    room = chat_services.room_direct_open(user=alice, other=bob)
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 0)).save(image, format="PNG")
    upload = SimpleUploadedFile("photo.png", image.getvalue(), content_type="image/png")
    message = chat_services.message_send(room=room, sender=alice, body="", upload=upload)
    attachment = room.attachments.get()
    assert message.id
    response = signed_in(bob).get(f"/acme/api/talk/files/{attachment.id}/")
    assert response.status_code == 200
    # The view's own policy wins over the site's: the file can run nothing and load nothing.
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_report_only_sends_the_policy_without_enforcing_it(settings, client: Client) -> None:
    settings.SECURE_CSP_REPORT_ONLY, settings.SECURE_CSP = settings.SECURE_CSP, {}
    response = client.get("/healthz")
    assert "Content-Security-Policy" not in response.headers
    assert response.headers["Content-Security-Policy-Report-Only"] == POLICY


@pytest.mark.parametrize(
    ("extra", "report_uri", "expected"),
    [
        ("", "", {}),
        ("img-src https://cdn.example.jp", "", {"img-src": ["'self'", "blob:", "https://cdn.example.jp"]}),
        (
            "connect-src wss://ws.example.jp; script-src https://cdn.example.jp https://cdn.example.jp",
            "",
            {"connect-src": ["'self'", "wss://ws.example.jp"], "script-src": ["'self'", "https://cdn.example.jp"]},
        ),
        # 'none' gives way to the first real source.
        ("frame-src https://maps.example.jp", "", {"frame-src": ["https://maps.example.jp"]}),
        ("", "https://csp.example.jp/r", {"report-uri": ["https://csp.example.jp/r"]}),
    ],
)
def test_csp_extra_adds_sources_to_the_default_policy(extra: str, report_uri: str, expected: dict) -> None:
    policy = csp_policy(extra=extra, report_uri=report_uri)
    assert policy == {**DEFAULT_CSP, **expected}
    assert DEFAULT_CSP["img-src"] == ["'self'", "blob:"], "the default was changed in place"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("scripts-src https://cdn.example.jp", "'scripts-src' is not a directive that can be extended"),
        ("sandbox allow-scripts", "'sandbox' is not a directive that can be extended"),
        ("img-src", "'img-src' needs at least one source"),
        ("img-src https://a.example,https://b.example", "is not a valid source"),
        ("img-src 'self'x'", "is not a valid source"),
    ],
)
def test_a_bad_csp_extra_is_refused_naming_the_variable(extra: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)) as raised:
        csp_policy(extra=extra)
    assert str(raised.value).startswith("CSP_EXTRA:")


def test_a_bad_csp_extra_stops_start_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(STATE_DIR=str(tmp_path), CSP_EXTRA="scripts-src https://cdn.example.jp")
    result = run([sys.executable, "manage.py", "check"], env=env, timeout=60)
    assert result.returncode != 0
    assert "CSP_EXTRA: 'scripts-src' is not a directive that can be extended" in result.stderr


PROBE = """
import json
import django
django.setup()
from django.test import Client
c = Client(HTTP_HOST="anpi.example.co.jp")
out = {}
for name, path, secure in (("https", "/healthz", True), ("http", "/healthz", False), ("redirect", "/", False)):
    r = c.get(path, secure=secure)
    out[name] = {"status": r.status_code, "location": r.headers.get("Location"), "headers": dict(r.headers)}
print(json.dumps(out))
"""


def test_production_sends_hsts_over_https_and_redirects_plain_http(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECURE_", "CSP_"))}
    env.update(PRODUCTION, STATE_DIR=str(tmp_path), DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/none")
    result = run([sys.executable, "-c", PROBE], env=env, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    https = seen["https"]["headers"]
    assert seen["https"]["status"] == 200
    # A year, the subdomains too; preload only when the customer decides (SECURE_HSTS_PRELOAD).
    assert https["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert https["Content-Security-Policy"] == POLICY
    assert https["Permissions-Policy"] and https["Cross-Origin-Opener-Policy"] == "same-origin"
    # HSTS means nothing over plain HTTP, so it is not sent there; the load balancer's probe stays on HTTP.
    assert seen["http"]["status"] == 200 and "Strict-Transport-Security" not in seen["http"]["headers"]
    assert seen["redirect"]["status"] == 301
    assert seen["redirect"]["location"] == "https://anpi.example.co.jp/"


# --- What a strict policy blocks, found before a browser does ------------------------------------------------

TEMPLATE_DIRS = [ROOT / app / "templates" for app in ("frontend", "chat", "safety", "directory", "consumers")]
STATIC_DIRS = [ROOT / "frontend" / "static"]
BLOCKED_IN_MARKUP = [
    (re.compile(r"<style[\s>]", re.I), "a <style> block"),
    (re.compile(r"\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"\son[a-z]+\s*=\s*[\"']", re.I), "an inline event handler"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
]
BLOCKED_IN_SCRIPTS = [
    (re.compile(r"style=[\\\"'`$]|style=\$\{"), "a style attribute in markup built by script"),
    (re.compile(r"setAttribute\(\s*[\"']style[\"']"), "setAttribute('style', ...)"),
    (re.compile(r"\beval\(|new Function\(|set(?:Timeout|Interval)\(\s*[\"'`]"), "code built from a string"),
    (re.compile(r"javascript:"), "a javascript: URL"),
]


def files_under(dirs: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for d in dirs if d.is_dir() for p in d.rglob("*") if p.suffix in suffixes and p.is_file())


def test_no_inline_script_style_or_handler_in_templates_and_scripts() -> None:
    markup = files_under(TEMPLATE_DIRS + STATIC_DIRS, (".html",))
    scripts = [*files_under(STATIC_DIRS, (".js",)), ROOT / "frontend/templates/frontend/sw.js"]
    assert len(markup) > 40 and len(scripts) > 10, (len(markup), len(scripts))
    found = []
    for paths, rules in ((markup, BLOCKED_IN_MARKUP), (scripts, BLOCKED_IN_SCRIPTS)):
        for path in paths:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                found += [f"{path.relative_to(ROOT)}:{number}: {what}" for rule, what in rules if rule.search(line)]
    assert found == [], "\n".join(found)


def test_the_markup_check_finds_what_it_looks_for() -> None:
    samples = [
        "<style>.a{}</style>",
        '<span style="width:10%">',
        "<form onsubmit=\"return confirm('x')\">",
        '<a href="javascript:void(0)">',
        "<script>alert(1)</script>",
    ]
    for sample, (rule, what) in zip(samples, BLOCKED_IN_MARKUP, strict=True):
        assert rule.search(sample), what
    assert not any(rule.search('<script type="module" src="/static/a.js"></script>') for rule, _ in BLOCKED_IN_MARKUP)
    assert not any(rule.search('<li data-depth="2" class="dept">') for rule, _ in BLOCKED_IN_MARKUP)
    js = ['el("span", { html: `<b style="x">` })', 'node.setAttribute("style", v)', 'setTimeout("go()", 1)']
    assert [any(rule.search(s) for rule, _ in BLOCKED_IN_SCRIPTS) for s in js] == [True, True, True]
    assert not any(rule.search('node.style.cssText = "width:1%"') for rule, _ in BLOCKED_IN_SCRIPTS)


# --- Secrets ---------------------------------------------------------------------------------------------------


def test_the_repository_holds_no_secret_outside_the_audited_baseline() -> None:
    """detect-secrets over every file git would commit. Each baseline entry was checked by hand and marked
    is_secret=false: examples in docs and .env.example, passwords of test users, an alphabet. Keys the tests
    need (VAPID, SECRET_KEY) are generated at run time, none is committed."""
    require_tool("detect-secrets")
    result = run([sys.executable, str(AUDIT), "secrets"], env=dict(os.environ), timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ files scanned, 0 problems", result.stdout), result.stdout


def test_a_new_secret_or_an_unaudited_baseline_entry_is_reported() -> None:
    audit = audit_module()
    entry = {"type": "Secret Keyword", "hashed_secret": "ab" * 20, "line_number": 3}
    baseline = {"tests/factories.py": [{**entry, "is_secret": False}]}
    assert audit.secret_problems({"tests/factories.py": [entry]}, baseline) == []
    moved = {"tests/factories.py": [{**entry, "line_number": 30}]}
    assert audit.secret_problems(moved, baseline) == [], "a finding that only moved is still the audited one"
    leaked = {"config/settings/base.py": [{**entry, "hashed_secret": "cd" * 20, "line_number": 9}]}
    assert audit.secret_problems(leaked, baseline) == [
        "config/settings/base.py:9: Secret Keyword (not in .secrets.baseline)"
    ]
    unaudited = {"tests/factories.py": [dict(entry)]}
    assert "not audited" in audit.secret_problems({}, unaudited)[0]
    assert "marked a real secret" in audit.secret_problems({}, {"x": [{**entry, "is_secret": True}]})[0]


def test_the_baseline_only_holds_audited_false_positives() -> None:
    baseline = json.loads((ROOT / ".secrets.baseline").read_text())
    entries = [e for listed in baseline["results"].values() for e in listed]
    assert entries and all(e.get("is_secret") is False for e in entries)
    assert not any(name.endswith((".pem", ".key", ".env")) for name in baseline["results"])


# --- Dependency audit -------------------------------------------------------------------------------------------

STUB = """#!{python}
import json, sys
print(json.dumps({report}))
sys.exit({status})
"""


def stub(tmp_path: Path, report: dict[str, Any], status: int) -> str:
    path = tmp_path / "pip-audit"
    path.write_text(STUB.format(python=sys.executable, report=repr(report), status=status))
    path.chmod(0o755)
    return str(path)


def dependency(name: str, version: str, vulns: list[dict[str, Any]] | None = None, skip: str = "") -> dict:
    return {"name": name, "version": version, "vulns": vulns or []} if not skip else {"name": name, "skip_reason": skip}


def audit_deps(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUDIT_TIMEOUT": "120", **env_extra}
    return run([sys.executable, str(AUDIT), "deps"], env=env, timeout=280)


@pytest.mark.parametrize(
    ("dependencies", "status", "says"),
    [
        ([dependency("django", "5.2.19"), dependency("tsunagu", "0.1.0", skip="not on PyPI")], 0, "0 known vuln"),
        (
            [dependency("django", "5.2.0", [{"id": "PYSEC-2025-1", "fix_versions": ["5.2.1"], "aliases": []}])],
            1,
            "FINDING django 5.2.0: PYSEC-2025-1",
        ),
        # What PyPI's JSON API answers from this machine: no record for any installed version.
        (
            [dependency("django", "5.2.19", skip="Dependency not found on PyPI and could not be audited")],
            3,
            "could not reach the vulnerability database (pypi): it answered for none",
        ),
    ],
)
def test_the_dependency_audit_reports_findings_and_gaps_as_they_are(
    tmp_path: Path, dependencies: list, status: int, says: str
) -> None:
    fake = stub(tmp_path, {"dependencies": dependencies, "fixes": []}, 1 if status == 1 else 0)
    result = audit_deps({"PIP_AUDIT": fake})
    assert result.returncode == status, result.stdout + result.stderr
    assert says in result.stdout


def test_the_dependency_audit_says_so_when_its_database_cannot_be_reached(tmp_path: Path) -> None:
    """Every request goes to a proxy that is not there: the audit must not come back clean."""
    require_tool("pip-audit")
    closed = f"http://127.0.0.1:{free_port()}"
    result = audit_deps(
        {
            "HTTPS_PROXY": closed,
            "HTTP_PROXY": closed,
            "https_proxy": closed,
            "http_proxy": closed,
            "NO_PROXY": "",
            "no_proxy": "",
            "PIP_AUDIT_CACHE_DIR": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path),
        }
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "could not reach the vulnerability database (pypi)" in result.stdout
    assert "could not reach the vulnerability database (osv)" in result.stdout
    assert "known vulnerabilities" not in result.stdout
