"""The project package: settings, URLs, ASGI/Celery entry points and the cross-app glue every app may import."""
# Load the Celery app with Django so that @shared_task binds to it.
from brain_connectors.celery import app as celery_app

__all__ = ("celery_app",)
