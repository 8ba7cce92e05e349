"""The one seam between services and the task queue: enqueue Celery tasks by registered name, read the backlog.

Services never import `connectors.tasks` (it imports them: the tasks are thin wrappers over services). They name
the task instead, and `enqueue` looks it up in the current Celery app's registry when it is sent, so eager mode
(`CELERY_TASK_ALWAYS_EAGER`) still runs it inline and a test worker's app (set as current) receives it.
"""
import importlib
import logging

from celery import current_app
from kombu.exceptions import ChannelError

from brain_connectors.celery import app

logger = logging.getLogger(__name__)

DELIVER = "connectors.tasks.deliver"
HANDLE_INBOUND = "connectors.tasks.handle_inbound"
DELIVER_EVENT = "connectors.tasks.deliver_event"


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
