"""How monitoring reports: as the system actor "health", in one-line redacted texts with UTC times and durations."""
from brain_connectors.shared.log_redaction import redact
from connectors.permissions import Principal

# Health checks, incidents and alerts act (and are audited) as this actor.
HEALTH = Principal.system_actor("health")
DETAIL_MAX = 200
LAST_ERROR_MAX = 300


def one_line(text, limit=DETAIL_MAX) -> str:
    """One line, secrets redacted, truncated: what may go into events, audit rows and alerts."""
    line = redact(" ".join(str(text or "").split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def utc_time(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(delta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"
