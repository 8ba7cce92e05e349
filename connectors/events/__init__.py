"""Events: the durable log, live push, the websocket stream and signed subscriptions."""
