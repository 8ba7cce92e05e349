"""`manage.py chat` through its public surface: a subprocess on the test database, fed on stdin."""
import queue
import re
import subprocess
import sys
import threading
import time

import pytest

from audit.models import AuditEvent
from connectors import services
from connectors.models import Connector, Delivery, DeliveryStatus, InboundMessage
from connectors.permissions import Principal

from ..conftest import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SYSTEM = Principal.system_actor("tests", via="test")
ECHO = {"BRAIN_BACKEND": "connectors.delivery.brain.EchoBrain"}


def chat(manage, *lines, person="alice", extra=()):
    result = manage("chat", "--as", person, *extra, input="".join(f"{line}\n" for line in lines), env=ECHO)
    assert result.returncode == 0, result.stderr
    return result


def output_lines(result, prefix):
    return [line for line in result.stdout.splitlines() if line.startswith(prefix)]


def test_chat_replies_with_growing_context_and_stores_everything(manage):
    result = chat(manage, "hello", "  ", "how are you?", "third")

    assert "Connected to cli as alice" in result.stdout
    assert output_lines(result, "brain> ") == [
        'brain> Echo: "hello" (0 context messages)',
        'brain> Echo: "how are you?" (2 context messages)',
        'brain> Echo: "third" (4 context messages)',
    ]
    assert "! " not in result.stdout  # no error lines

    connector = Connector.objects.get(pk="cli")  # registered by the command on first use
    assert connector.kind == "cli" and connector.status == "CONNECTED"
    inbound = list(InboundMessage.objects.filter(connector=connector).order_by("received_at"))
    assert [(m.sender, m.content, m.brain_status) for m in inbound] == [
        ("alice", "hello", "replied"),
        ("alice", "how are you?", "replied"),
        ("alice", "third", "replied"),
    ]  # the blank line was skipped, not stored
    deliveries = list(Delivery.objects.filter(connector=connector).order_by("created_at"))
    assert [(d.recipient, d.in_reply_to_id, d.status) for d in deliveries] == [
        ("alice", m.pk, DeliveryStatus.DELIVERED) for m in inbound
    ]
    assert all(d.delivered_at for d in deliveries)
    assert deliveries[1].content == 'Echo: "how are you?" (2 context messages)'

    received = AuditEvent.objects.filter(action="message.received", target_id="cli")
    assert received.count() == 3
    assert {e.principal for e in received} == {"system:cli:alice"}
    assert {e.details["via"] for e in received} == {"cli"}
    assert sorted(e.details["inbound_id"] for e in received) == sorted(m.pk for m in inbound)
    assert AuditEvent.objects.filter(action="message.queued", principal="system:brain").count() == 3
    assert AuditEvent.objects.filter(action="message.sent", target_id="cli").count() == 3
    delivered = AuditEvent.objects.filter(action="message.delivered", principal="system:cli:alice")
    assert sorted(e.details["delivery_id"] for e in delivered) == sorted(str(d.pk) for d in deliveries)
    assert not AuditEvent.objects.filter(result="failure").exists()


def test_many_lines_each_reply_is_shown_once_in_order(manage):
    # The reader and the poller thread both show deliveries; each reply must appear exactly once,
    # and the session must never stall waiting for a reply it has already shown.
    count = 80
    started = time.monotonic()
    result = chat(manage, *(f"m{i}" for i in range(count)))
    assert output_lines(result, "brain> ") == [
        f'brain> Echo: "m{i}" ({min(2 * i, 10)} context messages)' for i in range(count)
    ]  # BRAIN_CONTEXT_LIMIT is 10
    assert output_lines(result, "! ") == []
    assert time.monotonic() - started < 30
    assert Delivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == count


def test_context_carries_over_between_sessions_and_is_per_person(manage):
    chat(manage, "first")
    again = chat(manage, "second")
    assert output_lines(again, "brain> ") == ['brain> Echo: "second" (2 context messages)']
    bob = chat(manage, "hi", person="bob")
    assert output_lines(bob, "brain> ") == ['brain> Echo: "hi" (0 context messages)']


def test_quit_ends_the_session_without_reading_further(manage):
    result = chat(manage, "one", "/quit", "never sent")
    assert output_lines(result, "brain> ") == ['brain> Echo: "one" (0 context messages)']
    assert list(InboundMessage.objects.values_list("content", flat=True)) == ["one"]


def test_an_over_long_line_is_refused_and_stores_nothing(manage):
    result = chat(manage, "x" * 10_001)
    refusals = output_lines(result, "! Not sent:")
    assert len(refusals) == 1
    assert "at most 10000 characters" in refusals[0] and "10001" in refusals[0]
    assert output_lines(result, "brain> ") == []
    assert not InboundMessage.objects.exists()
    assert not Delivery.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="message.").exists()


