"""Celery application. Settings come from Django settings under the CELERY_ namespace."""
import gc
import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

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
