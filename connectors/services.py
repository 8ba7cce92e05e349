"""The connectors app's public service API: re-exports the service functions from their homes, nothing else.

Every function takes the acting `Principal`, checks its object permission, changes state and writes the audit
row in one transaction; a refused or failed call also leaves an audit row and raises a `ServiceError`. The code
lives in `connectors.registry` (connector records, lifecycle, leases, grants, platform state) and
`connectors.delivery` (outbound, attempts, receipts, inbound, BRAIN replies, the sweeper). Other apps (routing,
conversations, DESIGN.md's `connectors.services.send_message` / `receive_message`) call it through this module;
code inside `connectors` imports from the homes.
"""
from connectors.delivery.attempts import attempt_delivery
from connectors.delivery.inbound import receive_message
from connectors.delivery.outbound import get_delivery, send_message
from connectors.delivery.questions import ask_question, get_question, wait_for_answer
from connectors.delivery.receipts import acknowledge_delivery, apply_receipt, mark_delivered
from connectors.delivery.replies import BRAIN, conversation_context, reply_with_brain
from connectors.delivery.requeue import requeue_delivery
from connectors.delivery.sweeper import sweep
from connectors.registry.grants import grant_permission, revoke_permission
from connectors.registry.leases import heartbeat, release_lease
from connectors.registry.lifecycle import (
    CONNECTOR_FATAL_CODES,
    record_connector_error,
    set_disabled,
    start_connector,
    stop_connector,
    test_connector,
)
from connectors.registry.platform_state import discard_platform_state, save_platform_secret, save_platform_state
from connectors.registry.records import (
    delete_connector,
    get_connector,
    list_connectors,
    register_connector,
    update_connector,
)
from connectors.retry_schedule import due_and_stuck, retry_delay
from connectors.task_queue import broker_backlog

__all__ = [
    # connector records
    "register_connector",
    "update_connector",
    "delete_connector",
    "list_connectors",
    "get_connector",
    # lifecycle
    "start_connector",
    "stop_connector",
    "set_disabled",
    "test_connector",
    "record_connector_error",
    "CONNECTOR_FATAL_CODES",
    # leases and grants
    "heartbeat",
    "release_lease",
    "grant_permission",
    "revoke_permission",
    # what platforms keep on their connector
    "save_platform_state",
    "discard_platform_state",
    "save_platform_secret",
    # messages out
    "send_message",
    "get_delivery",
    "attempt_delivery",
    "retry_delay",
    "requeue_delivery",
    "mark_delivered",
    "acknowledge_delivery",
    "apply_receipt",
    # questions with options (ask_user)
    "ask_question",
    "get_question",
    "wait_for_answer",
    # messages in, and BRAIN
    "receive_message",
    "BRAIN",
    "reply_with_brain",
    "conversation_context",
    # re-driving lost work
    "sweep",
    "due_and_stuck",
    "broker_backlog",
]
