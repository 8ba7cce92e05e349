"""End users get in by themselves (issue 19): staff invite a person by email, anyone resets a forgotten
password by email, with Django's own views; links expire, work once, and are audited without tokens."""
import re
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_quota_buckets(settings):
    """Reset mails are rate-limited in quota buckets, which live in Redis when REDIS_URL is set and outlive a test's
    rollback: each test gets buckets of its own, or the address limited by one test is still limited in the next."""
    settings.QUOTA_KEY_PREFIX = f"{settings.QUOTA_KEY_PREFIX}{uuid.uuid4().hex[:8]}:"

NEW_PASSWORD = "a-fresh-long-password-19"
LINK = re.compile(r"https?://[^/\s]+(/accounts/(?:invitation|reset)/[^/\s]+/[^/\s]+/)")


def link_in(message):
    match = LINK.search(message.body)
    assert match, message.body
    return match.group(1)


def set_password(client, link, password=NEW_PASSWORD):
    """Open the emailed link as a browser would (it redirects to a token-free URL), then post the form."""
    landing = client.get(link, follow=True)
    form_url = landing.redirect_chain[-1][0] if landing.redirect_chain else link
    return landing, client.post(form_url, {"new_password1": password, "new_password2": password})


def can_sign_in(username, password):
    client = Client(REMOTE_ADDR="10.19.0.1")
    client.post("/accounts/login/", {"username": username, "password": password})
    return "_auth_user_id" in client.session


@pytest.fixture
def inviter(make_user):
    user = make_user("grace", staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_user", "view_user"],
                                                          content_type__app_label="auth"))
    client = Client()
    client.force_login(user)
    return client


# --- invitations ---------------------------------------------------------------------------------


def test_staff_invite_a_person_who_sets_a_password_with_the_emailed_link(inviter):
    page = inviter.get("/admin/auth/user/invite/")
    assert page.status_code == 200 and b"Send the invitation" in page.content
    assert b"Invite a person by email" in inviter.get("/admin/auth/user/").content

    response = inviter.post("/admin/auth/user/invite/", {"email": "Lin@Example.org", "username": "lin"})
    assert response.status_code == 302

    lin = get_user_model().objects.get(username="lin")
    assert lin.email == "Lin@example.org" and not lin.has_usable_password()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["Lin@example.org"] and "invited you" in message.body and "3 days" in message.body

    client = Client()
    landing, saved = set_password(client, link_in(message))
    assert b"Choose a password for your account" in landing.content
    assert saved.status_code == 302 and saved["Location"] == "/accounts/invitation/done/"
    assert can_sign_in("lin", NEW_PASSWORD)

    invited = AuditEvent.objects.get(action="auth.user_invited", result="success")
    assert invited.target_id == str(lin.pk) and invited.principal == "user:grace"
    password_set = AuditEvent.objects.get(action="auth.password_set")
    assert password_set.target_id == str(lin.pk) and password_set.details["link"] == "invitation"
    token = link_in(message).rstrip("/").rsplit("/", 1)[-1]
    for row in AuditEvent.objects.all():
        assert token not in str(row.details) and "Lin@example.org" not in str(row.details)


def test_a_used_invitation_link_is_refused(inviter):
    inviter.post("/admin/auth/user/invite/", {"email": "lin@example.org"})
    link = link_in(mail.outbox[0])
    set_password(Client(), link)
    again = Client().get(link, follow=True)
    assert b"This invitation no longer works" in again.content
    assert b'name="new_password1"' not in again.content


def test_an_expired_invitation_link_is_refused(inviter, settings):
    settings.INVITATION_TIMEOUT = 1
    inviter.post("/admin/auth/user/invite/", {"email": "lin@example.org"})
    time.sleep(2.1)
    landing, saved = set_password(Client(), link_in(mail.outbox[0]))
    assert b"This invitation no longer works" in landing.content
    assert not get_user_model().objects.get(username="lin@example.org").has_usable_password()


def test_an_invitation_outlives_the_password_reset_timeout(inviter, settings):
    settings.PASSWORD_RESET_TIMEOUT = 1
    settings.INVITATION_TIMEOUT = 60
    inviter.post("/admin/auth/user/invite/", {"email": "lin@example.org"})
    time.sleep(2.1)
    landing, saved = set_password(Client(), link_in(mail.outbox[0]))
    assert saved.status_code == 302 and can_sign_in("lin@example.org", NEW_PASSWORD)


def test_an_invitation_link_is_no_reset_link_and_the_other_way_round(inviter, make_user):
    inviter.post("/admin/auth/user/invite/", {"email": "lin@example.org"})
    invitation = link_in(mail.outbox[0])
    as_reset = invitation.replace("/accounts/invitation/", "/accounts/reset/")
    assert b"This link no longer works" in Client().get(as_reset, follow=True).content


