"""`manage.py runbridge`: publish the event log to NATS JetStream, one bridge per stream under a database lease.

The loop lives in connectors/events/bus_bridge.py. Without NATS_URL it idles quietly (`make up` keeps running)."""
import asyncio
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from nats.errors import Error as NatsError

from connectors.events.bus_bridge import DEFAULT_INTERVAL, DEFAULT_LEASE_SECONDS, Bridge, BridgeAuthError
from connectors.events.bus_stream import BridgeConfigError


class Command(BaseCommand):
    help = "Publish every committed event to NATS JetStream (NATS_URL), exactly one bridge per stream at a time."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true",
                            help="Publish what the log holds now, then exit (non-zero on any failure).")
        parser.add_argument("--lease-seconds", type=int, default=DEFAULT_LEASE_SECONDS,
                            help=f"How long the stream's lease lasts without renewal (default {DEFAULT_LEASE_SECONDS}).")
        parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                            help=f"Seconds between lease renewals (default {DEFAULT_INTERVAL:g}).")

    def handle(self, *args, once, lease_seconds, interval, **options):
        if not settings.NATS_URL:
            self.stdout.write("The event bus bridge is off: NATS_URL is not set.")
            if once:
                return
            # Idle rather than exit: honcho (`make up`) stops every process when one exits.
            stop = threading.Event()
            previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                while not stop.wait(1):  # a timed wait: the signal handler gets to run between waits
                    pass
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            return
        try:
            bridge = Bridge(lease_seconds=lease_seconds, interval=interval)
        except ValueError as exc:
            raise CommandError(str(exc))
        try:
            asyncio.run(self._run(bridge, once))
        except (BridgeConfigError, BridgeAuthError, ConnectionError) as exc:
            raise CommandError(str(exc))
        except (NatsError, asyncio.TimeoutError) as exc:  # --once only: the running bridge retries these
            raise CommandError(f"NATS failed: {exc or type(exc).__name__}")

    async def _run(self, bridge, once):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        await bridge.run(once=once)
