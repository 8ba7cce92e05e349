"""Conversation memory on PostgreSQL: `get_context` and blind-index search over N stored messages,
and the rate of `rotate_keys` on message content. Goals: get_context p99 < 5 ms, search p95 < 50 ms.

    .venv/bin/python bench/conversations.py                       # 1,000,000 messages (the goal's size)
    .venv/bin/python bench/conversations.py --messages 200000     # quicker

Seeding writes straight to the tables with COPY, in batches of 10,000 messages: the content is
encrypted with the Fernet key exactly as `EncryptedTextField.get_prep_value` does, and the index
rows are `conversations.search` digests under SEARCH_INDEX_KEY (each vocabulary word's digest is
computed once, as the words repeat). The search-token indexes are dropped during the load and rebuilt
after it, and the table is vacuumed (as autovacuum does); then the newest --unvacuumed messages
are loaded into the indexed tables and left unvacuumed, the state search meets just before
autovacuum runs (migration 0002 sets how often). Messages are spread over --conversations
conversations on 4 locmem connectors; their words come from a vocabulary of --vocabulary synthetic words drawn with a Zipf-like law
(weight 1/rank), so queries have realistic selectivity: a common word matches many messages, a
rare one a few.

Measured, through the real service functions:
- `get_context(conversation, limit=10)` for --contexts random conversations (p50/p99);
- `conversations.services.search(system, q)` for --searches queries of 1-3 words taken from random
  stored messages (so every query has at least one hit), AND-matched (p50/p95); this includes its
  audit row, as in production;
- `rotate_keys`: its per-column core (`Command._rotate_column`, the compare-and-set batches of 500)
  run on a copy of the first --rotate-rows message rows (a table of its own), with FERNET_KEYS set
  to new,old; printed in rows per second. Rotating the whole table takes about N / rate seconds.
"""
import argparse
import gc
import io
import itertools
import os
import random
import sys
import time

from common import ROOT, emit, fresh_database, percentile, prepare_environment, setup_django, summary_ms

# This script's directory must not shadow the `conversations` app (the file is bench/conversations.py).
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(ROOT / "bench")]

DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/brain_bench_conversations"
BATCH = 10_000
CONNECTORS = 4
LETTERS = "bcdfghjklmnpqrstvwxz"
VOWELS = "aeiou"


def vocabulary(size, rng):
    """`size` distinct pronounceable words that the stemmer leaves as they are."""
    words = set()
    while len(words) < size:
        n = rng.randint(2, 4)
        word = "".join(rng.choice(LETTERS) + rng.choice(VOWELS) for _ in range(n)) + rng.choice(LETTERS[:10])
        if word[-1] not in "sdg":
            words.add(word)
    return sorted(words)


