"""Talk to BRAIN from a terminal through a `cli` connector.

Each line goes through `receive_message` like any platform's inbound message (stored, deduped,
audited) and BRAIN's reply comes back through `send_message`. Notifications sent to this CLI
user while the session is attached are shown as they arrive; those sent while no session was
attached are shown first thing on the next attach.

`/attach <path> [caption]` sends a local file (quote a path with spaces), the caption as its text. A message to the
person that carries files is shown with where each was saved: `--downloads DIR`, by default var/downloads/<connector>/
(connectors/delivery/cli_files.py: names sanitised, an existing file never overwritten).
"""
import getpass
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection

from brain_connectors.shared.errors import ServiceError
from brain_connectors.shared.log_file import logs_to_file
from connectors.delivery import cli_files
from connectors.delivery.inbound import receive_message
from connectors.delivery.receipts import mark_delivered
from connectors.models import Connector, ConnectorStatus, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal
from connectors.platforms.base import IncomingMessage, MessageValidationError
from connectors.registry.lifecycle import start_connector
from connectors.registry.records import register_connector

POLL_SECONDS = 0.3


class Command(BaseCommand):
    help = "Chat with BRAIN through the CLI connector. Type /quit (or end input) to leave."

    def add_arguments(self, parser):
        parser.add_argument("--connector", help="Id of a `cli` connector (default: the only one, created if none).")
        parser.add_argument("--as", dest="person", default=None, help="Your CLI user name (default: your login).")
        parser.add_argument("--downloads", default=None,
                            help="Folder to save the files BRAIN sends (default: var/downloads/<connector>/).")
        parser.add_argument("--log-file", default=None,
                            help="Where the service's log lines go while you chat (default: var/log/chat.log).")

    def handle(self, *args, connector, person, downloads, log_file, **options):
        # The screen is the conversation: Celery's and the service's log lines go to a file (errors still show).
        log_path = logs_to_file(log_file or settings.BASE_DIR / "var" / "log" / "chat.log")
        self.person = (person or getpass.getuser()).strip()
        if not self.person:
            raise CommandError("--as must not be empty.")
        self.principal = Principal.system_actor(f"cli:{self.person}", via="cli")
        self.print_lock = threading.Lock()  # before _pick_connector, which may _say()
        # The reader and the poller both show deliveries: one at a time, or both could print
        # the same row before either marks it delivered.
        self.show_lock = threading.Lock()
        self.connector_id = self._pick_connector(connector)
        self.downloads = Path(downloads) if downloads else settings.BASE_DIR / "var" / "downloads" / self.connector_id
        self.waiting_for = None  # inbound id whose answer we are waiting for
        self.answered = threading.Event()
        self.stopping = threading.Event()

        self._say(f"Connected to {self.connector_id} as {self.person}. Type /quit to leave. (Logs: {log_path})")
        self._show_new_deliveries()  # what arrived while detached
        poller = threading.Thread(target=self._poll, daemon=True)
        poller.start()
        try:
            self._read_loop()
        finally:
            self.stopping.set()
            poller.join(timeout=2)

    # --- set-up ---------------------------------------------------------------------------
    def _pick_connector(self, connector_id):
        system = Principal.system_actor("chat", via="command")
        if connector_id:
            row = Connector.objects.filter(pk=connector_id).first()
            if row is None:
                raise CommandError(f"No connector {connector_id!r}.")
            if row.kind != "cli":
                raise CommandError(f"Connector {connector_id!r} is of kind {row.kind!r}, not 'cli'.")
        else:
            rows = list(Connector.objects.filter(kind="cli"))
            if len(rows) > 1:
                raise CommandError("Several cli connectors exist; choose one with --connector: " + ", ".join(r.pk for r in rows))
            if rows:
                row = rows[0]
            else:
                row = register_connector(system, id="cli", kind="cli", display_name="Command line")
                self._say("Registered the cli connector 'cli'.")
        try:
            if row.status in (ConnectorStatus.STOPPED, ConnectorStatus.ERROR):
                row = start_connector(system, row.pk)
        except ServiceError as exc:
            raise CommandError(exc.message)
        if row.status != ConnectorStatus.CONNECTED:
            raise CommandError(f"Connector {row.pk!r} is {row.status}: {row.last_error or 'cannot chat now'}.")
        return row.pk

    # --- output ---------------------------------------------------------------------------
    def _say(self, text):
        with self.print_lock:
            self.stdout.write(text)
            self.stdout.flush()

    def _show_new_deliveries(self):
        """Print deliveries to this person not yet shown, oldest first, and mark them delivered."""
        with self.show_lock:
            self._show_new_deliveries_locked()

    def _show_new_deliveries_locked(self):
        pending = Delivery.objects.filter(
            connector_id=self.connector_id, recipient=self.person, status=DeliveryStatus.SENT
        ).order_by("created_at")
        for delivery in pending:
            label = "brain" if delivery.in_reply_to_id else "notice"
            self._say(f"{label}> {delivery.content}")
            if delivery.attachment_count:
                self._save_files(delivery)
            mark_delivered(self.principal, delivery.pk)
            if delivery.in_reply_to_id and delivery.in_reply_to_id == self.waiting_for:
                self.answered.set()
        if self.waiting_for and not self.answered.is_set():
            inbound = InboundMessage.objects.filter(pk=self.waiting_for).only("brain_status", "brain_error").first()
            if inbound and inbound.brain_status == InboundMessage.BrainStatus.FAILED:
                self._say(f"! BRAIN could not answer: {inbound.brain_error}")
                self.answered.set()
            elif inbound and inbound.brain_status == InboundMessage.BrainStatus.NO_REPLY:
                self.answered.set()

    def _save_files(self, delivery):
        try:
            saved = cli_files.save_files(delivery, self.downloads)
        except OSError as exc:
            self._say(f"! The files could not be saved in {self.downloads}: {exc.strerror or type(exc).__name__}")
            return
        for row, path in saved:
            where = f"saved to {path}" if path else "its stored copy is gone"
            self._say(f"file> {row.kind} ({row.mime_type}, {row.size} bytes) {where}")

    def _poll(self):
        try:
            while not self.stopping.wait(POLL_SECONDS):
                close_old_connections()
                self._show_new_deliveries()
        finally:
            connection.close()

    # --- input ----------------------------------------------------------------------------
    def _read_loop(self):
        interactive = sys.stdin.isatty()
        patience = settings.BRAIN_TIMEOUT * (settings.BRAIN_MAX_RETRIES + 1) + 5
        while True:
            if interactive:
                with self.print_lock:
                    sys.stdout.write("you> ")
                    sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                return
            text = line.rstrip("\n")
            if text.strip() in ("/quit", "/exit"):
                return
            if not text.strip():
                continue
            try:
                message, files = self._message(text)
                self.answered.clear()
                # Under show_lock: the poller must not show the reply before we know to wait for it.
                with self.show_lock:
                    if files:
                        inbound, _ = cli_files.receive_local(self.connector_id, message, files, self.principal)
                    else:
                        inbound, _ = receive_message(self.connector_id, message, principal=self.principal)
                    self.waiting_for = inbound.pk
            except cli_files.FileProblem as exc:
                self._say(f"! Not sent: {exc}")
                continue
            except MessageValidationError as exc:
                self._say(f"! Not sent: {exc}")
                continue
            except ServiceError as exc:
                self._say(f"! Not sent: {exc.message}")
                continue
            self._show_new_deliveries()
            deadline = time.monotonic() + patience
            while not self.answered.wait(0.1):
                if time.monotonic() > deadline:
                    self._say("! No answer from BRAIN yet; it will be shown when it arrives.")
                    break

    def _message(self, text):
        """(IncomingMessage, file bytes) for a line: text, or `/attach <path> [caption]` (FileProblem if unusable)."""
        message_id = f"cli-{uuid.uuid4()}"
        command, _, rest = text.strip().partition(" ")
        if command != "/attach":
            return IncomingMessage(sender=self.person, content=text, platform_message_id=message_id), []
        lexer = shlex.shlex(rest, posix=True)
        lexer.whitespace_split = True
        try:
            path = lexer.get_token()
        except ValueError as exc:  # an unclosed quote
            raise cli_files.FileProblem(f"/attach: {exc}") from None
        if not path:
            raise cli_files.FileProblem("/attach needs a file: /attach <path> [caption]")
        caption = lexer.instream.read().strip()
        item, data = cli_files.read_local(path, caption)
        return IncomingMessage(sender=self.person, content=caption, platform_message_id=message_id,
                               attachments=(item,)), [data]
