"""The chaos run's load and chaos: the client threads that push messages, and the schedule that breaks things."""

import itertools
import json
import random
import threading
import time
from collections import Counter

import httpx
from chaos_processes import log
from chaos_reconcile import inbound_text, outbound_text
from common import ROOT

CONNECTOR = "tg_chaos"
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "telegram" / "message_text.json").read_text())
RETRYABLE = {429, 500, 502, 503, 504}


# --- the clients ----------------------------------------------------------------------------------


class Clients:
    """Threads that push the messages at a steady pace, retrying with the same identity."""

    def __init__(self, args, base_urls, telegram, api_token, chats):
        self.args, self.base_urls, self.telegram, self.api_token, self.chats = args, base_urls, telegram, api_token, chats
        self.last_secret = telegram.webhook.get("secret_token", "")
        self.tag = args.tag
        self.inbound_accepted = {}  # update_id (str) → text
        self.outbound_accepted = {}  # idempotency key → (delivery id, text)
        self.refused = []  # answers that a retry cannot fix: a bug, reported
        self.retries = 0
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.started = None

    def run(self):
        self.started = time.monotonic()
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.args.clients)]
        for thread in threads:
            thread.start()
        return threads

    def _next(self):
        with self.lock:
            index = next(self.counter)
        if index >= self.args.messages:
            return None
        # Steady pace: message i is due at i / rate seconds.
        delay = self.started + index / self.args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return index

    def _worker(self):
        with httpx.Client(timeout=self.args.request_timeout) as client:
            while (index := self._next()) is not None:
                if index % 2 == 0:
                    self._inbound(client, index)
                else:
                    self._outbound(client, index)

    def _inbound(self, client, index):
        chat = self.chats[index % len(self.chats)]
        update = json.loads(json.dumps(FIXTURE))
        update["update_id"] = self.args.first_update_id + index
        update["message"]["message_id"] = 100000 + index
        update["message"]["from"]["id"] = update["message"]["chat"]["id"] = chat
        text = inbound_text(index, self.tag)
        update["message"]["text"] = text
        body = json.dumps(update).encode()
        path = f"/webhooks/telegram/{CONNECTOR}/"
        # The secret of the latest setWebhook, as Telegram sends: a connector restarted (by the health check, after
        # a stale heartbeat) registers a new one.
        # While none is set (between deleteWebhook and setWebhook), the last one: Telegram would hold the update.
        secret = self.last_secret = self.telegram.webhook.get("secret_token") or self.last_secret
        headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret}
        answer = self._post(client, path, body, headers)
        if answer is not None:
            with self.lock:
                self.inbound_accepted[str(update["update_id"])] = text

    def _outbound(self, client, index):
        text = outbound_text(index, self.tag)
        key = f"chaos-{self.tag}-{index}"
        body = json.dumps({"recipient": str(self.chats[index % len(self.chats)]), "content": text}).encode()
        path = f"/api/v1/connectors/{CONNECTOR}/send/"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_token}",
                   "Idempotency-Key": key}
        answer = self._post(client, path, body, headers)
        if answer is not None:
            with self.lock:
                self.outbound_accepted[key] = (answer["delivery_id"], text)

    def _post(self, client, path, body, headers):
        """POST until a 2xx (its JSON) or an answer a retry cannot change (None, recorded). Each
        try goes to the next web process, as a load balancer skips one that is down."""
        deadline = time.monotonic() + self.args.give_up_after
        pause = 0.2
        for attempt in itertools.count(random.randrange(len(self.base_urls))):
            url = self.base_urls[attempt % len(self.base_urls)] + path
            try:
                response = client.post(url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return response.json()
                if response.status_code not in RETRYABLE:
                    with self.lock:
                        self.refused.append({"path": path, "status": response.status_code,
                                             "body": response.text[:300]})
                    return None
            except httpx.HTTPError:
                pass  # refused, reset or timed out: the process is down or was killed mid-request
            if time.monotonic() > deadline:
                with self.lock:
                    self.refused.append({"path": path, "status": "gave up"})
                return None
            with self.lock:
                self.retries += 1
            if attempt % len(self.base_urls) == len(self.base_urls) - 1:  # every process tried: wait a little
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 1.5, 2.0)


# --- the chaos schedule ---------------------------------------------------------------------------


class Chaos:
    def __init__(self, args, webs, workers, senders, beat, postgres, redis_server, telegram):
        self.args, self.webs, self.workers, self.senders, self.beat = args, webs, workers, senders, beat
        self.postgres, self.redis, self.telegram = postgres, redis_server, telegram
        self.stop_event = threading.Event()
        self.provider_windows = Counter()
        self.log = []

    def run(self):
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        return thread

    def _loop(self):
        start = time.monotonic()
        due = {"redis": self.args.redis_every, "pg": self.args.pg_every,
               "provider": self.args.provider_every}
        while not self.stop_event.wait(0.25):
            elapsed = time.monotonic() - start
            for service in (*self.webs, *self.workers, *self.senders, self.beat):
                service.supervise()
            # kill -9 each web and worker process once it has served for about kill_every seconds, and a
            # sender per round: each sender after about kill_every × senders (a killed sender leaves its whole
            # batch to the sweeper, and every restart costs a Django start-up on a small machine)
            for service, period in [*((s, self.args.kill_every) for s in (*self.webs, *self.workers)),
                                    *((s, self.args.kill_every * len(self.senders)) for s in self.senders)]:
                uptime = service.uptime()
                if uptime is not None and uptime >= period * service.jitter:
                    service.kill9()
            if elapsed >= due["redis"]:
                due["redis"] += self.args.redis_every
                log("redis: FLUSHALL and restart")
                self.redis.flush_and_restart()
            if elapsed >= due["pg"]:
                due["pg"] += self.args.pg_every
                log("postgres: stop -m immediate")
                stopped = time.time()
                self.postgres.stop_immediate()
                time.sleep(self.args.pg_down_seconds)
                self.postgres.start()
                self.postgres.outages.append((stopped, time.time()))
                log("postgres: started again")
            if elapsed >= due["provider"]:
                due["provider"] += self.args.provider_every
                self._provider_failure()

    def _provider_failure(self):
        """A few seconds of a failing Telegram, the kind chosen in turn: 500s, flood control, down."""
        kinds = ("server_error", "flood", "down")
        kind = kinds[sum(self.provider_windows.values()) % len(kinds)]
        self.provider_windows[kind] += 1
        log(f"telegram: {kind} for {self.args.provider_fail_seconds}s")
        if kind == "down":
            self.telegram.down()
        else:
            self.telegram.fail(kind, method="sendMessage")
        # Restored from its own timer, so the kills keep their schedule meanwhile.
        threading.Timer(self.args.provider_fail_seconds, self._provider_restore).start()

    def _provider_restore(self):
        self.telegram.clear_failures()
        self.telegram.up()

    def stop(self):
        self.stop_event.set()

