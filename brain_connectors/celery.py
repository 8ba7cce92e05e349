"""Celery application. Settings come from Django settings under the CELERY_ namespace."""
import gc
import logging
import os

from celery import Celery
from celery.signals import setup_logging, task_prerun, worker_init, worker_process_init
from django.conf import settings  # lazy: read when a worker sets up logging, after DJANGO_SETTINGS_MODULE is set
from django.db import close_old_connections
from django.utils.log import configure_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brain_connectors.settings")

app = Celery("brain_connectors")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@worker_process_init.connect
def _freeze_startup_objects(**kwargs):
    """What a worker has loaded at start lives as long as it does: keeping it out of the
    collector's full passes keeps them short (see brain_connectors/asgi.py)."""
    gc.freeze()


@task_prerun.connect
def _drop_broken_connections(sender=None, **kwargs):
    """With CELERY_DB_REUSE_MAX the fixup keeps connections between tasks; as a web request does, drop one that
    broke in the last task or is older than CONN_MAX_AGE, so a database restart costs one task, not N."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


@setup_logging.connect
def _keep_the_project_logging(loglevel=None, **kwargs):
    """Without a receiver here, a worker (and beat) replaces the root logger's handlers with its own,
    and its lines skip brain_connectors.shared.log_redaction's redaction. Keep settings.LOGGING, and take only
    the level given with `-l`."""
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
