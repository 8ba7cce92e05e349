"""Django's makemigrations, checking only the models.

Writing or checking migrations reads model definitions and nothing else, so it must work in a
bare checkout (a CI step, a developer's shell) without SECRET_KEY or FERNET_KEYS: the project's
configuration checks (brain_connectors.checks) would otherwise refuse to run it. Serving, `check`
and every other command still run all checks.
"""
from django.core.checks import Tags
from django.core.management.commands.makemigrations import Command as DjangoMakemigrations


class Command(DjangoMakemigrations):
    requires_system_checks = [Tags.models]
