"""A platform whose start fails the way an invalid bot token does."""
from connectors.base import ConnectorError
from connectors.platforms.locmem import LocmemConnector


class FailingStartConnector(LocmemConnector):
    def start(self):
        raise ConnectorError("token rejected by the platform (401)", permanent=True)
