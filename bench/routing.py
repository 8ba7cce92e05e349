"""Router decision time: `routing.router.decision.decide()` for people with 4 identities and 4 preferences
each, on PostgreSQL. Prints p50/p99 cold (the per-process cache cleared before each decision, so it
reads the connector states and the person's identities, preferences and newest WhatsApp message
from the database) and warm (from the cache). Goal: p99 <= 2 ms (warm).

    .venv/bin/python bench/routing.py --users 100000 --sample 2000

Seeding: the people, identities and preferences are written with bulk_create in batches (the
people get unusable passwords: no hashing). The four connectors (telegram, sms, whatsapp, email)
are registered through `connectors.services.register_connector` with valid configs and
credentials, then set CONNECTED directly in the database instead of being started, since starting
would call the real platforms. A fifth of the people wrote on WhatsApp within the last day, a
tenth of the preferences are disabled, a third have quiet hours in one of several time zones, and
notification types vary, so every decision walks the whole set of reasons.
"""
import argparse
import gc
import os
import random
import sys
import time
from datetime import time as dtime
from datetime import timedelta

from common import ROOT, emit, fresh_database, prepare_environment, setup_django, summary_ms

# This script's own directory must not shadow the `routing` app (the file is bench/routing.py).
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(ROOT / "bench")]

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/brain_bench_routing"
ZONES = ["UTC", "Europe/London", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
TYPE_CHOICES = [[], ["standard", "urgent", "digest"], ["urgent"], ["standard", "digest"], ["standard", "urgent"]]


def seed(users, batch, rng):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from connectors import services
    from connectors.models import Connector, ConnectorStatus, InboundMessage
    from connectors.permissions import Principal
    from routing.models import ChannelIdentity, ConnectorPreference

    system = Principal.system_actor("bench", via="bench")
    twilio = {"account_sid": "AC" + "0" * 32, "auth_token": "x" * 32}
    connectors = [
        ("tg_main", "telegram", {"mode": "webhook"}, {"bot_token": "123456:" + "A" * 35}),
        ("sms_main", "sms", {"from_number": "+14155550100"}, twilio),
        ("wa_main", "whatsapp", {"from_number": "whatsapp:+14155550101"}, twilio),
        ("mail_main", "email", {"from_address": "brain@example.org"}, {}),
    ]
    for cid, kind, config, credentials in connectors:
        services.register_connector(system, id=cid, kind=kind, display_name=cid, config=config, credentials=credentials)
    Connector.objects.update(status=ConnectorStatus.CONNECTED, last_heartbeat=timezone.now())

    User = get_user_model()
    now = timezone.now()
    unusable = make_password(None)
    for start in range(0, users, batch):
        stop = min(users, start + batch)
        people = User.objects.bulk_create(
            [User(username=f"person{i:06d}", password=unusable) for i in range(start, stop)]
        )
        identities = []
        for person in people:
            n = person.pk
            phone = f"+4477{n:08d}"
            identities += [
                ChannelIdentity(user=person, connector_id="tg_main", address=str(10**9 + n), verified_at=now),
                ChannelIdentity(user=person, connector_id="sms_main", address=phone, verified_at=now),
                ChannelIdentity(user=person, connector_id="wa_main", address=phone, verified_at=now),
                ChannelIdentity(user=person, connector_id="mail_main", address=f"person{n}@example.org", verified_at=now),
            ]
        identities = ChannelIdentity.objects.bulk_create(identities)
        preferences, inbound = [], []
        for k in range(0, len(identities), 4):
            priorities = rng.sample([1, 2, 3, 4], 4)
            for identity, priority in zip(identities[k:k + 4], priorities, strict=True):
                quiet = rng.random() < 0.33
                preferences.append(
                    ConnectorPreference(
                        user_id=identity.user_id,
                        identity=identity,
                        priority=priority,
                        enabled=rng.random() >= 0.1,
                        notification_types=rng.choice(TYPE_CHOICES),
                        quiet_start=dtime(22) if quiet else None,
                        quiet_end=dtime(7) if quiet else None,
                        timezone=rng.choice(ZONES),
                    )
                )
            wa = identities[k + 2]
            if rng.random() < 0.2:
                inbound.append(
                    InboundMessage(
                        connector_id="wa_main",
                        platform_message_id=f"SM{wa.pk}",
                        sender="whatsapp:" + wa.address,
                        content="hello",
                        received_at=now - timedelta(minutes=rng.randint(1, 60 * 30)),
                    )
                )
        ConnectorPreference.objects.bulk_create(preferences)
        InboundMessage.objects.bulk_create(inbound)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=5000, help="people per bulk_create batch")
    parser.add_argument("--chunk", type=int, default=200,
                        help="warm pass: people primed then timed together (well within ROUTING_CACHE_SECONDS)")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()

    env = prepare_environment(database_url=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE))
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from routing.models import ConnectorPreference
    from routing.router import cache as router_cache
    from routing.router import decision as router_decision

    rng = random.Random(args.seed)
    started = time.perf_counter()
    seed(args.users, args.batch, rng)
    seeded_s = time.perf_counter() - started
    emit(bench="routing", phase="seed", users=args.users, identities=args.users * 4,
         preferences=ConnectorPreference.objects.count(), seconds=round(seeded_s, 1))

    ids = list(get_user_model().objects.values_list("pk", flat=True))
    sample = rng.sample(ids, min(args.sample, len(ids)))
    types = [rng.choice(["standard", "urgent", "digest"]) for _ in sample]
    for user_id, kind in list(zip(sample, types, strict=True))[:50]:  # warm up the interpreter and the connection
        router_cache.invalidate()
        router_decision.decide(user_id, kind)
    connection.ensure_connection()
    gc.collect()
    gc.freeze()

    cold, warm, chain_lengths, queries = [], [], [], [0]

    def count_query(execute, sql, params, many, context):  # warm decisions should make none
        queries[0] += 1
        return execute(sql, params, many, context)

    for user_id, kind in zip(sample, types, strict=True):
        router_cache.invalidate()  # everything: this person's rows and the connector states
        t0 = time.perf_counter()
        decision = router_decision.decide(user_id, kind)
        cold.append(time.perf_counter() - t0)
        chain_lengths.append(len(decision.chain))
    pairs = list(zip(sample, types, strict=True))
    router_cache.invalidate()
    for start in range(0, len(pairs), args.chunk):
        chunk = pairs[start:start + args.chunk]
        for user_id, kind in chunk:
            router_decision.decide(user_id, kind)
        with connection.execute_wrapper(count_query):
            for user_id, kind in chunk:
                t0 = time.perf_counter()
                router_decision.decide(user_id, kind)
                warm.append(time.perf_counter() - t0)

    cold_s, warm_s = summary_ms(cold), summary_ms(warm)
    emit(bench="routing", phase="cold", decisions=len(cold), **cold_s,
         mean_chain=round(sum(chain_lengths) / len(chain_lengths), 2))
    emit(bench="routing", phase="warm", decisions=len(warm), **warm_s, queries=queries[0],
         goal="p99 <= 2 ms", meets_goal=warm_s["p99_ms"] <= 2, cold_meets_goal=cold_s["p99_ms"] <= 2)


if __name__ == "__main__":
    main()
