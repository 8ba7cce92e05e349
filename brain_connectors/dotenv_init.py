"""Write a git-ignored `.env` with fresh random secrets, once. Run by `make run`.

Kept free of Django imports: it must run before settings can load.
Usage: python -m brain_connectors.dotenv_init [path]
"""
import base64
import os
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

TEMPLATE = """\
# Written by `make run` on first start. Keep it secret; it is git-ignored.
# Embedded defaults: SQLite under var/, in-memory channel layer, eager Celery.
# Set DATABASE_URL and REDIS_URL to run on PostgreSQL and Redis (see README).
DEBUG=true
SECRET_KEY={secret_key}
FERNET_KEYS={fernet_key}
SEARCH_INDEX_KEY={search_index_key}
BRAIN_SIGNING_KEY={brain_signing_key}
AUDIT_CHAIN_KEY={audit_chain_key}
BRAIN_BACKEND=connectors.delivery.brain.EchoBrain
ALLOWED_HOSTS=127.0.0.1,localhost
# Development only: lets webhooks, subscriptions, api_base_url and BRAIN_URL point at local and
# private addresses (a receiver on 127.0.0.1). Never link-local or cloud metadata. Off in production.
BRAIN_ALLOW_PRIVATE_URLS=true
"""


def render():
    return TEMPLATE.format(
        secret_key=secrets.token_urlsafe(50),
        fernet_key=Fernet.generate_key().decode(),
        search_index_key=secrets.token_urlsafe(32),
        brain_signing_key="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        audit_chain_key=secrets.token_urlsafe(32),
    )


# Secrets added after a `.env` may have been written: `make run` appends any that is missing.
ADDED_LATER = {"AUDIT_CHAIN_KEY": lambda: secrets.token_urlsafe(32)}


def ensure(path: Path) -> bool:
    """Create `path` if it is missing; return True if it was created."""
    if path.exists():
        return False
    # 0600 from the start: the secrets are never world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(render())
    return True


def add_missing(path: Path) -> list[str]:
    """Append to an existing `path` each secret of ADDED_LATER it lacks; return their names."""
    text = path.read_text()
    present = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line}
    missing = [name for name in ADDED_LATER if name not in present]
    if missing:
        lines = "".join(f"{name}={ADDED_LATER[name]()}\n" for name in missing)
        with path.open("a") as handle:
            handle.write(("" if text.endswith("\n") or not text else "\n") + lines)
    return missing


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / ".env")
    if ensure(target):
        print(f"Wrote {target} with new random secrets.")
    elif added := add_missing(target):
        print(f"Added {', '.join(added)} to {target}.")
