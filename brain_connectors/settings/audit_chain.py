"""The audit chain's keys, sealing and checkpoints (audit.services, audit.sealer, audit.checkpoints)."""
from brain_connectors.settings.environment import BASE_DIR, env

# The chain's HMAC key, kept outside the database so that the database alone cannot re-chain a
# rewritten log. At least 32 characters; required (a check error) with DEBUG off, and audit rows
# are never written without it. Former keys (comma-separated) only verify the rows they wrote.
AUDIT_CHAIN_KEY = env.str("AUDIT_CHAIN_KEY", default="")
AUDIT_CHAIN_PREVIOUS_KEYS = [k.strip() for k in env.str("AUDIT_CHAIN_PREVIOUS_KEYS", default="").split(",") if k.strip()]
# The chain's head (seq and MAC) is checkpointed here, outside the database, in a subdirectory per
# database, so that deleting the newest rows is detected. verify_audit must see this directory.
AUDIT_CHECKPOINT_DIR = env.str("AUDIT_CHECKPOINT_DIR", default=str(BASE_DIR / "var" / "audit-checkpoints"))
AUDIT_CHECKPOINT_INTERVAL_SECONDS = env.float("AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=60.0)
# On PostgreSQL writers append audit rows unsealed; the sealer chains them this often (Celery beat
# and each daphne process). Audit rows need no low latency: verify_audit warns when a row waited
# longer than 10 intervals + 60 s (no sealer running).
AUDIT_SEAL_INTERVAL_SECONDS = env.float("AUDIT_SEAL_INTERVAL_SECONDS", default=1.0)
# Writers: Celery beat where it runs, and each daphne process (`make run` has no beat).
AUDIT_CHECKPOINT_IN_DAPHNE = env.bool("AUDIT_CHECKPOINT_IN_DAPHNE", default=True)
