"""The admin site's name, and its "View site" link to the live dashboard."""

from django.contrib import admin

admin.site.site_header = "BRAIN Connectors"
admin.site.site_title = "BRAIN Connectors"
# Staff land on the live dashboard from every admin page's "View site" link.
admin.site.site_url = "/dashboard/"
