"""The REST API under /api/v1/ for connectors, deliveries, tokens, events and subscriptions."""
