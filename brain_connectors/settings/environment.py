"""Where settings come from: the environment (and a git-ignored `.env` written by `make run`), and DEBUG.

Missing secrets do not crash the import: with DEBUG off, `brain_connectors.checks` turns them into
system-check errors that name the variable, and asgi.py runs those checks before serving.
"""
import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if os.environ.get("BRAIN_READ_DOTENV", "1") != "0" and (BASE_DIR / ".env").exists():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
