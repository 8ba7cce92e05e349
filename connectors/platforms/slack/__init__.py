"""Slack through slack_sdk: the `slack` kind.

`settings.CONNECTOR_CLASSES["slack"]` points at `connectors.platforms.slack.SlackConnector` (connector.py).

    api.py          the Web API through AsyncWebClient on a guarded aiohttp session; errors → ConnectorError
    events.py       the request signature and Events API payloads → IncomingMessage (pure)
    files.py        files people share with the bot, downloaded with the bot token from Slack's host only
    uploads.py      files BRAIN sends (OutgoingMessage.attachments), through files_upload_v2
    socket_mode.py  Socket Mode sessions, held by `manage.py runconnectors`

The connector is loaded lazily, so a process without Slack connectors never imports the SDK.
"""
__all__ = ["SlackConnector"]


def __getattr__(name):
    if name == "SlackConnector":
        from connectors.platforms.slack.connector import SlackConnector

        return SlackConnector
    raise AttributeError(name)
