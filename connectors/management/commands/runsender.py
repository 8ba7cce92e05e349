"""`manage.py runsender`: the batch sender (settings.DELIVERY_ENGINE = "sender"), one event loop per process.

Run several, on one machine or many: they share only PostgreSQL. The loop lives in connectors/delivery/sender.py."""
import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connectors.delivery.claims import DEFAULT_BATCH
from connectors.delivery.sender import DEFAULT_CONCURRENCY, Sender


class Command(BaseCommand):
    help = "Send queued deliveries in batches, many at once (the \"sender\" delivery engine)."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                            help=f"Deliveries claimed at a time (default {DEFAULT_BATCH}).")
        parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                            help=f"Sends in flight at once (default {DEFAULT_CONCURRENCY}).")
        parser.add_argument("--poll-seconds", type=float, default=None,
                            help="Look for due work this often without a wake-up (default DELIVERY_SENDER_POLL_SECONDS).")
        parser.add_argument("--until-idle", action="store_true", help="Exit when nothing is due (tests, one-off drains).")

    def handle(self, *args, batch, concurrency, poll_seconds, until_idle, **options):
        if batch < 1 or concurrency < 1:
            raise CommandError("--batch and --concurrency must be at least 1.")
        if settings.DELIVERY_ENGINE != "sender":
            self.stderr.write(f"Note: DELIVERY_ENGINE is {settings.DELIVERY_ENGINE!r}: send_message still enqueues a "
                              "task per delivery, and this sender only polls.")
        sender = Sender(batch=batch, concurrency=concurrency, poll_seconds=poll_seconds)
        self.stdout.write(f"runsender: sending (batch {batch}, concurrency {concurrency})")
        self.stdout.flush()

        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, sender.stop)
            return await sender.run(until_idle=until_idle)

        stats = asyncio.run(main())
        self.stdout.write(f"runsender: {stats.sent} sent, {stats.failed} failed or retried, {stats.batches} batches")
