"""brain_connectors.shared."""
