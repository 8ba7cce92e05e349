"""Logging: everything to stderr through the redaction filter, so secrets never reach a log (shared.log_redaction)."""
from brain_connectors.settings.environment import env

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "brain_connectors.shared.log_redaction.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["stderr"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # httpx logs every request URL at INFO, and Telegram's URLs carry the bot token.
        "httpx": {"level": "WARNING"},
        # Django's own handlers (`console` under DEBUG, `mail_admins`, `django.server`) would write
        # request lines the redaction filter never saw: their records go to `stderr` above instead.
        "django": {"handlers": [], "level": "NOTSET"},
        "django.server": {"handlers": [], "level": "NOTSET", "propagate": True},
    },
}
