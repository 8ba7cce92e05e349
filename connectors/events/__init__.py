"""connectors.events."""
