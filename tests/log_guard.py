"""Suite-wide guard: no secret and no message content reaches the logs, during the whole test run.

What is checked is the text exactly as production writes it: the guard wraps `format()` of the
handlers that settings.LOGGING configures (the root logger's `stderr` handler), so it reads each
line after the project's filters (RedactSecretsFilter) and formatter, at the configured levels. A
test that logs SECRET_KEY on purpose is therefore fine as long as the filter redacts it.

What counts as a secret or as content, collected while the suite runs:
- the configured secrets (SECRET_KEY, FERNET_KEYS, SEARCH_INDEX_KEY, SEARCH_INDEX_PREVIOUS_KEY,
  BRAIN_SIGNING_KEY, EMAIL_HOST_PASSWORD, AUDIT_CHAIN_KEY, AUDIT_CHAIN_PREVIOUS_KEYS, the database
  password), read before and after each test
  so that values a test sets with the `settings` fixture count too;
- every value the project stores in an EncryptedTextField (the project's own mark of what is
  sensitive): connector credentials (each value of the JSON), platform secrets, event-subscription
  secrets, and message content (inbound, deliveries, routing, conversations), on post_save;
- every message content in `connectors.signals.message_recorded` (also bulk paths with no post_save);
- every API token issued or presented (`connectors.tokens.digest` sees each plaintext);
- every pairing code issued or redeemed (`routing.pairing.codes.digest` sees each plaintext);
- every conversation search, its whole query and each word or quoted phrase of it
  (`conversations.services.search`, which REST, MCP and the admin call);
- every user password set through `set_password`.

Only values of at least MIN_LENGTH characters, with at least MIN_DISTINCT_CHARACTERS different characters,
that are not made only of common English words are watched: "hello", "see you soon" or "aaaaaaaaaa" in a test
message would otherwise match innocent log lines (a fuzzed URL, say).

Cost: each emitted line is scanned once with a set lookup per position (every watched value is at
least MIN_LENGTH long, so its first MIN_LENGTH characters index it); lines of the current test are
kept until it ends and rescanned against values first seen during that test (a log line may come
before the save that reveals the secret it carries).

At the end of the session a leak fails the run (exit status 1) with a report naming the test, the
logger and the kind of value; the value itself is shown only as its first three characters.
"""
import functools
import json
import logging
import re
import threading
from dataclasses import dataclass

import pytest

MIN_LENGTH = 8
MIN_DISTINCT_CHARACTERS = 4
SETTINGS_SECRETS = (
    "SECRET_KEY",
    "FERNET_KEYS",
    "SEARCH_INDEX_KEY",
    "SEARCH_INDEX_PREVIOUS_KEY",
    "BRAIN_SIGNING_KEY",
    "EMAIL_HOST_PASSWORD",
    "AUDIT_CHAIN_KEY",
    "AUDIT_CHAIN_PREVIOUS_KEYS",
)
# Frequent English words (and greetings common in test messages). A value made only of these is
# too likely to occur in an innocent log line to be watched.
COMMON_WORDS = frozenset(
    """a about after again all also am an and any are as at back be because been before being both
    but by can could day did do does done down each even for from get go going good got had has have
    he her here hi him his hello hey how i if in into is it its just know like look make me more most
    my new no not now of off ok okay on one only or other our out over please said say see she so
    some soon still such take than thank thanks that the their them then there these they thing think
    this those time to today too two up us use very want was way we well were what when where which
    while who why will with world would yes yet you your test message messages text hello world""".split()
)
_WORD = re.compile(r"[A-Za-z]+|\d+")


def is_meaningful(value) -> bool:
    """Worth watching: a string of at least MIN_LENGTH characters, not only common words."""
    if not isinstance(value, str) or len(value.strip()) < MIN_LENGTH:
        return False
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return False  # "aaaaaaaa…", as hypothesis likes to generate, also turns up in fuzzed URLs
    words = _WORD.findall(value.lower())
    return not words or not all(word in COMMON_WORDS for word in words)


def mask(value: str) -> str:
    """How a leaked value is named in the report: never the value itself."""
    return f"{value[:3]}… ({len(value)} chars)"


@dataclass(frozen=True)
class Leak:
    where: str  # the test running when the line was written ("session" outside tests)
    logger: str
    level: str
    kind: str
    value: str
    excerpt: str  # the line with the value replaced by <kind>, cut to 300 characters

    def describe(self) -> str:
        return f"{self.where}: {self.level} {self.logger} wrote {self.kind} {mask(self.value)}: {self.excerpt}"


