"""`email`: messages sent as email through Django's email backend (settings.EMAIL_BACKEND).

Config: `from_address` (required), `subject` (default "Message from BRAIN"), `reply_to`. There are
no credentials on the connector: the mail server and its login come from the settings (EMAIL_URL,
or EMAIL_BACKEND and Django's EMAIL_* settings), shared by every email connector.

Each message goes out as plain text (BRAIN's Markdown as written, which reads well as text) with an HTML
alternative rendered from that Markdown by markdown-it-py (connectors.platforms.formatting.to_email_html;
raw HTML in the text is escaped, never passed through). Its
Message-ID is derived from the delivery id, so a retry after an ambiguous failure (the connection
dropped after DATA) carries the same Message-ID and mail clients can collapse the duplicate. The
Message-ID is the delivery's platform message id.

Files go as MIME attachments (EmailMultiAlternatives.attach: the message becomes multipart/mixed around the
plain+HTML alternatives), each with its file name and type; their captions follow the text, under the file's name.
Providers commonly cap a whole message at 25 MB, and base64 makes files a third larger on the wire: so each file is
capped at 20 MB when queued, and all the files of one message at 20 MB together when sent (permanent `too_large`).

Failures: a 5xx answer (recipient or sender refused, message rejected, login refused) is permanent;
a 4xx answer (greylisting, mailbox busy), a dropped connection, a refused connection and a timeout
are transient.
"""
import logging
import smtplib

from django.core.exceptions import ValidationError
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.utils.encoding import punycode

from connectors.platforms.addresses import InvalidAddress
from connectors.platforms.attachments import OUTGOING_KINDS
from connectors.platforms.base import (
    MAX_ADDRESS_LENGTH,
    PATTERN_END,
    BaseConnector,
    ConnectorError,
    HealthResult,
    OutgoingMessage,
    SendResult,
)
from connectors.platforms.formatting import to_email_html

logger = logging.getLogger(__name__)

DEFAULT_SUBJECT = "Message from BRAIN"
# Raw bytes; base64 takes 4/3 of that on the wire, plus headers: under the common 25 MB message limit.
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024


def address_problem(value) -> str | None:
    """Why `value` is not a plain email address (no display name), or None if it is one."""
    if not isinstance(value, str) or not value:
        return "must be an email address"
    if len(value) > MAX_ADDRESS_LENGTH:
        return f"must be at most {MAX_ADDRESS_LENGTH} characters"
    try:
        validate_email(value)
    except ValidationError:
        return "must be a valid email address such as name@example.org"
    return None


def html_body(text: str) -> str:
    """The HTML alternative: BRAIN's Markdown rendered (raw HTML in it escaped), in a minimal document."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        '<body><div style="font-family: sans-serif">\n'
        + to_email_html(text.replace("\r\n", "\n").replace("\r", "\n"))
        + "</div></body></html>\n"
    )


def with_captions(text: str, attachments) -> str:
    """The text, then each file's caption after its name (an email attachment has no caption of its own)."""
    captions = [f"{item.file_name}: {item.caption}" for item in attachments if item.caption.strip()]
    return "\n\n".join(part for part in (text, *captions) if part)


def message_id(delivery_id: str, from_address: str) -> str:
    domain = punycode(from_address.rsplit("@", 1)[1])
    return f"<brain.{delivery_id}@{domain}>"


