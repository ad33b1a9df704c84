"""Password reset by email: Django's token flow behind our pages, mailed through the configured backend."""

import re

import pytest
from django.core import mail
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"  # tests.factories.accounts.UserFactory
NEW_PASSWORD = "a-brand-new-pass-4821"


def reset_path(message) -> str:
    match = re.search(r"(/accounts/reset/\S+/)", message.body)
    assert match, message.body
    return match.group(1)


def main(response) -> str:
    """The page's own content (the CSRF token elsewhere on the page differs per response)."""
    html = response.content.decode()
    return html[html.index("<main"):html.index("</main>")]


def test_the_login_page_links_to_the_reset(client):
    assert 'href="/accounts/password-reset/"' in client.get("/accounts/login/").content.decode()


@override_settings(SITE_URL="https://ragdesk.example.com")
def test_the_emailed_link_sets_a_new_password(client, tenant_a):
    response = client.post("/accounts/password-reset/", {"email": tenant_a.owner.email.upper()})
    assert response.status_code == 302 and response["Location"] == "/accounts/password-reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [tenant_a.owner.email]
    assert message.subject == "Reset your ragdesk password"
    assert "https://ragdesk.example.com/accounts/reset/" in message.body  # SITE_URL, not the Host header
    link = reset_path(message)

    form_page = client.get(link, follow=True)  # Django swaps the token for a session key, then shows the form
    assert form_page.status_code == 200 and 'name="new_password1"' in form_page.content.decode()
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"

    signed_in = Client().post("/accounts/login/", {"username": tenant_a.owner.email, "password": NEW_PASSWORD})
    assert signed_in.status_code == 302
    old = Client().post("/accounts/login/", {"username": tenant_a.owner.email, "password": PASSWORD})
    assert old.status_code == 200  # the form again: the old password is gone
    # The link worked once.
    assert "This link no longer works" in Client().get(link, follow=True).content.decode()


def test_an_unknown_address_reveals_nothing(client, tenant_a):
    known = client.post("/accounts/password-reset/", {"email": tenant_a.owner.email}, follow=True)
    unknown = client.post("/accounts/password-reset/", {"email": "nobody@nowhere.example.com"}, follow=True)
    assert len(mail.outbox) == 1  # only the real account got mail
    assert known.redirect_chain == unknown.redirect_chain
    assert known.status_code == unknown.status_code == 200
    assert main(known) == main(unknown)
    assert "If an account uses that address" in unknown.content.decode()


def test_a_new_password_lifts_the_accounts_sign_in_pause(client, tenant_a):
    guesser = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(10):
        guesser.post("/accounts/login/", {"username": tenant_a.owner.email, "password": f"guess-{n}"})
    owner = Client(REMOTE_ADDR="198.51.100.20")
    assert owner.post("/accounts/login/", {"username": tenant_a.owner.email, "password": PASSWORD}).status_code == 429

    owner.post("/accounts/password-reset/", {"email": tenant_a.owner.email})
    form_page = owner.get(reset_path(mail.outbox[-1]), follow=True)
    owner.post(form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    signed_in = owner.post("/accounts/login/", {"username": tenant_a.owner.email, "password": NEW_PASSWORD})
    assert signed_in.status_code == 302


def test_reset_pages_and_email_are_in_korean(tenant_a):
    client = Client(HTTP_ACCEPT_LANGUAGE="ko")
    assert "비밀번호 재설정" in client.get("/accounts/password-reset/").content.decode()
    client.post("/accounts/password-reset/", {"email": tenant_a.owner.email})
    assert "비밀번호" in mail.outbox[-1].subject
