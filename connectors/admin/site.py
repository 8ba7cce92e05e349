"""The admin site's name, and its "View site" link to the front door `/`."""

from django.contrib import admin

admin.site.site_header = "BRAIN Connectors"
admin.site.site_title = "BRAIN Connectors"
# "View site" leads to the front door, which links the dashboard, /preferences/ and the API docs.
admin.site.site_url = "/"
