"""connectors.registry."""
