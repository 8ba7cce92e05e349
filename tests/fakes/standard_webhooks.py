"""The fakes' own Standard-Webhooks signing and checking, written independently of
brain_connectors/shared/signing.py so that a test compares two implementations, not one with itself.

signature = base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")); key = base64-decoded `whsec_…`
secrets, else the UTF-8 bytes of the secret; headers webhook-id, webhook-timestamp and
webhook-signature ("v1,<sig>", several space-separated).
"""
import base64
import binascii
import hashlib
import hmac
import time

TOLERANCE_SECONDS = 5 * 60


def secret_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode("utf-8")


def compute_signature(secret: str, msg_id: str, timestamp, body: bytes) -> str:
    """The base64 signature (without `v1,`) that a sender holding `secret` offers."""
    to_sign = f"{msg_id}.{timestamp}.".encode("utf-8") + body
    return base64.b64encode(hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()).decode("ascii")


def sign_request(secret: str, body: bytes, msg_id: str, timestamp=None) -> dict:
    """Headers a Standard-Webhooks sender would send: for tests that play the sender's part."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + compute_signature(secret, msg_id, timestamp, body),
    }


def check_signature(secrets, headers, body: bytes, *, now=None, tolerance=TOLERANCE_SECONDS):
    """None if one of `secrets` signed this request recently, else the reason it did not verify."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    offered_header = lowered.get("webhook-signature", "")
    if not msg_id or not raw_timestamp or not offered_header:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if not raw_timestamp.isdigit():
        return "webhook-timestamp is not a non-negative integer"
    now = time.time() if now is None else now
    if abs(now - int(raw_timestamp)) > tolerance:
        return f"webhook-timestamp is {int(now - int(raw_timestamp))}s away from now (tolerance {tolerance}s)"
    offered = [value.encode("ascii", "replace") for version, _, value in
               (part.partition(",") for part in offered_header.split(" ")) if version == "v1" and value]
    if not offered:
        return "no v1 signature offered"
    for secret in secrets:
        try:
            expected = compute_signature(secret, msg_id, raw_timestamp, body).encode("ascii")
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return None
    return "no offered signature matches"
