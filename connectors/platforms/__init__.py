"""The platforms: one module or folder per kind, each owning its client, parsing and address rules."""
