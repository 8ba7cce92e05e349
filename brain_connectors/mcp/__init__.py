"""brain_connectors.mcp."""
