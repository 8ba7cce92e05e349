"""Re-encrypt every EncryptedTextField value, and every stored attachment file, under the first key in FERNET_KEYS.

Safe while the service runs: each row is rewritten with a compare-and-set, so a value the
service changed meanwhile (already written under the new key) is left alone. Resumable: a value
that the first key already decrypts is skipped, so a rerun continues where a stopped run ended.
"""
from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from tqdm import tqdm

from audit import services as audit
from brain_connectors.shared.errors import DecryptionError
from connectors.delivery import attachment_store
from connectors.fields import encrypted_fields, get_fernet, get_primary_fernet
from connectors.models import Attachment


class Command(BaseCommand):
    help = "Re-encrypt all encrypted fields under the first key of FERNET_KEYS (resumable, online)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        primary, every_key = get_primary_fernet(), get_fernet()
        summary = {}
        for model, field in encrypted_fields():
            label = f"{model._meta.label}.{field.name}"
            rotated, current = self._rotate_column(model, field, primary, every_key, batch_size, label)
            summary[label] = {"rotated": rotated, "already_current": current}
            self.stdout.write(f"{label}: {rotated} re-encrypted, {current} already under the first key")
        try:
            rotated, current = attachment_store.rotate(Attachment.objects.all())
        except DecryptionError as exc:
            raise CommandError(f"{exc} Add the key it was written with to FERNET_KEYS and run rotate_keys again.")
        summary["attachment files"] = {"rotated": rotated, "already_current": current}
        self.stdout.write(f"attachment files: {rotated} re-encrypted, {current} already under the first key")
        audit.record(
            "keys.rotate", principal="system:rotate_keys", target_type="encryption", details={"via": "command", "fields": summary}
        )
        self.stdout.write(self.style.SUCCESS("Key rotation complete."))

    def _rotate_column(self, model, field, primary, every_key, batch_size, label):
        q = connection.ops.quote_name
        table, pk, col = q(model._meta.db_table), q(model._meta.pk.column), q(field.column)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} IS NOT NULL")  # nosec B608  # quoted model metadata
            total = cursor.fetchone()[0]
        rotated = current = 0
        last_pk = None
        with tqdm(total=total, desc=label, unit="rows", file=self.stderr._out, disable=None) as bar:
            while True:
                where = f"{col} IS NOT NULL" + (f" AND {pk} > %s" if last_pk is not None else "")
                params = [last_pk] if last_pk is not None else []
                with connection.cursor() as cursor:
                    cursor.execute(f"SELECT {pk}, {col} FROM {table} WHERE {where} ORDER BY {pk} LIMIT {batch_size}", params)  # nosec B608  # quoted model names; batch_size is an int from argparse; last_pk is a parameter
                    rows = cursor.fetchall()
                if not rows:
                    break
                updates = []
                for row_pk, token in rows:
                    try:
                        primary.decrypt(token.encode())
                        current += 1
                        continue
                    except InvalidToken:
                        pass
                    try:
                        updates.append((every_key.rotate(token.encode()).decode(), row_pk, token))
                    except InvalidToken:
                        # Keep the rows of this batch re-encrypted before the bad one: "done stays done".
                        self._write(table, pk, col, updates)
                        raise CommandError(
                            f"{label} row {row_pk}: no key in FERNET_KEYS decrypts it. Add the key it was written "
                            "with to FERNET_KEYS and run rotate_keys again; rows done so far stay done."
                        )
                rotated += self._write(table, pk, col, updates)
                last_pk = rows[-1][0]
                bar.update(len(rows))
        return rotated, current

    @staticmethod
    def _write(table, pk, col, updates):
        """Compare-and-set each (new_token, pk, old_token); returns how many rows changed."""
        written = 0
        with transaction.atomic(), connection.cursor() as cursor:
            for new_token, row_pk, old_token in updates:
                cursor.execute(
                    f"UPDATE {table} SET {col} = %s WHERE {pk} = %s AND {col} = %s", [new_token, row_pk, old_token]  # nosec B608  # quoted model names, values are parameters
                )
                written += cursor.rowcount
        return written
