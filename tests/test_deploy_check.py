"""Production mode (DEBUG off) is secure by default: `check --deploy` passes with only the variables an operator
must set anyway, and an on-premise install over plain HTTP can still opt out with one documented variable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.base",
    "DEBUG": "false",
    "SECRET_KEY": "k7Qw-2xv9Jc0rT4mZpL8sB1nH6yF3dE5aG9uVwXqYzR0tS2vU4wP7oI1kM3jN6bC",
    "ALLOWED_HOSTS": "ragdesk.example.com",
    "SITE_URL": "https://ragdesk.example.com",
}
SECURITY_SETTINGS = ["SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
                     "SIGNUP_OPEN", "SECURE_PROXY_SSL_HEADER"]


def run(args: list[str], **variables: str) -> subprocess.CompletedProcess:
    # Only the machine's variables (PATH, DATABASE_URL...) plus the given ones: no DEBUG=true from scripts/env-run,
    # and no HTTPS_ONLY, SIGNUP_OPEN... left over from the developer's shell.
    env = {k: v for k, v in os.environ.items() if k not in {*PRODUCTION, *SECURITY_SETTINGS, "HTTPS_ONLY"}}
    env.update(PRODUCTION, **variables)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def production_settings(**variables: str) -> dict:
    code = f"from django.conf import settings; print(json.dumps({{k: getattr(settings, k, None) for k in {SECURITY_SETTINGS!r}}}))"
    result = run(["shell", "-c", f"import json; {code}"], **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_passes_in_production_mode():
    result = run(["check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_mode_turns_on_https_settings_and_closes_sign_up():
    assert production_settings() == {
        "SECURE_SSL_REDIRECT": True, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000, "SIGNUP_OPEN": False, "SECURE_PROXY_SSL_HEADER": None,
    }
    # The demo (`make run` runs with DEBUG=true) keeps plain HTTP and open sign-up.
    demo = production_settings(DEBUG="true")
    assert demo["SIGNUP_OPEN"] is True and demo["SECURE_SSL_REDIRECT"] is False and demo["SECURE_HSTS_SECONDS"] == 0


def test_a_plain_http_install_and_a_proxy_are_one_variable_each():
    plain = production_settings(HTTPS_ONLY="false", SIGNUP_OPEN="true")
    assert plain["SECURE_SSL_REDIRECT"] is False and plain["SESSION_COOKIE_SECURE"] is False
    assert plain["SECURE_HSTS_SECONDS"] == 0 and plain["SIGNUP_OPEN"] is True
    proxied = production_settings(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=31536000)
def test_https_redirect_spares_health_probes(client):
    # Orchestrators probe over plain HTTP inside the cluster; everything else moves to HTTPS.
    assert client.get("/accounts/login/")["Location"] == "https://testserver/accounts/login/"
    assert client.get("/healthz").status_code == 200
    assert "max-age=31536000" in client.get("/accounts/login/", secure=True)["Strict-Transport-Security"]


def test_password_reset_mail_can_go_through_a_real_smtp_server():
    code = ("from django.conf import settings; "
            "print(settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS)")
    result = run(["shell", "-c", code], EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                 EMAIL_HOST="smtp.example.com", EMAIL_PORT="587", EMAIL_USE_TLS="true")
    assert result.stdout.split()[-4:] == ["django.core.mail.backends.smtp.EmailBackend", "smtp.example.com", "587", "True"]
