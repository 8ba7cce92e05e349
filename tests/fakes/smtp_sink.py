"""A loopback SMTP sink on aiosmtpd: a real SMTP server for end-to-end mail tests.

    sink = SmtpSink().start()          # 127.0.0.1, a free port, aiosmtpd's own thread
    sink.host, sink.port
    sink.mode = "refuse_recipient"     # switch behaviour at run time
    sink.messages                      # every accepted message (envelope + parsed email)
    sink.stop()

Modes:
    accept            250 for everything; the message is kept in `messages`
    refuse_recipient  550 at RCPT TO (the mailbox does not exist: permanent)
    temporary         451 at RCPT TO (try again later: transient, e.g. greylisting)
    refuse_sender     553 at MAIL FROM (the sender is not allowed: permanent)
    drop              the connection is closed at DATA, with no answer (transient)
`down()` stops listening (the port is then closed), `up()` listens again on the same port.
`commands` records the SMTP verbs seen (e.g. "NOOP"), for health-check tests.

Does not import Django, so bench scripts can use it too.
"""
import email
import email.policy
import socket
import threading
from dataclasses import dataclass

from aiosmtpd.controller import Controller

from .base import Restartable

MODES = ("accept", "refuse_recipient", "temporary", "refuse_sender", "drop")


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list
    raw: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_NOOP(self, server, session, envelope, arg):
        self.sink._note("NOOP")
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.sink._note("MAIL")
        if self.sink.mode == "refuse_sender":
            return "553 5.7.1 Sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.sink._note("RCPT")
        if self.sink.mode == "refuse_recipient":
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if self.sink.mode == "temporary":
            return "451 4.7.1 <%s>: Recipient address rejected: Greylisted, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sink._note("DATA")
        if self.sink.mode == "drop":
            server.transport.close()
            return "421 closing"  # never reaches the client: the transport is closed
        self.sink._keep(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted for delivery"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink(Restartable):
    def __init__(self, *, mode="accept", host="127.0.0.1"):
        self.mode = mode
        self.host = host
        self.port = _free_port()
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._commands: list[str] = []
        self._controller = None

    def start(self):
        if self._controller is None:
            if self.mode not in MODES:
                raise ValueError(f"unknown mode {self.mode!r}")
            controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=5)
            controller.start()
            self._controller = controller
        return self

    def stop(self):
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return list(self._commands)

    def _keep(self, mail):
        with self._lock:
            self._messages.append(mail)

    def _note(self, verb):
        with self._lock:
            self._commands.append(verb)
