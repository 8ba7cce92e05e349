"""App config of the project package: registers the configuration system checks."""
from django.apps import AppConfig


class BrainConnectorsConfig(AppConfig):
    name = "brain_connectors"
    verbose_name = "BRAIN Connectors (project)"

    def ready(self):
        from brain_connectors import checks  # noqa: F401  (registers the configuration checks)
