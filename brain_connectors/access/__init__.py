"""Who may get in, and what a refused attempt costs.

Login lockout (django-axes glue), the client address behind a trusted proxy, counted audit rows for repeated
refusals, the metrics permission.

Imports nothing from the other apps of the project except `audit`, so `connectors` can use it.
"""
