"""The connectors app: the registry, the platforms, the delivery pipeline, events, monitoring, its API and admin."""
