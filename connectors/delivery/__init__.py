"""connectors.delivery."""
