"""Telegram through python-telegram-bot: the `telegram` kind.

`settings.CONNECTOR_CLASSES["telegram"]` points at
`connectors.platforms.telegram.TelegramConnector` (connector.py).

    client.py            running PTB from synchronous code; PTB errors → ConnectorError
    parsing.py           updates → IncomingMessage (pure)
    text.py              rendering BRAIN's Markdown to HTML parts of at most 4,096 characters (pure)
    typing_indicator.py  "typing…" (sendChatAction) while BRAIN works, from a background thread

The connector is loaded lazily, so the pure modules import without Django (bench scripts).
"""
from connectors.platforms.telegram.text import split_text

__all__ = ["TelegramConnector", "split_text"]


def __getattr__(name):
    # A documented seam: the connector class (and python-telegram-bot with it) loads only when the registry asks
    # for it, so a process without Telegram connectors never imports the SDK.
    if name == "TelegramConnector":
        from connectors.platforms.telegram.connector import TelegramConnector

        return TelegramConnector
    raise AttributeError(name)