def test_the_session_goes_on_after_a_refused_line(manage):
    result = chat(manage, "y" * 10_001, "short one")
    assert len(output_lines(result, "! Not sent:")) == 1
    assert output_lines(result, "brain> ") == ['brain> Echo: "short one" (0 context messages)']
    assert list(InboundMessage.objects.values_list("content", flat=True)) == ["short one"]


def test_a_line_of_exactly_the_limit_is_accepted(manage):
    result = chat(manage, "z" * 10_000)
    assert output_lines(result, "! Not sent") == []
    assert InboundMessage.objects.get().content == "z" * 10_000


def _cli_connector(make_connector):
    return make_connector(id="cli", kind="cli", display_name="Command line")


def test_a_notification_sent_while_detached_is_shown_at_the_next_attach(manage, make_connector):
    _cli_connector(make_connector)
    delivery, _ = services.send_message(SYSTEM, "cli", "alice", "Your report is ready")
    services.send_message(SYSTEM, "cli", "bob", "Not for alice")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT  # kept until a session shows it

    result = chat(manage)  # attach, then end input at once
    assert output_lines(result, "notice> ") == ["notice> Your report is ready"]
    assert "Not for alice" not in result.stdout

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_at
    event = AuditEvent.objects.get(action="message.delivered")
    assert event.principal == "system:cli:alice" and event.details["delivery_id"] == str(delivery.pk)
    assert Delivery.objects.get(recipient="bob").status == DeliveryStatus.SENT

    # Shown once: the next attach has nothing new.
    assert output_lines(chat(manage), "notice> ") == []


def test_notifications_are_shown_oldest_first_before_the_first_reply(manage, make_connector):
    _cli_connector(make_connector)
    services.send_message(SYSTEM, "cli", "alice", "one")
    services.send_message(SYSTEM, "cli", "alice", "two")
    result = chat(manage, "hi")
    lines = [line for line in result.stdout.splitlines() if line.startswith(("notice> ", "brain> "))]
    # The two notices are part of the exchange BRAIN sees as context.
    assert lines == ["notice> one", "notice> two", 'brain> Echo: "hi" (2 context messages)']


class _LineReader:
    """Reads a pipe in a thread so that the test can wait for a line with a timeout."""

    def __init__(self, pipe):
        self.lines = queue.Queue()
        self.seen = []
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe):
        for line in iter(pipe.readline, ""):
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout}s; got {self.seen!r}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended; got {self.seen!r}")
            self.seen.append(line)
            if predicate(line):
                return line


def test_a_notification_is_shown_live_to_an_attached_session(subprocess_env, make_connector):
    _cli_connector(make_connector)
    proc = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "chat", "--as", "alice"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**subprocess_env, **ECHO},
        cwd=BASE_DIR,
    )
    try:
        reader = _LineReader(proc.stdout)
        reader.wait_for(lambda line: line.startswith("Connected to cli as alice"))

        delivery, _ = services.send_message(SYSTEM, "cli", "alice", "Live news while you are here")
        assert reader.wait_for(lambda line: line.startswith("notice> ")) == "notice> Live news while you are here"

        deadline = time.monotonic() + 10
        delivery.refresh_from_db()
        while delivery.status != DeliveryStatus.DELIVERED and time.monotonic() < deadline:
            time.sleep(0.1)
            delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.DELIVERED

        # The same session still talks to BRAIN afterwards.
        proc.stdin.write("and now?\n")
        proc.stdin.flush()
        assert reader.wait_for(lambda line: line.startswith("brain> ")) == (
            'brain> Echo: "and now?" (1 context messages)'
        )
        proc.stdin.write("/quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    assert [line for line in reader.seen if line.startswith("notice> ")] == ["notice> Live news while you are here"]


LOG_LINE = re.compile(r"\b(DEBUG|INFO|WARNING)\b [\w.]+: ")


def test_the_screen_shows_only_the_conversation(manage):
    result = chat(manage, "hello", "again")
    screen = result.stdout.splitlines() + result.stderr.splitlines()
    assert [line for line in screen if LOG_LINE.search(line)] == []  # Celery's INFO lines used to come in between
    assert output_lines(result, "brain> ") == ['brain> Echo: "hello" (0 context messages)',
                                              'brain> Echo: "again" (2 context messages)']
    assert "Logs: " in result.stdout  # the person is told where the logs went


def test_the_logs_go_to_the_file_named(manage, tmp_path):
    log_file = tmp_path / "logs" / "chat.log"
    result = chat(manage, "hello", extra=("--log-file", str(log_file)))
    assert f"Logs: {log_file}" in result.stdout
    assert [line for line in result.stdout.splitlines() + result.stderr.splitlines() if LOG_LINE.search(line)] == []
    # The eager Celery tasks' lines, in the project's format, are in the file instead.
    assert re.search(r" INFO celery\.app\.trace: Task connectors\.tasks\.deliver\[", log_file.read_text())
