"""A platform whose start fails the way an invalid bot token does."""
from connectors.platforms.base import ConnectorError
from connectors.platforms.locmem import LocmemConnector


class FailingStartConnector(LocmemConnector):
    def start(self):
        raise ConnectorError("token rejected by the platform (401)", permanent=True)


class CountingBrain:
    """A BRAIN backend that remembers every request it was asked (like locmem's outbox)."""

    calls = []

    def reply(self, request):
        CountingBrain.calls.append(request)
        return f"reply #{len(CountingBrain.calls)}"
