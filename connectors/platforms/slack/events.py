"""Slack Events API payloads: the request signature, and which events become messages (no I/O).

Signature: `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` under the
app's signing secret; slack_sdk's SignatureVerifier computes it and compares in constant time. A timestamp more
than five minutes off is refused, so a captured request cannot be replayed later.

Events taken (`parse_event`):
- `message` in a direct message (`channel_type` "im"): what a person writes to the bot;
- `app_mention` in a channel: "@bot …", the mention itself cut from the text;
- `message` in channels and group DMs only when the connector's `channel_messages` is on (it then sees every
  message in the channels the bot is in; a mention arriving as both events is stored once, see the key below);
- `message` with subtype `file_share` or `thread_broadcast`: a person's message like the others; the `files` it
  carries become attachments (connectors.platforms.slack.files), downloaded after commit.
Ignored, and acknowledged: the bot's own messages and any bot's (`bot_id`, `bot_message`: answering them loops),
edits (`message_changed`) and deletions (a second answer to an edited question is noise, and the first is sent),
joins, topic changes and every other subtype (they carry no question), and event types we do not subscribe to.

Each message is keyed `<channel>:<ts>`, which Slack keeps for the message across retries of one event
(`X-Slack-Retry-Num`) and across the two events of a mention (`message` and `app_mention`): stored once.
The sender is `team:user` (`T…:U…`), the identity pairing links to a person.
"""
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from slack_sdk.signature import SignatureVerifier

from connectors.platforms.base import IncomingMessage, MessageValidationError
from connectors.platforms.slack.files import attachments as file_attachments

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
MAX_SKEW_SECONDS = 300
PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}
_MENTION = re.compile(r"^\s*<@[A-Z0-9]+(\|[^>]*)?>[\s,:]*")


class SignatureProblem(Exception):
    """Why a request is not provably Slack's (missing, stale or forged)."""


class Ignored(Exception):
    """A well-signed payload that is not a person's message for BRAIN; the reason says which."""


@dataclass(frozen=True)
class Challenge:
    """url_verification: Slack checks the Request URL by asking us to echo this."""

    value: str


def verify_signature(signing_secret: str, headers, body: bytes, now=None):
    """Raise SignatureProblem unless the request carries Slack's valid, fresh signature for `body`."""
    signature = headers.get(SIGNATURE_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        raise SignatureProblem(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    if not re.fullmatch(r"v0=[0-9a-f]{64}", signature):  # also keeps non-ASCII text from compare_digest's TypeError
        raise SignatureProblem(f"{SIGNATURE_HEADER} is not a v0 signature")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):  # ASCII digits, and no number past any clock (10**400)
        raise SignatureProblem(f"{TIMESTAMP_HEADER} is not a Unix time")
    if abs((now or time.time()) - int(timestamp)) > MAX_SKEW_SECONDS:
        raise SignatureProblem(f"{TIMESTAMP_HEADER} is more than {MAX_SKEW_SECONDS // 60} minutes off")
    try:  # the SDK hashes the body as UTF-8 text, which is all Slack ever sends
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureProblem("the body is not UTF-8")
    if not signing_secret or not SignatureVerifier(signing_secret).is_valid(body, timestamp, signature):
        raise SignatureProblem(f"wrong {SIGNATURE_HEADER}")


def parse_body(body: bytes, bot_user_id="", channel_messages=False):
    """A Challenge, or the IncomingMessage in an event_callback; raises Ignored for everything else."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[…" nested beyond the parser
        raise Ignored("the body is not JSON")
    if not isinstance(payload, dict):
        raise Ignored("the body is not a JSON object")
    if payload.get("type") == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not 0 < len(challenge) <= 200:
            raise Ignored("url_verification without a usable challenge")
        return Challenge(challenge)
    if payload.get("type") != "event_callback":
        raise Ignored(f"payload type {payload.get('type')!r} is not handled")
    return parse_event(payload, bot_user_id, channel_messages)


def parse_event(payload: dict, bot_user_id="", channel_messages=False) -> IncomingMessage:
    """The person's message in one event_callback payload (see the module docstring), or Ignored."""
    event = payload.get("event")
    if not isinstance(event, dict):
        raise Ignored("event_callback without an event")
    kind, subtype = event.get("type"), event.get("subtype")
    if not isinstance(subtype, (str, type(None))):  # a list or an object here is no Slack event (and unhashable)
        raise Ignored("the event's subtype is not a string")
    if kind not in ("message", "app_mention"):
        raise Ignored(f"event type {kind!r} is not handled")
    if event.get("bot_id") or subtype == "bot_message" or (bot_user_id and event.get("user") == bot_user_id):
        raise Ignored("a bot's message (ours or another's)")
    if subtype not in PERSON_SUBTYPES:
        raise Ignored(f"message subtype {subtype!r} carries no question")
    channel_type = event.get("channel_type") or ("channel" if kind == "app_mention" else "")
    if kind == "message" and channel_type != "im" and not channel_messages:
        raise Ignored("a channel message (mentions come as app_mention; channel_messages is off)")
    team, user, channel, ts = (event.get("team") or payload.get("team_id"), event.get("user"), event.get("channel"),
                               event.get("ts"))
    if not all(isinstance(value, str) and value for value in (team, user, channel, ts)):
        raise Ignored("the event lacks its team, user, channel or ts")
    text = event.get("text") if isinstance(event.get("text"), str) else ""
    if kind == "app_mention":
        text = _MENTION.sub("", text, count=1)
    attachments = file_attachments(event.get("files"))
    if not text.strip() and attachments:
        text = ""  # the files are the message: BRAIN gets them as attachments
    metadata = {"channel": channel, "ts": ts, "channel_type": channel_type, "team": team, "user": user,
                "event_type": kind}
    if isinstance(event.get("thread_ts"), str):
        metadata["thread_ts"] = event["thread_ts"]
    if channel_type != "im":  # memory keeps one conversation per channel thread; a DM is one conversation
        metadata["conversation"] = f"{team}:{channel}:{metadata.get('thread_ts', ts)}"
    if isinstance(payload.get("event_id"), str):
        metadata["event_id"] = payload["event_id"]
    try:
        return IncomingMessage(
            sender=f"{team}:{user}", content=text, platform_message_id=f"{channel}:{ts}",
            received_at=_time(ts), metadata=metadata, attachments=attachments,
        )
    except MessageValidationError as exc:
        raise Ignored(f"the message cannot be stored: {exc}")


def _time(ts: str):
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
