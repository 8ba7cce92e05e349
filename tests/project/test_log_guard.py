"""The suite-wide log guard (tests/log_guard.py) catches what it is meant to: a unit test of its
scanner, and whole pytest runs in a subprocess, where a leak must turn a green run red."""
import logging
import subprocess
import sys

import pytest

from tests.conftest import BASE_DIR
from tests.log_guard import LeakScanner, _our_own_word, guard_handler, is_meaningful

CONTENT = "Meet me at the old mill at nine, bring the 42 maps"
CREDENTIAL = "k3y-for-the-leak-test-0001"


def test_only_long_values_not_made_of_common_words_are_watched():
    assert not is_meaningful("hi")
    assert not is_meaningful("short!!")  # 7 characters
    assert not is_meaningful("Hello world, see you soon")  # common words only
    assert not is_meaningful(None)
    assert not is_meaningful("aaaaaaaaaaaaaaaa")  # too few distinct characters to be a secret or real content
    assert is_meaningful(CONTENT)
    assert is_meaningful(CREDENTIAL)
    assert is_meaningful("Disk full on db-1")


def test_scanner_finds_a_value_in_a_line_written_after_it_was_seen():
    scanner = LeakScanner()
    scanner.add(CONTENT, "inbound message content")
    scanner.observe(f"2026-01-01 INFO connectors.x: got {CONTENT!r}", "connectors.x", "INFO")
    scanner.observe("2026-01-01 INFO connectors.x: got a message", "connectors.x", "INFO")
    assert [(leak.kind, leak.logger) for leak in scanner.leaks] == [("inbound message content", "connectors.x")]
    assert CONTENT not in scanner.report()  # the report names the value, never shows it
    assert "<inbound message content>" in scanner.report()


def test_scanner_rescans_lines_of_the_test_against_values_seen_later_in_it():
    scanner = LeakScanner()
    scanner.observe(f"token check {CREDENTIAL} failed", "connectors.y", "WARNING")
    assert scanner.leaks == []
    scanner.add_json_or_text('{"api_key": "%s", "short": "abc"}' % CREDENTIAL, "Connector.credentials")
    scanner.end_of_test()
    assert [leak.kind for leak in scanner.leaks] == ["Connector.credentials 'api_key'"]
    scanner.end_of_test()  # lines are rescanned once, at the end of the test they were written in
    scanner.add("another-secret-value-123", "API token")
    scanner.end_of_test()
    assert len(scanner.leaks) == 1


def test_guarded_handler_sees_the_line_after_its_filters(settings):
    """Through the production filter, a configured secret is redacted and so no leak; a value the
    filter does not know (message content) is one."""
    from brain_connectors.shared.log_redaction import RedactSecretsFilter

    scanner = LeakScanner()
    scanner.add(settings.SECRET_KEY, "SECRET_KEY")
    scanner.add(CONTENT, "message content")
    written = []

    class Keep(logging.Handler):
        def emit(self, record):
            written.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactSecretsFilter())
    guard_handler(handler, scanner)
    logger = logging.getLogger("tests.log_guard_probe")
    logger.addHandler(handler)
    try:
        logger.warning("key %s", settings.SECRET_KEY)
        logger.warning("content %s", CONTENT)
    finally:
        logger.removeHandler(handler)
    assert written == ["key [redacted]", f"content {CONTENT}"]
    assert [leak.kind for leak in scanner.leaks] == ["message content"]


def test_search_words_are_watched(make_user):
    """What people search for is as private as what they wrote: the query and each word or quoted
    phrase of it (of at least MIN_LENGTH characters) count as content for the guard."""
    from connectors.permissions import Principal
    from conversations import services as memory
    from tests.log_guard import scanner

    query = 'periwinkle "marmalade jar" quokka'
    memory.search(Principal.for_user(make_user("searcher", superuser=True), via="test"), query)
    assert scanner.watched(query)
    assert scanner.watched("periwinkle") and scanner.watched("marmalade jar")
    assert not scanner.watched("quokka")  # shorter than MIN_LENGTH: too likely in innocent lines


def test_search_words_that_are_our_own_vocabulary_are_not_watched(make_user):
    """A search for one of our URL words or error codes is not private: watching it would flag every
    404 line for /api/v1/preferences/ and every refusal naming permission_denied."""
    from connectors.permissions import Principal
    from conversations import services as memory
    from tests.log_guard import scanner

    query = "preference permission_denied pomegranate"
    memory.search(Principal.for_user(make_user("searcher2", superuser=True), via="test"), query)
    assert not scanner.watched("preference") and not scanner.watched("permission_denied")
    assert scanner.watched("pomegranate") and scanner.watched(query)


INNER_TESTS = f'''
import logging

import pytest

from connectors import services
from connectors.permissions import Principal

SYSTEM = Principal.system_actor("tests", via="test")
log = logging.getLogger("connectors.leaky")


@pytest.fixture
def connector(db):
    services.register_connector(SYSTEM, id="leaky", kind="locmem", display_name="Leaky",
                                credentials={{"api_key": "{CREDENTIAL}"}})
    return services.start_connector(SYSTEM, "leaky")


def test_redacted_secret_is_fine(settings):
    log.warning("SECRET_KEY is %s", settings.SECRET_KEY)  # RedactSecretsFilter replaces it


def test_content_not_logged_is_fine(connector):
    services.send_message(SYSTEM, "leaky", "alice", "{CONTENT}")
    log.info("sent a message")


def test_content_leaks(connector):
    services.send_message(SYSTEM, "leaky", "alice", "{CONTENT}")
    log.info("sent %s", "{CONTENT}")


def test_credential_leaks(connector):
    log.warning("calling with key %s", "{CREDENTIAL}")
'''


@pytest.mark.slow
@pytest.mark.vendor_neutral
def test_a_leak_fails_an_otherwise_green_run(tmp_path):
    """Four passing tests, two of which log a watched value: the run exits 1 and the report names
    exactly those two lines, without the values."""
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.log_guard",
         "--ds=brain_connectors.settings_test", "-o", "asyncio_default_fixture_loop_scope=function",
         "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=BASE_DIR,
    )
    assert "4 passed" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 1, run.stdout + run.stderr
    assert "LOG LEAK GUARD: 2 log line(s) carried a secret or message content" in run.stdout
    assert "test_inner.py::test_content_leaks: INFO connectors.leaky wrote Delivery.content" in run.stdout
    assert "test_inner.py::test_credential_leaks: WARNING connectors.leaky wrote Connector.credentials 'api_key'" in (
        run.stdout
    )
    assert CONTENT not in run.stdout and CREDENTIAL not in run.stdout


def test_a_stored_value_that_is_one_of_our_task_names_or_route_words_is_not_watched():
    """Workers log every task's name; the API fuzz may store one as a notification's text. A real text is watched."""
    assert _our_own_word("handle_inbound") and _our_own_word(" Deliver ") and _our_own_word("preferences")
    assert not _our_own_word("call Ada about the invoice") and not _our_own_word("handle_inbound today")
