"""What a `/ws/events/` connection asks for and may see: its query, its credentials, its connectors.

Every refusal is a StreamRequestError carrying the close code the socket is closed with.
"""
from urllib.parse import parse_qs

from django.contrib.auth import get_user_model

from audit import services as audit
from connectors import tokens
from connectors.events.log import latest_seq, oldest_seq, visible_connector_ids, visible_query
from connectors.events.types import EventFilterError, parse_types
from connectors.models import Connector
from connectors.permissions import Principal

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_UNKNOWN_CONNECTOR = 4404
CLOSE_SLOW_CONSUMER = 4408

QUERY_PARAMETERS = frozenset({"since", "types", "connector"})
MAX_SEQ = 2**63 - 1


class StreamRequestError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_stream_query(query_string: bytes):
    """(since or None, type patterns, connector ids) from the query string, or StreamRequestError."""
    try:
        query = parse_qs(query_string.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise StreamRequestError(CLOSE_BAD_REQUEST, "the query string must be ASCII")
    unknown = sorted(set(query) - QUERY_PARAMETERS)
    if unknown:
        raise StreamRequestError(CLOSE_BAD_REQUEST, f"unknown filter {unknown[0]!r}; use since, types or connector")
    if any(len(values) > 1 for values in query.values()):
        raise StreamRequestError(CLOSE_BAD_REQUEST, "give each parameter once (comma-separate several values)")
    since = None
    if "since" in query:
        raw = query["since"][0]
        if not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_SEQ:
            raise StreamRequestError(CLOSE_BAD_REQUEST, "since must be a non-negative integer (an event seq)")
        since = int(raw)
    try:
        types = parse_types(query.get("types", [""])[0])
    except EventFilterError as exc:
        raise StreamRequestError(CLOSE_BAD_REQUEST, str(exc)[:120])
    connectors = [c.strip() for c in query.get("connector", [""])[0].split(",") if c.strip()]
    return since, types, connectors


def token_user(raw, client_ip):
    """The user of a bearer token; a rejected token is recorded against the socket's peer address."""
    try:
        user, _ = tokens.authenticate(raw)
    except tokens.TokenRejected as exc:
        # The socket peer (as REMOTE_ADDR is for HTTP), so repeats are counted per client address.
        tokens.record_rejection(exc, via="websocket", ip=client_ip)
        raise StreamRequestError(CLOSE_UNAUTHENTICATED, f"invalid token: {exc.reason.replace('_', ' ')}")
    return user


def initial_state(principal, requested, since):
    """(visible connector ids, cursor, latest seq, oldest seq) for a new stream; StreamRequestError
    (audited) for a requested connector the principal may not see."""
    visible = visible_connector_ids(principal)
    for connector_id in requested:
        exists = Connector.objects.filter(pk=connector_id).exists() if visible is None else connector_id in visible
        # Events of deleted connectors stay in the log; a superuser may still ask for them.
        if not exists and (visible is not None or not visible_query(None).filter(connector_id=connector_id).exists()):
            # Hidden like an unknown one; a connector that exists is a refused attempt, on record.
            hidden = Connector.objects.filter(pk=connector_id).exists()
            audit.record(
                "event.subscribe", principal=principal, result=audit.DENIED if hidden else audit.FAILURE,
                target_type="connector", target_id=connector_id[:64],
                details={"via": principal.via, "error": "not_found"},
            )
            raise StreamRequestError(CLOSE_UNKNOWN_CONNECTOR, f"unknown connector {connector_id[:64]!r}")
    latest = latest_seq()
    return visible, (latest if since is None else since), latest, oldest_seq()


def refresh_access(user_pk, raw_token):
    """(principal or None, visible connector ids): a deactivated user or a revoked token ends
    the stream (None), and grants given or taken since it opened apply from now on."""
    user = get_user_model().objects.filter(pk=user_pk).first()
    if user is None or not user.is_active:
        return None, set()
    if raw_token is not None:
        try:
            tokens.authenticate(raw_token)
        except tokens.TokenRejected:
            return None, set()
    principal = Principal.for_user(user, via="websocket")
    return principal, visible_connector_ids(principal)
