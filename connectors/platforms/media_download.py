"""What the platforms' file downloads share: the kind a MIME type names, and an HTTP failure as a ConnectorError."""
from connectors.platforms import attachments as kinds
from connectors.platforms.base import ConnectorError

# HTTP statuses worth another try later: the file host is busy or failing, not refusing this file.
PASSING = {408, 425, 429, 500, 502, 503, 504}


def kind_for(mime_type: str) -> str:
    """image/… → image, audio/… → audio, video/… → video, anything else (or nothing) → document."""
    major = (mime_type or "").split("/", 1)[0].strip().lower()
    return {"image": kinds.IMAGE, "audio": kinds.AUDIO, "video": kinds.VIDEO}.get(major, kinds.DOCUMENT)


def status_error(status: int, who: str, retry_after=None) -> ConnectorError:
    """A download answered `status` (not 2xx): permanent unless the host may answer better later. The message names
    the status only: the URL may name the person's file."""
    passing = status in PASSING
    return ConnectorError(f"{who} refused the file download (HTTP {status})", permanent=not passing,
                          retry_after=retry_after if passing else None, code="download_failed")


def too_large(size, max_bytes, who) -> ConnectorError:
    return ConnectorError(f"{who} announces {size} bytes, over the {max_bytes}-byte limit", permanent=True,
                          code="too_large")


def retry_after_of(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None
