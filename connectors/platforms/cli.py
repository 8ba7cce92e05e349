"""`cli`: people talking to BRAIN from a terminal through `manage.py chat`.

There is no remote platform: a sent message is kept as its Delivery row (status `sent`) and the
person's attached `chat` session shows it and marks it `delivered`. A person who is not attached
sees it the next time they attach.

Files go the same way: they stay stored with the delivery, and the session saves them into its downloads folder as
it shows the message (`manage.py chat --downloads`); a person sends one with `/attach <path> [caption]`.
"""
from connectors.platforms.attachments import OUTGOING_KINDS
from connectors.platforms.base import BaseConnector, OutgoingMessage, SendResult


class CliConnector(BaseConnector):
    kind = "cli"
    label = "Command line (manage.py chat)"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"greeting": {"type": "string", "maxLength": 500}},
    }
    supports_attachments = True  # kept with the delivery; the chat session saves them (see above)
    attachment_kinds = OUTGOING_KINDS

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        return SendResult(platform_message_id=f"cli-{delivery_id}")
