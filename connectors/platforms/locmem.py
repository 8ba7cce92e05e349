"""`locmem`: an outbox in memory, the default platform in unit tests.

Like Django's locmem mail backend: `outbox` is a module-level list of (connector_id, OutgoingMessage); tests clear it.

Config `fail_with` makes sends fail on purpose: "transient" or "permanent". Config `health`
makes the periodic health check fail on purpose: "fail" (an unhealthy answer) or "raise" (the
platform call itself errors), so the monitoring's failure paths run against a real platform class.
"""
from connectors.platforms.base import BaseConnector, ConnectorError, HealthResult, OutgoingMessage, SendResult

outbox: list[tuple[str, OutgoingMessage]] = []


class LocmemConnector(BaseConnector):
    kind = "locmem"
    label = "In-memory outbox (tests)"
    supports_attachments = True  # recorded with the message in `outbox`
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "fail_with": {"enum": ["transient", "permanent"]},
            "health": {"enum": ["ok", "fail", "raise"]},
        },
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
        for attachment in message.attachments:
            attachment.read()  # as an upload would: a file that cannot be read fails the send
        outbox.append((self.connector.id, message))
        return SendResult(platform_message_id=f"locmem-{len(outbox)}")

    def health_check(self) -> HealthResult:
        health = self.config.get("health", "ok")
        if health == "raise":
            raise ConnectorError("locmem configured to error in its health check")
        if health == "fail":
            return HealthResult(ok=False, detail="locmem configured to fail its health check")
        return HealthResult(ok=True, detail="in-memory outbox")
