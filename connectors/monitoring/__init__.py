"""connectors.monitoring."""