class LeakScanner:
    """Watched values, and the lines they turned up in. Thread-safe: webhooks and the daphne
    tests log from other threads."""

    def __init__(self, min_length=MIN_LENGTH):
        self.min_length = min_length
        self.where = "session"
        self.leaks: list[Leak] = []
        self.lines_seen = 0
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}  # value -> kind
        self._by_prefix: dict[str, set[str]] = {}
        self._recent_lines: list[tuple[str, str, str, str]] = []  # (text, where, logger, level)
        self._recent_values: list[str] = []

    def add(self, value, kind) -> bool:
        if not is_meaningful(value):
            return False
        with self._lock:
            if value in self._kinds:
                return False
            self._kinds[value] = kind
            self._by_prefix.setdefault(value[: self.min_length], set()).add(value)
            self._recent_values.append(value)
        return True

    def add_json_or_text(self, value, kind):
        """A stored value: each string of a JSON object (credentials), else the text itself."""
        try:
            parsed = json.loads(value) if isinstance(value, str) and value[:1] == "{" else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for key, item in parsed.items():
                if isinstance(item, str):
                    self.add(item, f"{kind} {key!r}")
        else:
            self.add(value, kind)

    def watched(self, value) -> bool:
        return value in self._kinds

    @property
    def values_watched(self) -> int:
        return len(self._kinds)

    def find(self, text: str) -> list[str]:
        """Every watched value in `text`."""
        n = self.min_length
        by_prefix = self._by_prefix
        found = []
        for i in range(len(text) - n + 1):
            candidates = by_prefix.get(text[i : i + n])
            if candidates:
                found.extend(v for v in candidates if text.startswith(v, i) and v not in found)
        return found

    def observe(self, text: str, logger: str, level: str):
        """A line as the production handler writes it."""
        with self._lock:
            where = self.where
            self.lines_seen += 1
            self._recent_lines.append((text, where, logger, level))
            found = self.find(text) if self._by_prefix else []
        for value in found:
            self._record(text, where, logger, level, value)

    def end_of_test(self):
        """Rescan the lines written since the last call against the values first seen since then."""
        with self._lock:
            lines, values = self._recent_lines, self._recent_values
            self._recent_lines, self._recent_values = [], []
        for text, where, logger, level in lines:
            for value in values:
                if value in text:
                    self._record(text, where, logger, level, value)

    def _record(self, text, where, logger, level, value):
        kind = self._kinds[value]
        excerpt = text.replace(value, f"<{kind}>")
        excerpt = excerpt if len(excerpt) <= 300 else excerpt[:300] + "…"
        leak = Leak(where, logger, level, kind, value, excerpt)
        with self._lock:
            if leak not in self.leaks:
                self.leaks.append(leak)

    def report(self) -> str:
        lines = [f"LOG LEAK GUARD: {len(self.leaks)} log line(s) carried a secret or message content:"]
        lines += ["  " + leak.describe() for leak in self.leaks]
        return "\n".join(lines)


# --- wiring into the project -------------------------------------------------------------------

scanner = LeakScanner()


def production_handlers():
    """The handlers that settings.LOGGING configures, wherever they are attached now."""
    from django.conf import settings

    names = set(settings.LOGGING.get("handlers", {}))
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    found = []
    for lg in loggers:
        found.extend(h for h in lg.handlers if h.name in names and h not in found)
    return found


def guard_handler(handler, scan=scanner):
    """Wrap handler.format: emit() calls it after the handler's filters, and writes what it returns."""
    if getattr(handler, "_log_guard", None) is scan:
        return
    original = handler.format

    def format(record):
        text = original(record)
        scan.observe(text, record.name, record.levelname)
        return text

    handler.format = format
    handler._log_guard = scan


def guard_production_handlers():
    handlers = production_handlers()
    if not handlers:
        raise pytest.UsageError("log guard: no handler of settings.LOGGING is attached: nothing would be checked")
    for handler in handlers:
        guard_handler(handler)


