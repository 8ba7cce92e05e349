"""The loop behind `manage.py runconnectors`: long-running platform work under a lease.

Some connectors need a process of their own (Telegram in polling mode). Any number of
`runconnectors` processes may run; for each such connector exactly one of them works at a time:

- every `interval` seconds a runner heartbeats each CONNECTED connector whose platform
  `runs_poller`, asking for its lease (`heartbeat(..., lease_owner=owner)`). A
  Conflict "lease_held" means another live process owns it: skip it, and try again next round.
  Holding the lease, the runner keeps one thread polling it (`poll_once` in a loop) and renews
  the lease each round;
- a poller thread checks before every poll that the connector is still CONNECTED and that the
  lease is still ours and unexpired, and stops otherwise (stopped connector, lease lost);
- a stop (SIGTERM, Ctrl-C) stops the threads, then releases the leases, so another process
  takes over at once; after a crash (kill -9) the others take over when the lease expires.

A platform error that makes the connector unusable (an invalid token) moves it to ERROR.
Transient errors are logged and retried with backoff (or after the platform's Retry-After).
"""
import logging
import os
import secrets
import socket
import threading

from django.db import close_old_connections, connection
from django.utils import timezone

from brain_connectors.shared.errors import Conflict, NotFound
from connectors.models import Connector, ConnectorStatus
from connectors.permissions import Principal
from connectors.platforms.base import ConnectorError
from connectors.registry.kinds import UnknownKind, connector_for
from connectors.registry.leases import heartbeat, release_lease
from connectors.registry.lifecycle import CONNECTOR_FATAL_CODES, record_connector_error

logger = logging.getLogger("connectors.registry.runner")

DEFAULT_LEASE_SECONDS = 30
DEFAULT_INTERVAL = 5.0
MAX_BACKOFF = 60.0
IDLE_WAIT = 0.5  # after a poll that found nothing (long polling already waited)


def make_owner_id():
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Runner:
    def __init__(self, *, owner=None, lease_seconds=DEFAULT_LEASE_SECONDS, interval=DEFAULT_INTERVAL):
        if interval <= 0 or lease_seconds <= 0:
            raise ValueError("interval and lease_seconds must be positive")
        if interval >= lease_seconds:
            raise ValueError("interval must be shorter than lease_seconds, or leases lapse between renewals")
        self.owner = owner or make_owner_id()
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.principal = Principal.system_actor(f"runconnectors:{self.owner}", via="runconnectors")
        self.stopping = threading.Event()
        self.pollers: dict[str, Poller] = {}
        self.held: set[str] = set()
        self._waiting_on: dict[str, str] = {}  # connector id → owner we last saw holding it

    # --- one round -------------------------------------------------------------------------
    def candidates(self):
        """CONNECTED connectors whose platform needs a process: {id: (lease owner, expiry)}."""
        found = {}
        for row in Connector.objects.filter(status=ConnectorStatus.CONNECTED).order_by("id"):
            try:
                if connector_for(row).runs_poller:
                    found[row.id] = (row.lease_owner, row.lease_expires_at)
            except (UnknownKind, TypeError, ImportError) as exc:
                logger.warning("Skipping connector %s: %s", row.id, exc)
        return found

    def _note_waiting(self, connector_id, holder):
        if self._waiting_on.get(connector_id) != holder:
            logger.info("%s: %s is leased by %s; waiting", self.owner, connector_id, holder)
            self._waiting_on[connector_id] = holder

    def renew_leases(self):
        """Heartbeat and lease every candidate; returns the ids whose lease we hold now."""
        close_old_connections()
        held = set()
        now = timezone.now()
        for connector_id, (holder, expires) in self.candidates().items():
            if holder and holder != self.owner and expires and expires > now:
                self._note_waiting(connector_id, holder)  # plainly taken: no refused heartbeat to audit
                continue
            try:
                heartbeat(self.principal, connector_id, lease_owner=self.owner,
                                   lease_seconds=self.lease_seconds)
            except Conflict as exc:
                if exc.code != "lease_held":
                    raise
                # Another process took it since we looked.
                self._note_waiting(connector_id, Connector.objects.filter(pk=connector_id)
                                   .values_list("lease_owner", flat=True).first())
                continue
            except NotFound:  # deleted meanwhile
                continue
            self._waiting_on.pop(connector_id, None)
            if connector_id not in self.held:
                logger.info("%s: leased %s for %ss", self.owner, connector_id, self.lease_seconds)
            held.add(connector_id)
        for connector_id in self.held - held:  # stopped, errored, deleted or taken over
            logger.info("%s: no longer running %s", self.owner, connector_id)
            self._stop_poller(connector_id)
            release_lease(self.principal, connector_id, self.owner)
        self.held = held
        return held

    # --- the loop ----------------------------------------------------------------------------
    def run(self, *, once=False):
        logger.info("runconnectors %s started (lease %ss, heartbeat every %ss)", self.owner, self.lease_seconds,
                    self.interval)
        try:
            while not self.stopping.is_set():
                held = self.renew_leases()
                if once:
                    for connector_id in sorted(held):
                        Poller(self, connector_id).poll_one_round()
                    break
                for connector_id in held:
                    poller = self.pollers.get(connector_id)
                    if poller is None or not poller.is_alive():
                        self.pollers[connector_id] = poller = Poller(self, connector_id)
                        poller.start()
                self.stopping.wait(self.interval)
        finally:
            self.shutdown()
        logger.info("runconnectors %s stopped", self.owner)

    def stop(self):
        self.stopping.set()

    def shutdown(self):
        """Stop every poller, then give up every lease we hold."""
        self.stopping.set()
        for poller in self.pollers.values():
            poller.stop_event.set()
        for poller in self.pollers.values():
            poller.join(timeout=poller.join_timeout())
        self.pollers.clear()
        close_old_connections()
        for connector_id in sorted(self.held):
            try:
                if release_lease(self.principal, connector_id, self.owner):
                    logger.info("%s: released %s", self.owner, connector_id)
            except Exception:
                logger.exception("Could not release the lease on %s", connector_id)
        self.held = set()

    def _stop_poller(self, connector_id):
        poller = self.pollers.pop(connector_id, None)
        if poller is not None:
            poller.stop_event.set()
            poller.join(timeout=poller.join_timeout())


