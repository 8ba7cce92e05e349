"""The `email` connector: config and recipient validation, the message it builds (plain + HTML),
and every delivery outcome, through Django's locmem backend and end to end through the real SMTP
backend against a loopback SMTP sink (aiosmtpd)."""
import json
import smtplib
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import ValidationFailed
from connectors import services
from connectors.models import Connector, Delivery
from connectors.platforms.base import ConnectorError, OutgoingMessage
from connectors.platforms.email import EmailConnector, classify, html_body
from connectors.registry.kinds import connector_for
from tests.conftest import BASE_DIR, SYSTEM
from tests.deliveries import retry_now, send_now
from tests.fakes.smtp_sink import SmtpSink

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "brain@example.org"


@pytest.fixture
def mailer(make_connector):
    return make_connector("mail", kind="email", config={"from_address": FROM, "reply_to": "help@example.org"})


@pytest.fixture
def sink(settings):
    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = sink.host
    settings.EMAIL_PORT = sink.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    yield sink
    sink.stop()


def send(recipient, content="Your build finished.", connector_id="mail"):
    return send_now(connector_id, recipient, content)


# --- configuration and recipients ------------------------------------------------------------


@pytest.mark.parametrize(
    "config, field",
    [
        ({}, "(root)"),
        ({"from_address": "not-an-address"}, "from_address"),
        ({"from_address": "Brain <brain@example.org>"}, "from_address"),
        ({"from_address": FROM, "reply_to": "nobody"}, "reply_to"),
        ({"from_address": FROM, "subject": "Hi\r\nBcc: victim@example.org"}, "subject"),
        ({"from_address": FROM, "subject": "   "}, "subject"),
        ({"from_address": FROM, "smtp_host": "mail.example.org"}, "(root)"),
    ],
)
def test_invalid_config_is_refused(config, field):
    with pytest.raises(ValidationFailed) as caught:
        services.register_connector(SYSTEM, id="bad_mail", kind="email", display_name="Mail", config=config)
    assert caught.value.code == "invalid_config"
    assert field in caught.value.details["config"]
    assert not Connector.objects.filter(pk="bad_mail").exists()


def test_valid_config_is_accepted():
    row = services.register_connector(
        SYSTEM, id="ok_mail", kind="email", display_name="Mail",
        config={"from_address": FROM, "subject": "News from BRAIN", "reply_to": "help@example.org"},
    )
    assert row.config["subject"] == "News from BRAIN"


@pytest.mark.parametrize("recipient", ["ada", "ada@", "@example.org", "ada@example", "Ada <ada@example.org>",
                                       "ada@example.org\nBcc: x@example.org", " ada@example.org"])
def test_invalid_recipient_is_refused_when_queued(mailer, recipient):
    with pytest.raises(ValidationFailed) as caught:
        services.send_message(SYSTEM, "mail", recipient, "hello")
    assert caught.value.code == "invalid_recipient"
    assert "recipient" in caught.value.details
    assert Delivery.objects.count() == 0
    assert mail.outbox == []


