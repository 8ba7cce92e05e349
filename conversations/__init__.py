"""The conversations app: BRAIN's memory of every message, search, analysis and privacy controls."""
