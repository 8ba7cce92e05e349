"""Django admin for staff, thin over the services; one module per model family.

Every change goes through the services, so the admin checks the same object permissions and writes the same
audit rows as the API.

Django's admin autodiscovery imports this package only: each module below registers its ModelAdmins
when imported (`site` names the admin site), so every one of them is imported here.
"""

from connectors.admin import (
    alerts,  # noqa: F401  (registers AlertRecipient)
    connectors,  # noqa: F401  (registers Connector)
    records,  # noqa: F401  (registers Delivery, InboundMessage)
    site,  # noqa: F401  (the admin site's title and "View site" link)
    subscriptions,  # noqa: F401  (registers EventSubscription, EventDelivery)
    tokens,  # noqa: F401  (registers ApiToken)
)
