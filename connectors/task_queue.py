"""The one seam between services and the task queue: enqueue Celery tasks by registered name, read the backlog.

It also decides how a due delivery is sent (settings.DELIVERY_ENGINE): by its own Celery task ("tasks"), or by
the batch senders (`manage.py runsender`, "sender"), which a PostgreSQL NOTIFY wakes instead of a broker message.

Services never import `connectors.tasks` (it imports them: the tasks are thin wrappers over services). They name
the task instead, and `enqueue` looks it up in the current Celery app's registry when it is sent, so eager mode
(`CELERY_TASK_ALWAYS_EAGER`) still runs it inline and a test worker's app (set as current) receives it.
"""
import importlib
import logging

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from kombu.exceptions import ChannelError

from brain_connectors.celery import app

logger = logging.getLogger(__name__)

DELIVER = "connectors.tasks.deliver"
HANDLE_INBOUND = "connectors.tasks.handle_inbound"
DELIVER_EVENT = "connectors.tasks.deliver_event"
FETCH_ATTACHMENTS = "connectors.tasks.fetch_attachments"


def registered_task(task_name):
    """The task registered under `task_name` in the current Celery app."""
    tasks = current_app.tasks
    if task_name not in tasks:
        # The seam's one import by name: a web or test process may not have loaded the task module yet (a
        # worker has). Its @shared_task decorators register the tasks with every app, the current one too.
        importlib.import_module(task_name.rpartition(".")[0])
    return tasks[task_name]


def enqueue(task_name, *args, countdown=None):
    """Send `task_name(*args)` now (callers wrap this in transaction.on_commit), after `countdown` seconds if given."""
    task = registered_task(task_name)
    if countdown:
        task.apply_async(args=list(args), countdown=countdown)
    else:
        task.delay(*args)


def enqueue_delivery(delivery_id, countdown=None):
    enqueue(DELIVER, str(delivery_id), countdown=countdown)


# The channel runsender LISTENs on (connectors/delivery/sender.py).
SENDER_CHANNEL = "brain_delivery_due"
TASKS, SENDER = "tasks", "sender"
DELIVERY_ENGINES = (TASKS, SENDER)


def uses_sender():
    return settings.DELIVERY_ENGINE == SENDER


def delivery_due(delivery_id, countdown=None):
    """A delivery is due now (or after `countdown` seconds): make sure whoever sends it hears. Call inside the
    transaction that made it due. Tasks engine: its task after commit. Sender engine: a NOTIFY for work due now
    (a retry that comes due later is found by the senders' poll)."""
    if uses_sender():
        if not countdown:
            wake_sender()
        return
    transaction.on_commit(lambda: enqueue_delivery(delivery_id, countdown=countdown))


def wake_sender():
    """NOTIFY the senders. Inside a transaction PostgreSQL delivers it at commit (and drops it on rollback), and
    folds identical notifications of one transaction into one. Other databases: the senders poll."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [SENDER_CHANNEL])


def enqueue_brain(inbound_id):
    enqueue(HANDLE_INBOUND, inbound_id)


def broker_backlog():
    """Tasks waiting in the Celery queue, or None where that cannot be known (eager mode, a broker
    that does not say, or one that is down: then the sweeper behaves as if the queue were empty)."""
    if app.conf.task_always_eager:
        return None
    try:
        with app.connection_for_read() as conn:
            declared = conn.default_channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
            return int(declared.message_count)
    except ChannelError as exc:
        if "NOT_FOUND" in str(exc):
            return 0  # Redis deletes an empty queue's key; RabbitMQ has not declared it yet
        logger.warning("Could not read the broker's queue length (%s); sweeping without it", exc)
        return None
    except Exception as exc:  # the broker is down or cannot count: re-drive as before
        logger.warning("Could not read the broker's queue length (%s); sweeping without it", type(exc).__name__)
        return None