def classify(exc: Exception) -> ConnectorError:
    """Turn a mail error into a ConnectorError: 5xx is permanent, everything else may pass later."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        answers = list(exc.recipients.values())
        permanent = bool(answers) and all(500 <= code < 600 for code, _ in answers)
        detail = "; ".join(f"{code} {_text(reply)}" for code, reply in answers)
        return ConnectorError(f"The mail server refused the recipient: {detail}", permanent=permanent,
                              code="recipient_refused")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return ConnectorError(
            f"The mail server refused the sender address: {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=500 <= exc.smtp_code < 600, code="sender_refused",
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return ConnectorError(
            f"The mail server refused the login: {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=500 <= exc.smtp_code < 600, code="smtp_auth_failed",
        )
    if isinstance(exc, smtplib.SMTPResponseException):  # data refused, bad greeting, HELO refused
        return ConnectorError(
            f"The mail server answered {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=500 <= exc.smtp_code < 600, code="smtp_error",
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):  # e.g. STARTTLS or AUTH required by settings
        return ConnectorError(f"The mail server lacks a required feature: {exc}", permanent=True,
                              code="smtp_not_supported")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if "timed out" in str(exc):  # smtplib reports a read timeout as a disconnection
            return ConnectorError("The mail server did not answer in time", code="smtp_timeout")
        return ConnectorError("The mail server closed the connection unexpectedly", code="smtp_disconnected")
    if isinstance(exc, TimeoutError):
        return ConnectorError("The mail server did not answer in time", code="smtp_timeout")
    if isinstance(exc, smtplib.SMTPException):
        return ConnectorError(f"Mail error: {exc}", code="smtp_error")
    if isinstance(exc, BadHeaderError):
        return ConnectorError(f"The message has an invalid header: {exc}", permanent=True, code="invalid_message")
    # OSError: connection refused or reset, DNS failure, TLS handshake failure
    return ConnectorError(f"Cannot reach the mail server: {type(exc).__name__}: {exc}", code="smtp_unreachable")


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class EmailConnector(BaseConnector):
    kind = "email"
    label = "Email"
    delivers_pairing_code = True  # the pairing link is mailed to the address
    supports_attachments = True
    attachment_kinds = OUTGOING_KINDS  # a mail carries any file
    attachment_max_bytes = dict.fromkeys(OUTGOING_KINDS, MAX_ATTACHMENT_BYTES)
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["from_address"],
        "properties": {
            "from_address": {"type": "string", "minLength": 3, "maxLength": MAX_ADDRESS_LENGTH},
            # One line: a line break in a header would be refused (and is how headers get injected).
            "subject": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": rf"^[^\r\n]*{PATTERN_END}"},
            "reply_to": {"type": "string", "minLength": 3, "maxLength": MAX_ADDRESS_LENGTH},
        },
    }

    @classmethod
    def validate_config(cls, config) -> dict[str, str]:
        errors = super().validate_config(config)
        if isinstance(config, dict):
            for name in ("from_address", "reply_to"):
                if name in config and name not in errors:
                    problem = address_problem(config[name])
                    if problem:
                        errors[name] = problem
            if "subject" in config and "subject" not in errors and not config["subject"].strip():
                errors["subject"] = "must not be blank"
        return errors

    @classmethod
    def normalize_address(cls, address, *, strict: bool = True) -> str:
        """The address with its domain in lower case (the local part is the mail server's call)."""
        value = str(address or "").strip()
        if not strict:
            return value
        problem = address_problem(value)
        if problem:
            raise InvalidAddress(problem, subject="email address")
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"

    @classmethod
    def validate_recipient(cls, recipient) -> str | None:
        return address_problem(recipient)

    def build_message(self, message: OutgoingMessage, delivery_id: str) -> EmailMultiAlternatives:
        from_address = self.config["from_address"]
        reply_to = self.config.get("reply_to")
        body = with_captions(message.content, message.attachments)
        email = EmailMultiAlternatives(
            subject=self.config.get("subject") or DEFAULT_SUBJECT,
            body=body,
            from_email=from_address,
            to=[message.recipient],
            reply_to=[reply_to] if reply_to else None,
            headers={"Message-ID": message_id(delivery_id, from_address), "X-BRAIN-Delivery-ID": delivery_id},
        )
        if body:  # a file alone: no empty text and HTML parts around it
            email.attach_alternative(html_body(body), "text/html")
        if sum(item.size for item in message.attachments) > MAX_ATTACHMENT_BYTES:
            raise ConnectorError(f"The files of one email may be at most {MAX_ATTACHMENT_BYTES} bytes together.",
                                 permanent=True, code="too_large")
        for item in message.attachments:
            email.attach(item.file_name or f"{item.kind}-{item.id}", item.read(),
                         item.mime_type or "application/octet-stream")
        return email

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        problem = address_problem(message.recipient)
        if problem:
            raise ConnectorError(f"Invalid recipient: {problem}", permanent=True, code="invalid_recipient")
        if address_problem(self.config.get("from_address")):
            raise ConnectorError("The connector's from_address is not a valid email address", permanent=True,
                                 code="invalid_config")
        email = self.build_message(message, delivery_id)
        try:
            sent = get_connection(fail_silently=False).send_messages([email])
        except (smtplib.SMTPException, OSError, BadHeaderError) as exc:  # OSError covers timeouts, refusals
            error = classify(exc)
            logger.info("Email delivery %s failed (%s): %s", delivery_id, error.code, error.message)
            raise error
        if not sent:
            raise ConnectorError("The email backend reported that nothing was sent", code="not_sent")
        return SendResult(platform_message_id=email.extra_headers["Message-ID"])

    def health_check(self) -> HealthResult:
        """Open and close a connection to the configured backend; for SMTP also say NOOP."""
        backend = get_connection(fail_silently=False)
        name = f"{type(backend).__module__}.{type(backend).__name__}"
        where = name
        try:
            backend.open()
            smtp = getattr(backend, "connection", None)
            if isinstance(smtp, smtplib.SMTP):
                where = f"SMTP {backend.host}:{backend.port}"
                code, reply = smtp.noop()
                if code != 250:
                    return HealthResult(ok=False, detail=f"{where} answered NOOP with {code} {_text(reply)}")
        except (smtplib.SMTPException, OSError) as exc:
            return HealthResult(ok=False, detail=f"{where}: {classify(exc).message}")
        finally:
            try:
                backend.close()
            except (smtplib.SMTPException, OSError):
                pass
        return HealthResult(ok=True, detail=f"{where} is reachable")
