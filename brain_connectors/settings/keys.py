"""The secret keys: Django's, the encryption keys of stored secrets, the search index's and the signing key."""
from brain_connectors.settings.environment import env

# A placeholder keeps Django importable; checks.py refuses to start with it when DEBUG is off.
MISSING_SECRET_PLACEHOLDER = "missing-secret-key-set-the-SECRET_KEY-environment-variable"  # noqa: S105 (a marker, not a key)
SECRET_KEY = env.str("SECRET_KEY", default="") or MISSING_SECRET_PLACEHOLDER
FERNET_KEYS = [k.strip() for k in env.str("FERNET_KEYS", default="").split(",") if k.strip()]
SEARCH_INDEX_KEY = env.str("SEARCH_INDEX_KEY", default="")
# While `rebuild_search_index` moves the index to a new SEARCH_INDEX_KEY, the old key here keeps
# not-yet-rebuilt messages findable. Remove it once the rebuild has completed.
SEARCH_INDEX_PREVIOUS_KEY = env.str("SEARCH_INDEX_PREVIOUS_KEY", default="")
BRAIN_SIGNING_KEY = env.str("BRAIN_SIGNING_KEY", default="")
# The key of the signed attachment URLs handed to BRAIN (connectors/delivery/attachment_urls.py). Empty: derived
# from SECRET_KEY under a label of its own, so one secret fewer to set; set it to rotate those URLs independently.
ATTACHMENT_URL_KEY = env.str("ATTACHMENT_URL_KEY", default="")
