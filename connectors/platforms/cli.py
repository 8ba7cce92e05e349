"""`cli`: people talking to BRAIN from a terminal through `manage.py chat`.

There is no remote platform: a sent message is kept as its Delivery row (status `sent`) and the
person's attached `chat` session shows it and marks it `delivered`. A person who is not attached
sees it the next time they attach.
"""
from connectors.platforms.base import BaseConnector, OutgoingMessage, SendResult


class CliConnector(BaseConnector):
    kind = "cli"
    label = "Command line (manage.py chat)"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"greeting": {"type": "string", "maxLength": 500}},
    }

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        return SendResult(platform_message_id=f"cli-{delivery_id}")
