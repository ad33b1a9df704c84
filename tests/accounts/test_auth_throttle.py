"""Sign-in throttling (django-axes with accounts.throttle): per account and per client address."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

from tests.conftest import api_client

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"  # tests.factories.accounts.UserFactory


def sign_in(email: str, password: str, address: str):
    return Client(REMOTE_ADDR=address).post("/accounts/login/", {"username": email, "password": password})


def test_fifty_wrong_passwords_then_the_right_one_is_refused(tenant_a):
    email = tenant_a.owner.email
    statuses = [sign_in(email, f"guess-{n}", "203.0.113.7").status_code for n in range(50)]
    assert statuses[:9] == [200] * 9  # the form again, with its error
    assert set(statuses[9:]) == {429}  # the tenth failure reaches LOGIN_FAILURE_LIMIT

    refused = sign_in(email, PASSWORD, "203.0.113.7")
    assert refused.status_code == 429
    assert "Too many sign-in attempts" in refused.content.decode()
    assert int(refused["Retry-After"]) == 15 * 60
    assert "_auth_user_id" not in refused.wsgi_request.session
    # The account is paused from every address, not just the guessing one.
    assert sign_in(email, PASSWORD, "198.51.100.20").status_code == 429
    # A different spelling of the same address counts as the same account.
    assert sign_in(email.upper(), PASSWORD, "198.51.100.21").status_code == 429


def test_other_people_and_api_keys_are_unaffected(tenant_a, tenant_b):
    for n in range(50):
        sign_in(tenant_a.owner.email, f"guess-{n}", "203.0.113.7")

    assert sign_in(tenant_b.owner.email, PASSWORD, "198.51.100.20").status_code == 302
    # API keys do not go through the sign-in form: the same tenant's key works, from the guessing address too.
    assert api_client(tenant_a.api_key).get("/api/v1/me", REMOTE_ADDR="203.0.113.7").status_code == 200


def test_the_pause_ends_after_the_cool_off(tenant_a):
    for n in range(10):
        sign_in(tenant_a.owner.email, f"guess-{n}", "203.0.113.7")
    assert sign_in(tenant_a.owner.email, PASSWORD, "203.0.113.7").status_code == 429

    # Age the failures past LOGIN_LOCKOUT_MINUTES instead of sleeping.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(tenant_a.owner.email, PASSWORD, "203.0.113.7").status_code == 302


def test_a_few_typos_do_not_lock_anyone_out(tenant_a):
    for n in range(5):
        sign_in(tenant_a.owner.email, f"typo-{n}", "203.0.113.7")
    assert sign_in(tenant_a.owner.email, PASSWORD, "203.0.113.7").status_code == 302


def test_one_address_guessing_many_accounts_is_paused(tenant_a, tenant_b):
    # A password spray: one guess each for many accounts. No account reaches its limit, the address does (30).
    for n in range(30):
        sign_in(f"person{n}@victim.example.com", "Summer2026!", "203.0.113.9")

    assert sign_in(tenant_a.owner.email, PASSWORD, "203.0.113.9").status_code == 429
    assert sign_in(tenant_a.owner.email, PASSWORD, "198.51.100.20").status_code == 302  # elsewhere: fine


def test_an_office_address_survives_its_peoples_typos(tenant_a, tenant_b):
    # Below the address limit, people sharing one address sign in after their own typos.
    for person in (tenant_a.admin, tenant_a.member, tenant_b.admin, tenant_b.member):
        for n in range(4):
            sign_in(person.email, f"typo-{n}", "192.0.2.50")
    assert sign_in(tenant_b.owner.email, PASSWORD, "192.0.2.50").status_code == 302


def test_the_locked_out_page_is_in_korean(tenant_a):
    client = Client(REMOTE_ADDR="203.0.113.7", HTTP_ACCEPT_LANGUAGE="ko")
    for n in range(10):
        client.post("/accounts/login/", {"username": tenant_a.owner.email, "password": f"guess-{n}"})
    response = client.post("/accounts/login/", {"username": tenant_a.owner.email, "password": PASSWORD})
    assert response.status_code == 429
    assert "로그인 시도가 너무 많습니다" in response.content.decode()
