"""Commands: runmcp, and the project-wide makemigrations guard."""