def test_staff_without_add_user_cannot_invite(make_user):
    staff = make_user("bob", staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/auth/user/invite/").status_code == 403
    assert client.post("/admin/auth/user/invite/", {"email": "x@example.org"}).status_code == 403
    assert not get_user_model().objects.filter(email="x@example.org").exists() and not mail.outbox


def test_someone_who_can_sign_in_already_is_not_invited(inviter, make_user):
    ada = make_user("ada")
    ada.email = "ada@example.org"
    ada.save()
    response = inviter.post("/admin/auth/user/invite/", {"email": "ada@example.org"})
    assert response.status_code == 200 and b"can already sign in" in response.content
    assert not mail.outbox
    refused = AuditEvent.objects.get(action="auth.user_invited")
    assert refused.result != "success"


def test_an_invitation_cannot_take_over_a_staff_account_or_redirect_one(inviter):
    User = get_user_model()
    User.objects.create_user("root", email="root@example.org", is_staff=True, is_superuser=True)  # no password
    User.objects.create_user("lin", email="lin@example.org")
    to_staff = inviter.post("/admin/auth/user/invite/", {"email": "grace@evil.example", "username": "root"})
    assert to_staff.status_code == 200 and b"You may not invite" in to_staff.content
    elsewhere = inviter.post("/admin/auth/user/invite/", {"email": "grace@evil.example", "username": "lin"})
    assert b"You may not invite" in elsewhere.content
    assert not mail.outbox
    assert User.objects.get(username="lin").email == "lin@example.org"
    assert AuditEvent.objects.filter(action="auth.user_invited", result="denied").count() == 2
    # Her own address on file: the pending account gets its link.
    assert inviter.post("/admin/auth/user/invite/", {"email": "lin@example.org", "username": "lin"}).status_code == 302
    assert [m.to for m in mail.outbox] == [["lin@example.org"]]

def test_the_admin_action_invites_selected_accounts_without_a_password(inviter):
    User = get_user_model()
    lin = User.objects.create_user("lin", email="lin@example.org")  # no password: unusable
    response = inviter.post("/admin/auth/user/", {"action": "send_invitation", "_selected_action": [lin.pk]},
                            follow=True)
    assert b"Sent 1 invitation" in response.content
    assert [m.to for m in mail.outbox] == [["lin@example.org"]]
    set_password(Client(), link_in(mail.outbox[0]))
    assert can_sign_in("lin", NEW_PASSWORD)


def test_the_invite_command(capsys):
    call_command("invite", "mo@example.org", "--username", "mo", "--base-url", "https://brain.example")
    assert "Invited mo" in capsys.readouterr().out
    assert "https://brain.example/accounts/invitation/" in mail.outbox[0].body
    with pytest.raises(CommandError, match="valid email"):
        call_command("invite", "not-an-address")


# --- password reset ------------------------------------------------------------------------------


@pytest.fixture
def ada(make_user):
    user = make_user("ada", password="the-old-password-19")
    user.email = "ada@example.org"
    user.save()
    return user


def test_the_login_page_links_to_password_reset():
    page = Client().get("/accounts/login/")
    assert b'href="/accounts/password_reset/"' in page.content
    form = Client().get("/accounts/password_reset/")
    assert form.status_code == 200 and b'name="email"' in form.content


def test_a_forgotten_password_is_reset_by_email(ada):
    client = Client()
    response = client.post("/accounts/password_reset/", {"email": "ada@example.org"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password_reset/done/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["ada@example.org"]
    assert "1 hour" in mail.outbox[0].body

    landing, saved = set_password(Client(), link_in(mail.outbox[0]))
    assert b"Choose a new password" in landing.content
    assert saved.status_code == 302 and saved["Location"] == "/accounts/reset/done/"
    assert can_sign_in("ada", NEW_PASSWORD) and not can_sign_in("ada", "the-old-password-19")
    row = AuditEvent.objects.get(action="auth.password_set")
    assert row.target_id == str(ada.pk) and row.details["link"] == "reset"

    used = Client().get(link_in(mail.outbox[0]), follow=True)
    assert b"This link no longer works" in used.content


def test_an_unknown_address_gets_the_same_answer(ada):
    known = Client().post("/accounts/password_reset/", {"email": "ada@example.org"}, follow=True)
    unknown = Client(REMOTE_ADDR="10.19.0.9").post("/accounts/password_reset/", {"email": "nobody@example.org"},
                                                  follow=True)
    assert known.status_code == unknown.status_code == 200
    assert known.redirect_chain == unknown.redirect_chain
    assert known.content == unknown.content
    assert [m.to for m in mail.outbox] == [["ada@example.org"]]


def test_an_expired_reset_link_is_refused(ada, settings):
    settings.PASSWORD_RESET_TIMEOUT = 1
    Client().post("/accounts/password_reset/", {"email": "ada@example.org"})
    time.sleep(2.1)
    landing, _ = set_password(Client(), link_in(mail.outbox[0]))
    assert b"This link no longer works" in landing.content
    assert can_sign_in("ada", "the-old-password-19")


def test_reset_requests_for_one_address_are_limited(ada):
    Client().post("/accounts/password_reset/", {"email": "ada@example.org"})
    again = Client(REMOTE_ADDR="10.19.0.2").post("/accounts/password_reset/", {"email": "ada@example.org"})
    assert again.status_code == 429 and "Retry-After" in again
    assert len(mail.outbox) == 1


def test_a_new_password_does_not_lift_a_login_lockout(ada):
    ip = "10.19.0.3"
    for _ in range(5):
        Client(REMOTE_ADDR=ip).post("/accounts/login/", {"username": "ada", "password": "wrong-guess"})
    Client().post("/accounts/password_reset/", {"email": "ada@example.org"})
    set_password(Client(), link_in(mail.outbox[0]))
    client = Client(REMOTE_ADDR="10.19.0.4")
    response = client.post("/accounts/login/", {"username": "ada", "password": NEW_PASSWORD})
    assert response.status_code == 429 and "_auth_user_id" not in client.session
