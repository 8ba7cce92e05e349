"""The keyed chain and the TRUNCATE / REPLACE triggers (issue 14).

Rows already in the log were hashed with plain SHA-256: they are marked `sha256` and still verify.
From now on record() writes HMAC rows, and verify_audit refuses an unkeyed row after a keyed one.

On SQLite, adding the column rebuilds the table, which drops its triggers: every trigger is
installed again after it (and the first ones again after undoing it).
"""
from django.db import migrations, models

from audit import triggers


def install_all(apps, schema_editor):
    triggers.install(schema_editor.connection, sealing=False)


def remove_added(apps, schema_editor):
    triggers.remove(schema_editor.connection, names=triggers.ADDED_IN_0003)


def reinstall_first(apps, schema_editor):
    triggers.install(schema_editor.connection, names=triggers.FIRST_TRIGGERS, sealing=False)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_triggers")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, reinstall_first),
        migrations.AddField(
            model_name="auditevent",
            name="algorithm",
            field=models.CharField(
                default="sha256",
                help_text="How `hash` was made: hmac-sha256:<key id>, or sha256 for rows from before the key.",
                max_length=40,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(install_all, remove_added),
    ]
