"""Commands: runmcp, runscheduler (the periodic tasks without a broker), and the project-wide makemigrations guard."""