def test_api_answers_invalid_recipient_with_400(mailer, make_user, token_for, api):
    client = api(token_for(make_user("root", superuser=True)))
    response = client.post("/api/v1/connectors/mail/send/", {"recipient": "ada", "content": "hi"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_recipient"
    assert Delivery.objects.count() == 0
    good = client.post("/api/v1/connectors/mail/send/", {"recipient": "ada@example.org", "content": "hi"}, format="json")
    assert good.status_code == 202, good.content
    assert Delivery.objects.get().status == "sent"


def test_other_kinds_keep_accepting_any_recipient(make_connector):
    make_connector("plain")
    assert send("ada", connector_id="plain").status == "sent"


def test_platform_refuses_an_invalid_recipient_permanently(mailer):
    """A row queued before validation (or written another way) still fails cleanly, never raising."""
    with pytest.raises(ConnectorError) as caught:
        connector_for(mailer).send(OutgoingMessage(recipient="nobody", content="x"), delivery_id="d-1")
    assert caught.value.permanent and caught.value.code == "invalid_recipient"
    delivery = Delivery.objects.create(connector=mailer, recipient="nobody", content="x", principal="system:tests")
    services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "Invalid recipient" in delivery.last_error
    assert mail.outbox == []


# --- the message (locmem backend) ------------------------------------------------------------


def test_sent_message_has_plain_text_and_escaped_html(mailer):
    content = 'Hello <b>Ada</b> & "friends"\nLine two\r\nLine three'
    delivery = send("ada@example.org", content)
    assert delivery.status == "sent" and delivery.attempts == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "Message from BRAIN"
    assert message.from_email == FROM
    assert message.to == ["ada@example.org"]
    assert message.reply_to == ["help@example.org"]
    assert message.body == content
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    # The HTML part is rendered from the Markdown; raw HTML in it stays text, line breaks stay breaks.
    assert "<p>Hello &lt;b&gt;Ada&lt;/b&gt; &amp; &quot;friends&quot;<br />\nLine two<br />\nLine three</p>" in html
    assert "<b>" not in html
    assert message.extra_headers["Message-ID"] == delivery.platform_message_id
    assert str(delivery.id) in delivery.platform_message_id
    assert delivery.platform_message_id.endswith("@example.org>")
    assert AuditEvent.objects.filter(action="message.sent", target_id="mail").count() == 1


def test_subject_comes_from_config(make_connector):
    make_connector("news", kind="email", config={"from_address": FROM, "subject": "BRAIN news"})
    send("ada@example.org", connector_id="news")
    assert mail.outbox[0].subject == "BRAIN news"
    assert mail.outbox[0].reply_to == []


def test_html_body_escapes_and_keeps_line_breaks():
    html = html_body("<script>alert(1)</script>\n\nbye\nnow")
    assert "<script>" not in html
    assert "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n<p>bye<br />\nnow</p>" in html


# --- end to end through Django's SMTP backend -------------------------------------------------


def test_smtp_end_to_end(mailer, sink):
    delivery = send("ada@example.org", "Hello <Ada>\nsecond line")
    assert delivery.status == "sent", delivery.last_error
    [received] = sink.messages
    assert received.mail_from == FROM
    assert received.rcpt_tos == ["ada@example.org"]
    msg = received.message
    assert msg["Subject"] == "Message from BRAIN"
    assert msg["Reply-To"] == "help@example.org"
    assert msg["Message-ID"] == delivery.platform_message_id
    assert msg.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in msg.iter_parts()}
    assert parts["text/plain"].replace("\r\n", "\n").rstrip("\n") == "Hello <Ada>\nsecond line"
    assert "<p>Hello &lt;Ada&gt;<br />" in parts["text/html"]


def test_smtp_markdown_becomes_the_html_part_and_stays_as_written_in_the_text_part(mailer, sink):
    content = "# Report\n\n**Build failed**, see [the log](https://ci.example.org/1).\n\n- one\n- two <i>"
    delivery = send("ada@example.org", content)
    assert delivery.status == "sent", delivery.last_error
    parts = {part.get_content_type(): part.get_content() for part in sink.messages[0].message.iter_parts()}
    assert parts["text/plain"].replace("\r\n", "\n").rstrip("\n") == content
    html = parts["text/html"].replace("\r\n", "\n")
    assert "<h1>Report</h1>" in html and "<strong>Build failed</strong>" in html
    assert '<a href="https://ci.example.org/1">the log</a>' in html
    assert "<li>one</li>\n<li>two &lt;i&gt;</li>" in html and "<i>" not in html


def test_smtp_recipient_refused_550_fails_permanently(mailer, sink):
    sink.mode = "refuse_recipient"
    delivery = send("ghost@example.org")
    assert delivery.status == "failed"
    assert "550" in delivery.last_error
    assert sink.messages == []
    failed = AuditEvent.objects.filter(action="message.failed", target_id="mail").get()
    assert failed.details["error"] == "recipient_refused" and failed.details["permanent"] is True


def test_smtp_sender_refused_553_fails_permanently(mailer, sink):
    sink.mode = "refuse_sender"
    delivery = send("ada@example.org")
    assert delivery.status == "failed" and "553" in delivery.last_error


def test_smtp_temporary_451_is_retried_with_the_same_message_id(mailer, sink):
    sink.mode = "temporary"
    before = timezone.now()
    delivery = send("ada@example.org")
    assert delivery.status == "queued" and delivery.attempts == 1
    assert "451" in delivery.last_error
    assert delivery.next_attempt_at > before
    assert AuditEvent.objects.filter(action="message.retry", target_id="mail").count() == 1
    sink.mode = "accept"
    delivery = retry_now(delivery)
    assert delivery.status == "sent" and delivery.attempts == 2
    [received] = sink.messages
    assert received.message["Message-ID"] == delivery.platform_message_id


def test_smtp_dropped_connection_is_transient(mailer, sink):
    sink.mode = "drop"
    delivery = send("ada@example.org")
    assert delivery.status == "queued"
    assert "closed the connection" in delivery.last_error
    sink.mode = "accept"
    assert retry_now(delivery).status == "sent"
    assert len(sink.messages) == 1


def test_smtp_server_down_is_transient(mailer, sink):
    sink.down()
    delivery = send("ada@example.org")
    assert delivery.status == "queued"
    assert "Cannot reach the mail server" in delivery.last_error
    assert delivery.next_attempt_at > timezone.now() - timedelta(seconds=1)


def test_smtp_server_that_never_greets_times_out_transiently(mailer, settings):
    with socket.socket() as silent:  # accepts connections (backlog) but never says 220
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = silent.getsockname()
        settings.EMAIL_TIMEOUT = 0.5
        delivery = send("ada@example.org")
    assert delivery.status == "queued"
    assert "did not answer in time" in delivery.last_error


@pytest.mark.parametrize(
    "exc, permanent, code",
    [
        (smtplib.SMTPRecipientsRefused({"a@x.org": (550, b"no such user")}), True, "recipient_refused"),
        (smtplib.SMTPRecipientsRefused({"a@x.org": (452, b"mailbox full, try later")}), False, "recipient_refused"),
        (smtplib.SMTPSenderRefused(553, b"not yours", "b@x.org"), True, "sender_refused"),
        (smtplib.SMTPSenderRefused(421, b"busy", "b@x.org"), False, "sender_refused"),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), True, "smtp_auth_failed"),
        (smtplib.SMTPAuthenticationError(454, b"temporary auth failure"), False, "smtp_auth_failed"),
        (smtplib.SMTPDataError(554, b"spam"), True, "smtp_error"),
        (smtplib.SMTPDataError(451, b"local error"), False, "smtp_error"),
        (smtplib.SMTPConnectError(421, b"too many connections"), False, "smtp_error"),
        (smtplib.SMTPServerDisconnected("gone"), False, "smtp_disconnected"),
        (smtplib.SMTPNotSupportedError("STARTTLS extension not supported by server."), True, "smtp_not_supported"),
        (TimeoutError("timed out"), False, "smtp_timeout"),
        (ConnectionRefusedError(111, "Connection refused"), False, "smtp_unreachable"),
    ],
)
def test_error_classification(exc, permanent, code):
    error = classify(exc)
    assert (error.permanent, error.code) == (permanent, code)


