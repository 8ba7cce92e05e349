"""App config of `access`: registers its system checks and the login audit receivers."""
from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "brain_connectors.access"
    label = "access"
    verbose_name = "Access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from brain_connectors.access import checks, login  # noqa: F401  (registers the system checks and the login audit receivers)
