"""Slack through slack_sdk: the `slack` kind.

`settings.CONNECTOR_CLASSES["slack"]` points at `connectors.platforms.slack.SlackConnector` (connector.py).

    api.py          the Web API through AsyncWebClient on a guarded aiohttp session; errors → ConnectorError
    events.py       the request signature and Events API payloads → IncomingMessage (pure)
    socket_mode.py  Socket Mode sessions, held by `manage.py runconnectors`

The connector is loaded lazily, so a process without Slack connectors never imports the SDK.
"""
__all__ = ["SlackConnector"]


def __getattr__(name):
    if name == "SlackConnector":
        from connectors.platforms.slack.connector import SlackConnector

        return SlackConnector
    raise AttributeError(name)
