"""`locmem`: an outbox in memory, the default platform in unit tests (like Django's locmem mail
backend). `outbox` is a module-level list of (connector_id, OutgoingMessage); tests clear it.

Config `fail_with` makes sends fail on purpose: "transient" or "permanent".
"""
from ..base import BaseConnector, ConnectorError, OutgoingMessage, SendResult

outbox: list[tuple[str, OutgoingMessage]] = []


class LocmemConnector(BaseConnector):
    kind = "locmem"
    label = "In-memory outbox (tests)"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"fail_with": {"enum": ["transient", "permanent"]}},
    }
    credentials_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"api_key": {"type": "string", "minLength": 1, "maxLength": 500}},
    }

    def send(self, message: OutgoingMessage, *, delivery_id: str) -> SendResult:
        failure = self.config.get("fail_with")
        if failure:
            raise ConnectorError(f"locmem configured to fail ({failure})", permanent=failure == "permanent")
        outbox.append((self.connector.id, message))
        return SendResult(platform_message_id=f"locmem-{len(outbox)}")
