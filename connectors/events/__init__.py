"""Events: the durable log, its live push and websocket stream, and event subscriptions (signed HTTP POSTs)."""
