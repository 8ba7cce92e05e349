"""Management commands of the connectors app."""