def collect_settings_secrets():
    from django.conf import settings

    for name in SETTINGS_SECRETS:
        value = getattr(settings, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            scanner.add(item, name)
    scanner.add(settings.DATABASES.get("default", {}).get("PASSWORD"), "database password")


@functools.lru_cache(maxsize=1)
def _route_vocabulary():
    """Our own public vocabulary: every word of the URL patterns ("preferences") and every error code."""
    from django.urls import get_resolver

    words = set()

    def walk(patterns):
        for entry in patterns:
            words.update(w.lower() for w in re.findall(r"[A-Za-z]{3,}", str(entry.pattern)))
            walk(getattr(entry, "url_patterns", []))

    walk(get_resolver().url_patterns)

    # The error codes every edge reports ("permission_denied", "not_found") are ours too.
    from brain_connectors.shared.errors import ServiceError

    def codes(cls):
        yield cls.code
        for sub in cls.__subclasses__():
            yield from codes(sub)

    words.update(code.lower() for code in codes(ServiceError))
    # And the field-level codes of validation details ({"label": "required"}), ours and DRF's, which the
    # same lines carry ("missing 1 required positional argument").
    words.update({"required", "invalid", "unknown", "blank", "null", "does_not_exist", "max_length"})
    # And our task names, on every worker line: the API fuzz draws the code's constants ("handle_inbound") as text.
    from brain_connectors.celery import app

    app.loader.import_default_modules()  # every app's tasks.py, as a worker would
    words.update(name.rsplit(".", 1)[-1].lower() for name in app.tasks)
    return frozenset(words)


def _our_own_word(value) -> bool:
    """A stored value that is exactly one of our route words, error codes or task names: not private."""
    return isinstance(value, str) and value.strip().lower() in _route_vocabulary()


@functools.lru_cache(maxsize=1)
def _route_words():
    """Route words and their prefixes of 3+ letters (a query "preference" is inside "preferences")."""
    return frozenset(w[:n] for w in _route_vocabulary() for n in range(3, len(w) + 1))


def _connect_collectors():
    from django.apps import apps
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.db.models.signals import post_save

    from connectors import tokens
    from connectors.fields import EncryptedTextField
    from connectors.signals import message_recorded

    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if not fields:
            continue

        def on_save(sender, instance, _fields=fields, **kwargs):
            for field in _fields:
                value = getattr(instance, field.attname)
                if not _our_own_word(value):
                    scanner.add_json_or_text(value, f"{sender.__name__}.{field.name}")

        post_save.connect(on_save, sender=model, weak=False, dispatch_uid=f"log_guard:{model._meta.label}")

    def on_message(sender, content=None, direction="", **kwargs):
        if not _our_own_word(content):
            scanner.add(content, f"{direction} message content".strip())

    message_recorded.connect(on_message, weak=False, dispatch_uid="log_guard:message_recorded")

    digest = tokens.digest

    def watching_digest(token):  # called with every token issued (create_token) or presented
        scanner.add(token, "API token")
        return digest(token)

    tokens.digest = watching_digest

    from routing.pairing import codes as pairing_codes

    pairing_digest = pairing_codes.digest

    def watching_pairing_digest(code):  # every pairing code issued, redeemed or confirmed by link
        scanner.add(code, "pairing code")
        return pairing_digest(code)

    pairing_codes.digest = watching_pairing_digest

    from conversations import services as memory

    search = memory.search

    def watching_search(principal, query, *args, **kwargs):  # what people look for is private too
        if isinstance(query, str):
            # A query that is one of our own URL words ("preferences") or error codes ("permission_denied") is
            # not private, and watching it would flag every 404 line or refusal that names them.
            for term, label in [(query, "search query")] + [
                (phrase or word.strip('"'), "search word") for phrase, word in re.findall(r'"([^"]+)"|(\S+)', query)
            ]:
                if term.lower() not in _route_words():
                    scanner.add(term, label)
        return search(principal, query, *args, **kwargs)

    memory.search = watching_search

    set_password = AbstractBaseUser.set_password

    def watching_set_password(self, raw_password):
        scanner.add(raw_password, "user password")
        return set_password(self, raw_password)

    AbstractBaseUser.set_password = watching_set_password


# --- pytest hooks ------------------------------------------------------------------------------


def pytest_sessionstart(session):
    _connect_collectors()
    collect_settings_secrets()
    guard_production_handlers()


def pytest_runtest_setup(item):
    scanner.where = item.nodeid
    guard_production_handlers()  # again: a test may have re-run dictConfig


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    collect_settings_secrets()  # the `settings` fixture has applied the test's overrides by now
    yield
    collect_settings_secrets()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    scanner.end_of_test()
    scanner.where = "session"


def pytest_sessionfinish(session):
    scanner.end_of_test()
    if scanner.leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if scanner.leaks:
        terminalreporter.section("log leak guard", red=True)
        terminalreporter.write_line(scanner.report(), red=True)
    else:  # says that the guard ran, and on how much
        terminalreporter.write_line(
            f"log leak guard: {scanner.lines_seen} log lines checked against {scanner.values_watched} "
            "secrets and message contents: no leak"
        )
