"""`manage.py runscheduler`: the periodic tasks (retries, sweeps, health checks, purges…) where no Celery beat runs.

`make run` starts it beside daphne. It runs only when Celery is eager (no broker: the embedded default); with a
broker, Celery beat and workers do this work, and the command says so and exits. It stops with its parent process
(the shell `make run` replaced with daphne), so stopping the server stops it too.
"""
import logging
import os
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from brain_connectors import scheduler


class Command(BaseCommand):
    help = (
        "Run CELERY_BEAT_SCHEDULE's periodic tasks in this process, one at a time, when Celery is eager (no broker). "
        "`make run` starts it beside the server."
    )
    # The server it runs beside checks the configuration (brain_connectors/asgi.py): once in the terminal is enough.
    requires_system_checks = []

    def handle(self, *args, **options):
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            self.stderr.write("Celery has a broker: `celery beat` and workers run the periodic tasks; nothing to do.")
            return
        entries = scheduler.entries()
        if not entries:
            self.stderr.write("The schedule is empty; nothing to do.")
            return
        # One line per successful run would flood the terminal of `make run` (a sweep every few seconds); failures
        # still show, from Celery and from the scheduler.
        logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
        stop = threading.Event()
        # SIGTERM (a process manager, `kill`) ends the loop between two runs, never inside one.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        parent = os.getppid()
        self.stderr.write(
            "Scheduler: " + ", ".join(f"{e.name} every {e.interval:g} s" for e in entries)
        )
        try:
            scheduler.run(entries, stop, keep_going=lambda: os.getppid() == parent)
        # Ctrl-C when run by hand. Under `make run` the shell starts it with SIGINT ignored (a background job): there
        # Ctrl-C stops daphne, and the parent check ends this loop.
        except KeyboardInterrupt:
            pass
