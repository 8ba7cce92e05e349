"""The generated RBAC matrix's rules, alice's and bob's world, and the checks that refusals change nothing."""
from dataclasses import dataclass, field

import pytest
from django.db.models import Max
from guardian.models import UserObjectPermission

from audit.models import AuditEvent
from connectors import services
from connectors.events import sequencer, subscriptions
from connectors.models import ApiToken, Attachment, Connector, Delivery, Event, EventSubscription
from connectors.permissions import Principal
from connectors.tokens import create_token
from conversations.models import Conversation, Message
from conversations.recording import record_pending
from routing.identities import add_identity
from routing.models import ChannelIdentity, ConnectorPreference, Notification, PairingCode
from routing.notify import creation
from routing.pairing import issue
from tests.conftest import SYSTEM
from tests.connectors.rbac_matrix_support import GRANTS, READS_CONVERSATIONS, REST_MATRIX
from tests.connectors.rbac_matrix_support import LEVELS as MATRIX_LEVELS

LEVELS = ("none", "view", "send", "manage", "read", "admin")
OWNERS = ("own", "other")
CONNECTED, STOPPED, DISABLED = "CONNECTED", "STOPPED", "DISABLED"
ACTOR, VICTIM = "alice", "bob"


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How an operation is decided.

    connector: object permission on the connector, per REST_MATRIX[row]; someone else's is 404.
    listing:   always answers; shows one's own item (iff REST_MATRIX[row] allows viewing it, when
               row is set), never the other's.
    personal:  one's own data (or acting as oneself): allowed; the other's is refused with `other`.
    reads:     someone else's conversation on one's connector: needs READS_CONVERSATIONS[level] (403 where
               the connector is viewable, else 404); on the other's connector, 404.
    global:    needs a model permission no connector level gives: refused for everyone (403).
    open:      for every signed-in user, nothing private (the pairable channels).
    self:      creates something owned by the caller: allowed; there is no one else's to act on,
               so only the "own" cases exist.
    sends:     like self, but only for a caller who may send on some connector (REST_MATRIX[row] on
               their own); otherwise 403.
    """

    kind: str
    row: str = ""
    other: int = 404


def connector(row):
    return Rule("connector", row)


def listing(row=""):
    return Rule("listing", row)


def personal(other=404):
    return Rule("personal", other=other)


def reads(row):
    return Rule("reads", row)


GLOBAL, OPEN, SELF = Rule("global"), Rule("open"), Rule("self")


def matrix_status(row, level):
    return dict(zip(MATRIX_LEVELS, REST_MATRIX[row], strict=True))[level]


def shows_own(rule, level):
    return not rule.row or matrix_status(rule.row, level) < 300


def expected(rule, level, owner, ok):
    """(allowed, status) for a call; `ok` is the operation's success status."""
    if rule.kind == "connector":
        if owner == "other":
            return False, 404
        status = matrix_status(rule.row, level)
        return status < 300, (ok if status < 300 else status)
    if rule.kind in ("listing", "open", "self"):
        return True, ok
    if rule.kind == "sends":
        return (True, ok) if matrix_status(rule.row, level) < 300 else (False, 403)
    if rule.kind == "personal":
        return (True, ok) if owner == "own" else (False, rule.other)
    if rule.kind == "reads":
        if owner == "other":
            return False, 404
        if READS_CONVERSATIONS[level]:
            return True, ok
        return False, (403 if matrix_status(rule.row, level) < 300 else 404)
    if rule.kind == "global":
        return False, 403
    raise AssertionError(f"unknown rule {rule.kind}")


# --- the world: alice's and bob's objects -------------------------------------------------------


@dataclass
class World:
    level: str
    users: dict
    token: str  # alice's bearer token
    objects: dict = field(default_factory=dict)  # owner username -> {name: value}

    def of(self, owner):
        return self.objects[ACTOR if owner == "own" else VICTIM]


def _person(username, level, make_user, grant, carol):
    user = make_user(username)
    conn_id = f"conn_{username}"
    conn = services.register_connector(SYSTEM, id=conn_id, kind="locmem", display_name=f"{username}'s")
    services.start_connector(SYSTEM, conn_id)
    if level in GRANTS:
        grant(user, GRANTS[level], conn)
    grant(carol, "send_via_connector", conn)  # a bystander whose grants the permission calls change
    identities = [
        add_identity(SYSTEM, user, conn_id, f"{username}-{n}", label=f"{username} {n}") for n in (1, 2, 3)
    ]
    ConnectorPreference.objects.filter(identity=identities[2]).delete()  # free for a new preference
    preferences = list(ConnectorPreference.objects.filter(user=user).order_by("priority").values_list("pk", flat=True))
    word = f"{username}word"
    delivery, _ = services.send_message(SYSTEM, conn_id, f"{username}-1", f"hello {word}")
    # Someone without an account on the person's own connector: theirs to read only with read_conversations.
    services.send_message(SYSTEM, conn_id, f"{username}-stranger", f"private {word}")
    notification, _ = creation.notify_user(SYSTEM, user, "please read", "standard")
    question = services.ask_question(SYSTEM, conn_id, f"{username}-1", "Deploy?", [{"id": "go", "label": "Go"}])
    subscription, _ = subscriptions.create_subscription(
        Principal.for_user(user, "test"), url="http://127.0.0.1:9/hook", event_types=["connector.*"], active=False
    )
    spare, _ = create_token(SYSTEM, user, name="spare")
    pairing = issue.request_pairing_code(SYSTEM, user, conn_id)
    return user, {
        "username": username,
        "connector": conn_id,
        "delivery": str(delivery.id),
        "identity": identities[0].pk,
        "free_identity": identities[2].pk,
        "preference": preferences[0],
        "preferences": preferences,
        "notification": str(notification.id),
        "question": str(question.id),
        "subscription": str(subscription.id),
        "token": spare.prefix,
        "pairing": pairing.pairing.pk,
        "word": word,
        "stranger": f"{username}-stranger",
    }


