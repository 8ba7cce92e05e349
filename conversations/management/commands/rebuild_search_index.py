"""Rebuild the blind search index under the current SEARCH_INDEX_KEY (after the key changed).

Messages are processed in batches in id order. Each batch is one transaction: decrypt the
content, compute the digests under the new key, insert the new `SearchToken` rows (key_id = the
new key's id) and delete that batch's rows of any other key id. Progress is kept in `IndexState`
(keyed by the new key's id, updated in the same transaction), so a stopped run resumes where it
ended; `--restart` starts over. Messages stored meanwhile are indexed under the new key by memory's
consumer (conversations.recording), so the rebuild can run while the service does.

During a rebuild, messages not yet reached are only in the index under the old key: set
SEARCH_INDEX_PREVIOUS_KEY to the old key until the rebuild completes if queries should hash
under both keys (see README, "Rotating the search index key").
"""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from audit import services as audit
from connectors.fields import DecryptionError
from conversations import search
from conversations.models import IndexState, Message, SearchToken

PRINCIPAL = "system:rebuild_search_index"


class Command(BaseCommand):
    help = "Rebuild the search index under the current SEARCH_INDEX_KEY (resumable, online)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--max-batches", type=int, default=None,
                            help="stop after this many batches (the next run resumes)")
        parser.add_argument("--restart", action="store_true", help="start over from the first message")

    def handle(self, *args, batch_size, max_batches, restart, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if max_batches is not None and max_batches < 1:
            raise CommandError("--max-batches must be at least 1")
        if not settings.SEARCH_INDEX_KEY:
            raise CommandError("SEARCH_INDEX_KEY is not set: set it to the new index key, then run rebuild_search_index.")

        key = settings.SEARCH_INDEX_KEY
        kid = search.key_id(key)
        state, _ = IndexState.objects.get_or_create(key_fingerprint=kid)
        if restart:
            state.last_message_id, state.completed_at = 0, None
            state.save(update_fields=["last_message_id", "completed_at"])
        start_id = state.last_message_id
        total = Message.objects.filter(pk__gt=start_id).count()
        done = batches = written = removed = 0
        complete = False
        with tqdm(total=total, desc="search index", unit="msg", file=self.stderr._out, disable=None) as bar:
            while True:
                if max_batches is not None and batches >= max_batches:
                    break
                n, added, dropped, last = self._batch(search, key, kid, state.pk, batch_size)
                if not n:
                    complete = True
                    break
                done, written, removed, batches = done + n, written + added, removed + dropped, batches + 1
                bar.update(n)
        with transaction.atomic():
            state = IndexState.objects.select_for_update().get(pk=state.pk)
            if complete and state.completed_at is None:
                state.completed_at = timezone.now()
                state.save(update_fields=["completed_at"])
            audit.record(
                "conversations.index.rebuild", principal=PRINCIPAL, target_type="search_index", target_id=kid,
                details={"messages": done, "rows_written": written, "rows_removed": removed, "from_message_id": start_id,
                         "last_message_id": state.last_message_id, "complete": complete, "restart": restart},
            )
        if complete:
            self.stdout.write(self.style.SUCCESS(
                f"Search index rebuilt under key {kid}: {done} messages, {written} rows written, {removed} old rows removed."
            ))
        else:
            self.stdout.write(
                f"Stopped after {batches} batches at message {state.last_message_id} ({done} messages); "
                "run rebuild_search_index again to continue."
            )

    @staticmethod
    def _batch(search, key, kid, state_pk, batch_size):
        """One batch in one transaction: (messages, rows written, rows removed, last id)."""
        with transaction.atomic():
            state = IndexState.objects.select_for_update().get(pk=state_pk)
            ids = list(
                Message.objects.filter(pk__gt=state.last_message_id).order_by("pk").values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return 0, 0, 0, state.last_message_id
            rows = []
            try:
                for message_id, content in Message.objects.filter(pk__in=ids).values_list("pk", "content"):
                    for value in search.digests_for(content or "", key):
                        rows.append(SearchToken(message_id=message_id, digest=value, key_id=kid))
            except DecryptionError:
                raise CommandError(
                    "A message in this batch cannot be decrypted with FERNET_KEYS: add the key it was written with "
                    "and run rebuild_search_index again (batches done so far stay done)."
                ) from None
            removed, _ = SearchToken.objects.filter(message_id__in=ids).exclude(key_id=kid).delete()
            SearchToken.objects.bulk_create(rows, batch_size=5000, ignore_conflicts=True)
            state.last_message_id = ids[-1]
            state.save(update_fields=["last_message_id"])
            return len(ids), len(rows), removed, ids[-1]

