"""connectors.api."""