def set_state(connector_id, state):
    if state == STOPPED:
        services.stop_connector(SYSTEM, connector_id)
    elif state == DISABLED:
        services.set_disabled(SYSTEM, connector_id, True)


def build_world(level, state, make_user, grant, token_for):
    carol = make_user("carol")
    world = World(level, {}, "")
    for username in (ACTOR, VICTIM):
        user, objects = _person(username, level, make_user, grant, carol)
        world.users[username] = user
        world.objects[username] = objects
        set_state(objects["connector"], state)
    world.token = token_for(world.users[ACTOR])
    # The shared world is built in a transaction that never commits (and so never runs on-commit
    # work): number its events, as the sequencer does after commit on PostgreSQL, and store its
    # memory, as the consumer does (no call under test stores the world's own messages).
    sequencer.sequence_pending()
    record_pending()
    return world


@pytest.fixture(autouse=True)
def _routing_settings(settings):
    settings.ROUTING_PAIRABLE_KINDS = ("locmem",)  # pairing codes on the test connectors
    settings.BRAIN_ALLOW_PRIVATE_URLS = True  # subscription URLs on 127.0.0.1 (never called: inactive)


# --- what each side holds, to prove that refusals change nothing ---------------------------------


def state_of(world, username):
    """Everything of one person's that an operation could change (not the audit log, not the
    tokens' last use)."""
    user, objects = world.users[username], world.objects[username]
    conn = Connector.objects.filter(pk=objects["connector"]).first()
    return {
        "connector": None if conn is None else (conn.status, conn.display_name, conn.config, conn.last_heartbeat,
                                                conn.get_credentials()),
        "grants": sorted(UserObjectPermission.objects.filter(object_pk=objects["connector"])
                         .values_list("user__username", "permission__codename")),
        "deliveries": sorted(Delivery.objects.filter(connector_id=objects["connector"])
                             .values_list("id", "status")),
        "events": Event.objects.filter(connector_id=objects["connector"]).count(),
        "identities": sorted(ChannelIdentity.objects.filter(user=user).values_list("pk", "label")),
        "preferences": sorted(ConnectorPreference.objects.filter(user=user)
                              .values_list("pk", "priority", "enabled", "identity_id")),
        "pairing": sorted(PairingCode.objects.filter(user=user).values_list("pk", "used_at")),
        "conversations": sorted(Conversation.objects.filter(connector_id=objects["connector"])
                                .values_list("pk", "person_id")),
        "messages": Message.objects.filter(conversation__connector_id=objects["connector"]).count(),
        "notifications": sorted(Notification.objects.filter(user=user)
                                .values_list("pk", "status", "acknowledged_at")),
        "subscriptions": sorted((s.pk, s.url, s.active, s.description, s.secret)
                                for s in EventSubscription.objects.filter(owner=user)),
        "tokens": sorted(ApiToken.objects.filter(user=user).values_list("prefix", "revoked_at")),
        "uploads": Attachment.objects.filter(uploaded_by=f"user:{user.pk}").count(),
    }


def audit_mark():
    return AuditEvent.objects.aggregate(m=Max("id"))["m"] or 0


def denied_since(mark):
    return list(AuditEvent.objects.filter(id__gt=mark, principal=f"user:{ACTOR}", result="denied")
                .values_list("action", "target_id"))


def check_outcome(world, before, mark, allowed, action, writes, target_id=None):
    """The common half of every case: what changed, and what the audit log says."""
    after = {name: state_of(world, name) for name in (ACTOR, VICTIM)}
    assert after[VICTIM] == before[VICTIM], "bob's data changed"
    if not allowed:
        assert after[ACTOR] == before[ACTOR], "a refused call changed something"
        denied = denied_since(mark)
        assert any(a == action for a, _ in denied), f"no denied audit row for {action}: {denied}"
        if target_id is not None:
            assert (action, str(target_id)) in denied, f"the denied row does not name {target_id}: {denied}"
    else:
        assert denied_since(mark) == []
        if writes:
            assert after[ACTOR] != before[ACTOR], "an allowed write changed nothing"
        else:
            assert after[ACTOR] == before[ACTOR], "a read changed something"


def check_search_results(world, ids):
    """Search on alice's connector: her own conversations always, the stranger's exactly when her
    level reads other people's conversations, nothing else (never bob's)."""
    conn = world.objects[ACTOR]["connector"]
    own = {str(pk) for pk in Conversation.objects.filter(person=world.users[ACTOR], connector_id=conn)
           .values_list("pk", flat=True)}
    stranger = {str(pk) for pk in Conversation.objects.filter(connector_id=conn, address=world.objects[ACTOR]["stranger"])
                .values_list("pk", flat=True)}
    assert own and stranger
    assert own <= ids and ids <= own | stranger, ids
    assert (stranger <= ids) == READS_CONVERSATIONS[world.level], ids