def seed(args, rng):
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from connectors import services
    from connectors.fields import get_primary_fernet
    from connectors.permissions import Principal
    from conversations import search
    from conversations.models import Conversation, Message, SearchToken

    system = Principal.system_actor("bench", via="bench")
    for i in range(CONNECTORS):
        services.register_connector(system, id=f"bench_{i}", kind="locmem", display_name=f"Bench {i}")
    now = timezone.now()
    Conversation.objects.bulk_create(
        [Conversation(connector_id=f"bench_{i % CONNECTORS}", address=f"+1555{i:07d}", last_message_at=now)
         for i in range(args.conversations)], batch_size=5000,
    )
    conversation_ids = list(Conversation.objects.values_list("pk", flat=True))

    words = vocabulary(args.vocabulary, rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    cum_weights = list(itertools.accumulate(weights))
    key = settings.SEARCH_INDEX_KEY
    kid = search.key_id(key)
    # Every vocabulary word is one token (`search.tokenize`); its digest is computed once.
    digest_of = {}
    for word in words:
        (token,) = search.tokenize(word)
        digest_of[word] = search.digest(token, key)
    fernet = get_primary_fernet()
    msg_table, tok_table = Message._meta.db_table, SearchToken._meta.db_table
    with connection.cursor() as cursor:  # the index rows load faster without their indexes; rebuilt below
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s",
            [tok_table, "%_pkey"],
        )
        token_indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'",
            [tok_table],
        )
        token_constraints = cursor.fetchall()
        for name, _ in token_constraints:
            cursor.execute(f'ALTER TABLE {tok_table} DROP CONSTRAINT "{name}"')
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s",
                       [tok_table, "%_pkey"])
        remaining = {r[0] for r in cursor.fetchall()}
        token_indexes = [(n, d) for n, d in token_indexes if n in remaining]
        for name, _ in token_indexes:
            cursor.execute(f'DROP INDEX "{name}"')

    started = time.perf_counter()
    base = now.timestamp() - args.messages  # one message a second, oldest first
    raw = connection.connection  # psycopg 3
    roles = ["user", "assistant"]
    token_ids = itertools.count(1)

    def load(start, stop):
        """COPY messages start+1..stop and their index rows."""
        msg_buf, tok_buf = io.StringIO(), io.StringIO()
        for n in range(start, stop):
            mid = n + 1
            chosen = rng.choices(words, cum_weights=cum_weights, k=rng.randint(6, 20))
            text = " ".join(chosen)
            content = fernet.encrypt(text.encode()).decode()
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base + n)) + "+00"
            msg_buf.write(f"{mid}\t{rng.choice(conversation_ids)}\t{roles[n % 2]}\t{content}\t{created}\t\t{{}}\n")
            for d in {digest_of[word] for word in chosen}:
                tok_buf.write(f"{next(token_ids)}\t{mid}\t{d}\t{kid}\n")
        with raw.cursor() as cur:
            with cur.copy(f"COPY {msg_table} (id, conversation_id, role, content, created_at, "
                          "platform_message_id, metadata) FROM STDIN") as copy:
                copy.write(msg_buf.getvalue())
            with cur.copy(f"COPY {tok_table} (id, message_id, digest, key_id) FROM STDIN") as copy:
                copy.write(tok_buf.getvalue())
        raw.commit() if not connection.in_atomic_block else None

    bulk = args.messages - args.unvacuumed
    for start in range(0, bulk, BATCH):
        stop = min(bulk, start + BATCH)
        load(start, stop)
        if (stop // BATCH) % 10 == 0 or stop == bulk:
            elapsed = time.perf_counter() - started
            emit(bench="conversations", phase="seeding", messages=stop, rate_per_s=round(stop / elapsed))
    loaded = time.perf_counter() - started
    with connection.cursor() as cursor:
        for name, definition in token_constraints:
            cursor.execute(f'ALTER TABLE {tok_table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in token_indexes:
            cursor.execute(definition)
        for table in (msg_table, tok_table):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        cursor.execute(f"UPDATE {Conversation._meta.db_table} c SET last_message_at = m.t FROM "
                       f"(SELECT conversation_id, MAX(created_at) t FROM {msg_table} GROUP BY conversation_id) m "
                       "WHERE m.conversation_id = c.id")
        # VACUUM as autovacuum does on a live table: it sets the visibility map that lets the
        # search-token index be read without visiting the table (index-only scans).
        cursor.execute("VACUUM ANALYZE")
    # The newest messages arrive after the last autovacuum, as in production, and search reads them
    # first. Migration 0002 vacuums the index table every 10,000 rows + 1% of it: at 1,000,000
    # messages (12 index rows each) that is about 10,800 messages, the default --unvacuumed.
    for start in range(bulk, args.messages, BATCH):
        load(start, min(args.messages, start + BATCH))
    with connection.cursor() as cursor:
        for table in (msg_table, tok_table):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        cursor.execute(f"ANALYZE {msg_table}, {tok_table}")
    return conversation_ids, words, weights, loaded, next(token_ids) - 1, time.perf_counter() - started


def measure_rotation(rows):
    from cryptography.fernet import Fernet
    from django.conf import settings
    from django.db import connection, models

    from connectors.fields import EncryptedTextField, get_fernet, get_primary_fernet
    from connectors.management.commands.rotate_keys import Command
    from conversations.models import Message

    class RotationSample(models.Model):
        content = EncryptedTextField()

        class Meta:
            app_label = "conversations"
            managed = False
            db_table = "bench_rotation_sample"

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE bench_rotation_sample AS SELECT id, content FROM {Message._meta.db_table} "
                       f"ORDER BY id LIMIT {int(rows)}")
        cursor.execute("ALTER TABLE bench_rotation_sample ADD PRIMARY KEY (id)")
        cursor.execute("ANALYZE bench_rotation_sample")
    settings.FERNET_KEYS = [Fernet.generate_key().decode(), *settings.FERNET_KEYS]
    command = Command(stdout=io.StringIO(), stderr=io.StringIO())
    field = RotationSample._meta.get_field("content")
    t0 = time.perf_counter()
    rotated, current = command._rotate_column(RotationSample, field, get_primary_fernet(), get_fernet(), 500, "sample")
    seconds = time.perf_counter() - t0
    return rotated, current, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--contexts", type=int, default=1000)
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--rotate-rows", type=int, default=50_000)
    parser.add_argument("--unvacuumed", type=int, default=10_000,
                        help="newest messages loaded after the VACUUM, as autovacuum leaves them")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    env = prepare_environment(database_url=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE))
    fresh_database(env["DATABASE_URL"])
    setup_django()
    from connectors.permissions import Principal
    from conversations import services
    from conversations.models import Conversation, Message

    rng = random.Random(args.seed)
    conversation_ids, words, weights, load_s, tokens, seed_s = seed(args, rng)
    emit(bench="conversations", phase="seed", messages=args.messages, conversations=len(conversation_ids),
         index_rows=tokens, load_seconds=round(load_s, 1), total_seconds=round(seed_s, 1),
         rate_per_s=round((args.messages - args.unvacuumed) / load_s))

    conversations = list(Conversation.objects.filter(pk__in=rng.sample(conversation_ids, args.contexts)))
    for c in conversations[:50]:
        services.get_context(c, limit=10)
    gc.collect()
    gc.freeze()
    timings, sizes = [], []
    for c in conversations:
        t0 = time.perf_counter()
        context = services.get_context(c, limit=10)
        timings.append(time.perf_counter() - t0)
        sizes.append(len(context))
    s = summary_ms(timings)
    emit(bench="conversations", phase="get_context", calls=len(timings), limit=10, mean_messages=round(sum(sizes) / len(sizes), 1),
         **s, goal="p99 < 5 ms", meets_goal=s["p99_ms"] < 5)

    system = Principal.system_actor("bench", via="bench")
    top = Message.objects.order_by("id").values_list("id", flat=True).last()
    queries = []
    while len(queries) < args.searches:
        message = Message.objects.filter(pk=rng.randint(1, top)).first()
        if message is None:
            continue
        present = list(dict.fromkeys(message.content.split()))
        queries.append(" ".join(rng.sample(present, min(len(present), rng.randint(1, 3)))))
    for q in queries[:20]:
        services.search(system, q)
    timings, hits = [], []
    for q in queries:
        t0 = time.perf_counter()
        results = services.search(system, q)
        timings.append(time.perf_counter() - t0)
        hits.append(len(results))
    s = summary_ms(timings)
    p95 = round(percentile(timings, 95) * 1000, 2)
    by_words = {}
    for q, t in zip(queries, timings, strict=True):
        by_words.setdefault(len(q.split()), []).append(t)
    emit(bench="conversations", phase="search", queries=len(timings), p95_ms=p95, **s,
         p95_ms_by_words={k: round(percentile(v, 95) * 1000, 2) for k, v in sorted(by_words.items())},
         queries_with_hits=sum(1 for h in hits if h), mean_results=round(sum(hits) / len(hits), 1),
         goal="p95 < 50 ms", meets_goal=p95 < 50)

    rows = min(args.rotate_rows, args.messages)
    rotated, current, seconds = measure_rotation(rows)
    emit(bench="conversations", phase="rotate_keys", rows=rows, rotated=rotated, already_current=current,
         seconds=round(seconds, 1), rows_per_s=round(rotated / seconds),
         full_table_estimate_s=round(args.messages / (rotated / seconds)))


if __name__ == "__main__":
    main()
