"""`manage.py runconnectors`: long-running platform work (polling, heartbeats) under a lease.

One database lease per connector, so several processes can run and exactly one works on each connector.
The loop lives in connectors/registry/runner.py."""
import signal

from django.core.management.base import BaseCommand, CommandError

from connectors.registry.runner import DEFAULT_INTERVAL, DEFAULT_LEASE_SECONDS, Runner


class Command(BaseCommand):
    help = "Poll connectors that need a process (e.g. Telegram in polling mode), one process per connector at a time."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One round (lease, one poll each, release), then exit.")
        parser.add_argument("--lease-seconds", type=int, default=DEFAULT_LEASE_SECONDS,
                            help=f"How long a lease lasts without renewal (default {DEFAULT_LEASE_SECONDS}).")
        parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                            help=f"Seconds between heartbeats and lease renewals (default {DEFAULT_INTERVAL:g}).")

    def handle(self, *args, once, lease_seconds, interval, **options):
        try:
            runner = Runner(lease_seconds=lease_seconds, interval=interval)
        except ValueError as exc:
            raise CommandError(str(exc))

        def on_signal(signum, frame):
            runner.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            runner.run(once=once)
        except KeyboardInterrupt:  # a second Ctrl-C while shutting down
            runner.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
