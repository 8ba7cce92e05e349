# Adds the object permission read_conversations (issue 14): reading other people's conversations
# on a connector is granted on its own, not implied by view, send or manage.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0004_events_subscriptions_health"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="connector",
            options={
                "ordering": ["id"],
                "permissions": [
                    ("send_via_connector", "Can send messages via this connector"),
                    ("manage_connector", "Can start, stop, test and configure this connector"),
                    ("admin_connector", "Can delete this connector, change its credentials and grant access to it"),
                    ("read_conversations", "Can read other people's conversations on this connector"),
                ],
            },
        ),
    ]
