"""Standard-Webhooks-style signatures for everything we sign or verify (BRAIN, webhook connector, subscriptions).

signature = base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), sent as `v1,<signature>` in
`webhook-signature` (several space-separated during key rotation), with `webhook-id` and
`webhook-timestamp`. Messages more than five minutes off are refused, so a captured request
cannot be replayed later.
"""
import base64
import hashlib
import hmac
import time
import uuid

TOLERANCE_SECONDS = 5 * 60


class SignatureError(ValueError):
    pass


def key_bytes(secret: str) -> bytes:
    """`whsec_<base64>` secrets are decoded as Standard Webhooks does; other strings are used as UTF-8."""
    if not secret:
        raise SignatureError("no signing key configured")
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, body: bytes, *, msg_id=None, timestamp=None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(secrets, headers, body: bytes, *, now=None, tolerance=TOLERANCE_SECONDS):
    """Raise SignatureError unless one of `secrets` signed this body recently. Constant-time compare."""
    if isinstance(secrets, str):
        secrets = [secrets]
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_ts = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (msg_id and raw_ts and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        msg_id.encode("utf-8")  # a lone surrogate cannot be signed: refuse it, do not crash on it
    except UnicodeEncodeError:
        raise SignatureError("webhook-id is not valid Unicode")
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer")
    now = time.time() if now is None else now
    try:
        stale = abs(now - timestamp) > tolerance
    except OverflowError:  # hundreds of digits: too large for a float, and for any clock
        stale = True
    if stale:
        raise SignatureError("webhook-timestamp is outside the 5 minute tolerance")
    # Bytes: compare_digest refuses str with non-ASCII characters, and a header may carry any.
    offered = [s.split(",", 1)[1].encode("utf-8", "surrogatepass") for s in signatures.split() if s.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1].encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise SignatureError("no valid v1 signature")
