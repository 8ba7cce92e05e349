"""Vacuum the search-token table after far fewer inserts than PostgreSQL's default (20% of the
table). Search reads the (digest, message) index without visiting the table only where the
visibility map says a page is all-visible, and it walks the newest messages first, which are the
ones a default autovacuum has not reached yet: at 1,000,000 messages an unvacuumed table made
search p95 54 ms instead of 11 ms (bench/conversations.py). With these settings the unvacuumed
tail stays near 10,000 index rows plus 1% of the table. SQLite has no such thing: nothing to do."""
from django.db import migrations

SETTINGS = "autovacuum_vacuum_insert_threshold = 10000, autovacuum_vacuum_insert_scale_factor = 0.01"


def set_autovacuum(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(apps.get_model("conversations", "SearchToken")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET ({SETTINGS})")


def reset_autovacuum(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(apps.get_model("conversations", "SearchToken")._meta.db_table)
        schema_editor.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_insert_threshold, autovacuum_vacuum_insert_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [("conversations", "0001_memory_search_analysis")]

    operations = [migrations.RunPython(set_autovacuum, reset_autovacuum)]
