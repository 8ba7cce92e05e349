"""Which reads are audited: the one list, for the services that write the rows and the test that checks them.

Every read of a REST GET operation (by operationId) and of an MCP read-only tool or resource is either
audited with exactly one action named here, or on NOT_AUDITED with the reason. The services write the
row with `record_read()` (ids, filters and counts, never content), in the transaction of the read;
tests/audit/test_read_audit.py walks every GET operation of the OpenAPI schema and every read tool the
MCP server lists and checks each against this module, so a new read cannot fall outside it.

`audit` imports no other app: this module is data and one helper over `record_action`.
"""
from audit.services import record_action

# action -> what it reads (the README's security model lists the same).
ACTIONS = {
    "connector.list": "the connectors the caller may view (filters only)",
    "connector.get": "one connector (its permission grants too, for admins)",
    "delivery.list": "deliveries on the connectors the caller may view (filters and count of the page)",
    "delivery.get": "one delivery",
    "event.list": "the event log (cursor and count)",
    "token.list": "the caller's own API tokens (count; never a secret)",
    "subscription.list": "the caller's event subscriptions",
    "subscription.get": "one event subscription",
    "subscription.deliveries": "one subscription's delivery attempts",
    "identity.list": "a person's channel identities (count)",
    "preference.list": "a person's routing preferences (count)",
    "pairing_code.list": "a person's pairing codes (count; never a code)",
    "notification.list": "the caller's notifications (count)",
    "notification.get": "one notification",
    "question.get": "one question and its answer",
    "conversation.context": "the recent messages of one conversation (its id)",
    "conversation.search": "a search over conversation memory (token and result counts, never the query)",
    "conversations.export": "everything memory holds about a person (counts)",
    "conversations.sentiment": "a person's sentiment trend, computed from their words (days, points)",
}

# REST GET operations (operationId of the OpenAPI schema) -> the action each writes.
REST = {
    "v1_connectors_list": "connector.list",
    "v1_connectors_retrieve": "connector.get",
    "v1_connectors_permissions_retrieve": "connector.get",
    "v1_deliveries_list": "delivery.list",
    "v1_deliveries_retrieve": "delivery.get",
    "v1_events_retrieve": "event.list",
    "v1_tokens_list": "token.list",
    "v1_subscriptions_list": "subscription.list",
    "v1_subscriptions_retrieve": "subscription.get",
    "v1_subscriptions_deliveries_list": "subscription.deliveries",
    "v1_identities_list": "identity.list",
    "v1_preferences_list": "preference.list",
    "v1_pairing_codes_list": "pairing_code.list",
    "v1_notifications_list": "notification.list",
    "v1_notifications_retrieve": "notification.get",
    "v1_conversations_people_export_retrieve": "conversations.export",
    "v1_conversations_people_sentiment_retrieve": "conversations.sentiment",
    "v1_conversations_search_retrieve": "conversation.search",
}

# MCP read-only tools (readOnlyHint) and resources (by URI template) -> the action each writes.
MCP = {
    "list_active_connectors": "connector.list",
    "get_connector_status": "connector.get",
    "get_delivery_status": "delivery.get",
    "get_question_answer": "question.get",
    "get_conversation_context": "conversation.context",
    "search_conversations": "conversation.search",
    "resources/list": "connector.list",
    "connector://{connector_id}": "connector.get",
}

# Pages outside the API (URL names), and the Django admin: audited ones here, the others on NOT_AUDITED.
PAGES = {
    "attachment-download": "attachment.download",  # BRAIN fetching a file: audited by its service, as BRAIN
}

# Reads that write no row, and why.
NOT_AUDITED = {
    "v1_pairing_codes_channels_list": "the kinds of connector one may pair with: configuration, nothing personal",
    "healthz": "liveness: no data",
    "readyz": "readiness: which services answer, no data",
    "metrics": "aggregate counters only, no ids; scraped every few seconds",
    "dashboard": "the page's frame; its data comes from dashboard-state",
    "dashboard-state": "staff-only aggregate health per connector, polled every few seconds: no message or person",
    "home": "the front door: links only",
    "preferences": "the page's frame; everything it shows comes from the audited API lists above",
    "preferences-pair-link": "the confirmation page of an emailed pairing link; confirming (POST) is audited",
    "login": "the sign-in form (failed sign-ins and lockouts are audited: auth.login_failed, auth.lockout)",
    "logout": "signing out (POST)",
    "password_reset": "a form", "password_reset_done": "a message", "password_reset_complete": "a message",
    "password_reset_confirm": "the new-password form; setting it is audited (auth.password_set)",
    "invitation-accept": "the new-password form; setting it is audited (auth.password_set)",
    "invitation_complete": "a message",
    "api-root": "the list of API routes", "schema": "the OpenAPI schema", "swagger-ui": "the API docs",
    "admin": "staff pages over the models. Conversation memory shows no message there; its search, sentiment "
             "trend, export and erasure go through the audited services above",
}


class UnregisteredRead(LookupError):
    """A service recorded a read action this module does not name."""


def record_read(action, principal, target_type, target_id="", **details):
    """The audit row of a successful read, in the caller's transaction; `action` must be in ACTIONS."""
    if action not in ACTIONS:
        raise UnregisteredRead(f"{action!r} is not an audited read in audit/reads.py")
    return record_action(action, principal, target_type, target_id, **details)
