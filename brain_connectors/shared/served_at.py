"""The URL `make run` serves on, from the HOST and PORT it passes down (default http://127.0.0.1:8000)."""
import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "8000"
# A server bound to every interface is reached on this machine through loopback; a browser cannot open 0.0.0.0
# everywhere (Windows refuses it).
# It names the wildcards to map them away and binds nothing (bandit's B104 and ruff's S104 look for the string).
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104  # nosec B104


def served_url(path="/"):
    """The address a person on this machine opens, e.g. served_url("/admin/") -> "http://127.0.0.1:8431/admin/"."""
    host = os.environ.get("HOST", "").strip() or DEFAULT_HOST
    port = os.environ.get("PORT", "").strip() or DEFAULT_PORT
    host = _WILDCARDS.get(host, host)
    if ":" in host and not host.startswith("["):  # an IPv6 literal goes in brackets in a URL
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"