class Poller(threading.Thread):
    """Polls one connector while it is CONNECTED and leased to our runner."""

    def __init__(self, runner: Runner, connector_id: str):
        super().__init__(name=f"poller-{connector_id}", daemon=True)
        self.runner = runner
        self.connector_id = connector_id
        self.stop_event = threading.Event()
        self.failures = 0
        self.poll_timeout = 0

    def join_timeout(self):
        return self.poll_timeout + 15  # a long poll in flight, plus the request timeout

    def _platform_if_still_ours(self):
        row = Connector.objects.filter(pk=self.connector_id).first()
        if row is None or row.status != ConnectorStatus.CONNECTED:
            return None
        if row.lease_owner != self.runner.owner or not row.lease_expires_at or row.lease_expires_at <= timezone.now():
            return None
        platform = connector_for(row)
        self.poll_timeout = getattr(platform, "poll_timeout", 0) or 0
        return platform

    def poll_one_round(self):
        """One poll_once; returns False when this poller should stop."""
        platform = self._platform_if_still_ours()
        if platform is None:
            logger.info("%s: stopped polling %s (not running, or not leased to us)", self.runner.owner,
                        self.connector_id)
            return False
        try:
            handled = platform.poll_once(self.stop_event)
        except ConnectorError as exc:
            if exc.permanent and exc.code in CONNECTOR_FATAL_CODES:
                logger.error("%s: %s", self.connector_id, exc.message)
                record_connector_error(self.runner.principal, self.connector_id, exc)
                return False
            self.failures += 1
            delay = exc.retry_after or min(MAX_BACKOFF, 2 ** min(self.failures, 6))
            logger.warning("%s: polling failed (%s); retrying in %.0fs", self.connector_id, exc.message, delay)
            self.stop_event.wait(delay)
            return True
        except Exception:
            self.failures += 1
            delay = min(MAX_BACKOFF, 2 ** min(self.failures, 6))
            logger.exception("%s: polling failed unexpectedly; retrying in %.0fs", self.connector_id, delay)
            self.stop_event.wait(delay)
            return True
        self.failures = 0
        if handled:
            logger.info("%s: handled %d update(s)", self.connector_id, handled)
        else:
            self.stop_event.wait(IDLE_WAIT)
        return True

    def run(self):
        logger.info("%s: polling %s", self.runner.owner, self.connector_id)
        try:
            while not self.stop_event.is_set() and not self.runner.stopping.is_set():
                close_old_connections()
                if not self.poll_one_round():
                    break
        finally:
            connection.close()  # this thread's own database connection