# --- health check ----------------------------------------------------------------------------


def test_health_check_says_noop_to_the_smtp_server(mailer, sink):
    result = services.test_connector(SYSTEM, "mail")
    assert result.ok, result.detail
    assert "NOOP" in sink.commands
    assert f"{sink.host}:{sink.port}" in result.detail


def test_health_check_fails_when_the_smtp_server_is_down(mailer, sink):
    sink.down()
    result = services.test_connector(SYSTEM, "mail")
    assert not result.ok
    assert "Cannot reach the mail server" in result.detail
    assert "Cannot reach the mail server" in Connector.objects.get(pk="mail").last_error


def test_health_check_with_the_locmem_backend(mailer):
    result = EmailConnector(mailer).health_check()
    assert result.ok and "locmem" in result.detail


# --- settings from the environment -----------------------------------------------------------


def _email_settings(**env):
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_") and k != "DEBUG"}
    code = (
        "import json, django; from django.conf import settings; "
        "print(json.dumps({k: getattr(settings, k, None) for k in "
        "['EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_HOST_USER', 'EMAIL_HOST_PASSWORD', "
        "'EMAIL_USE_TLS', 'EMAIL_USE_SSL', 'EMAIL_TIMEOUT']}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "DJANGO_SETTINGS_MODULE": "brain_connectors.settings", "BRAIN_READ_DOTENV": "0", **env},
        capture_output=True, text=True, timeout=60, cwd=BASE_DIR,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"DEBUG": "true"}, {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}),
        ({"DEBUG": "false"}, {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_TIMEOUT": 10.0}),
        (
            {"DEBUG": "true", "EMAIL_URL": "smtp+tls://mailer:p%40ss@mail.example.org:587", "EMAIL_TIMEOUT": "3"},
            {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "mail.example.org",
             "EMAIL_PORT": 587, "EMAIL_HOST_USER": "mailer", "EMAIL_HOST_PASSWORD": "p@ss", "EMAIL_USE_TLS": True,
             "EMAIL_TIMEOUT": 3.0},
        ),
        ({"EMAIL_URL": "smtp+ssl://mail.example.org"}, {"EMAIL_USE_SSL": True, "EMAIL_PORT": 465}),
        ({"EMAIL_URL": "smtp+tls://mail.example.org"}, {"EMAIL_USE_TLS": True, "EMAIL_PORT": 587}),
        (
            {"EMAIL_URL": "smtp://mail.example.org:2525", "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend"},
            {"EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend", "EMAIL_PORT": 2525},
        ),
    ],
)
def test_email_settings_from_the_environment(env, expected):
    got = _email_settings(**env)
    assert {k: got[k] for k in expected} == expected
