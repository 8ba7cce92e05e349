"""daphne's access log, without query values, pairing codes or tokens.

daphne writes its access log (`--access-log`, or stdout by default) straight to a stream, not
through Python logging, so settings.LOGGING's redaction never sees those lines: they held search
words (`/api/v1/conversations/search/?q=…`) and pairing codes (`/preferences/pair/<code>/`).
brain_connectors/asgi.py, which every daphne start imports (make run, bench/, tests), calls
`install()`: daphne's command line then builds this generator, which passes each request line
through brain_connectors.shared.log_redaction.redact() before daphne's own formatting. Method, path and
status stay, so the log still says what happened.
"""
from daphne import cli
from daphne.access import AccessLogGenerator

from brain_connectors.shared.log_redaction import redact


class RedactingAccessLogGenerator(AccessLogGenerator):
    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)


def install():
    """Make daphne's command line use the redacting generator. It builds the generator only after
    importing the application (this module's caller), so replacing the class it names is enough."""
    if not hasattr(cli, "AccessLogGenerator"):
        # A daphne that builds its access log some other way would write unredacted lines: refuse
        # to start rather than log secrets (tests/project/test_access_log.py covers the pinned one).
        raise RuntimeError("daphne.cli.AccessLogGenerator is gone: cannot redact daphne's access log")
    cli.AccessLogGenerator = RedactingAccessLogGenerator
