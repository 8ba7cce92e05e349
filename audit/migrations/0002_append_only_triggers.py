from django.db import migrations

from audit import triggers


def install(apps, schema_editor):
    # The triggers of this migration only: 0003 adds the TRUNCATE and REPLACE ones.
    triggers.install(schema_editor.connection, names=triggers.FIRST_TRIGGERS, sealing=False)


def remove(apps, schema_editor):
    triggers.remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
