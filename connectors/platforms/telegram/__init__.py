"""Telegram through python-telegram-bot: the `telegram` kind.

Telegram (python-telegram-bot). `settings.CONNECTOR_CLASSES["telegram"]` points at
`connectors.platforms.telegram.TelegramConnector` (connector.py).

    client.py   running PTB from synchronous code; PTB errors → ConnectorError
    parsing.py  updates → IncomingMessage (pure)
    text.py     splitting texts over 4,096 characters (pure)

The connector is loaded lazily, so the pure modules import without Django (bench scripts).
"""
from connectors.platforms.telegram.text import split_text

__all__ = ["TelegramConnector", "split_text"]


def __getattr__(name):
    if name == "TelegramConnector":
        from connectors.platforms.telegram.connector import TelegramConnector

        return TelegramConnector
    raise AttributeError(name)
