"""Where attachment bytes live: a local folder under var/ by default, an S3-compatible bucket when one is named."""
from brain_connectors.settings.environment import BASE_DIR, env

# --- Attachment storage (STORAGES["attachments"], connectors/delivery/attachment_store.py) ------------------------
# The bytes are Fernet-encrypted before they reach either store, so the bucket never holds a readable file.
ATTACHMENTS_DIR = env.str("ATTACHMENTS_DIR", default=str(BASE_DIR / "var" / "attachments"))
# Set the bucket to store files in S3 or anything speaking its API (MinIO, Cloudflare R2, Ceph, ...) through
# django-storages. ENDPOINT_URL names a non-AWS store; without the key pair, boto3 finds credentials itself
# (AWS_* variables, an instance role). The check connectors.E007 names what is missing.
ATTACHMENTS_S3_BUCKET = env.str("ATTACHMENTS_S3_BUCKET", default="")
ATTACHMENTS_S3_ENDPOINT_URL = env.str("ATTACHMENTS_S3_ENDPOINT_URL", default="")
ATTACHMENTS_S3_REGION = env.str("ATTACHMENTS_S3_REGION", default="")
ATTACHMENTS_S3_ACCESS_KEY = env.str("ATTACHMENTS_S3_ACCESS_KEY", default="")
ATTACHMENTS_S3_SECRET_KEY = env.str("ATTACHMENTS_S3_SECRET_KEY", default="")
ATTACHMENTS_S3_PREFIX = env.str("ATTACHMENTS_S3_PREFIX", default="attachments")
# "path" for stores that serve no bucket sub-domains (MinIO usually); empty lets boto3 choose.
ATTACHMENTS_S3_ADDRESSING_STYLE = env.str("ATTACHMENTS_S3_ADDRESSING_STYLE", default="")


def attachments_storage(*, local_dir, bucket="", endpoint_url="", region="", access_key="", secret_key="",
                        prefix="attachments", addressing_style="") -> dict:
    """The STORAGES["attachments"] entry: S3Storage when a bucket is named, else the local folder."""
    if not bucket:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": local_dir}}
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url or None,
            "region_name": region or None,
            # None: boto3's own credential chain. Django's error reports hide these (their names hold KEY).
            "access_key": access_key or None,
            "secret_key": secret_key or None,
            "location": prefix.strip("/"),
            "addressing_style": addressing_style or None,
            # Private objects, read through signed requests only; never replace a file under the same name
            # (rotate_keys writes the new copy beside the old one before switching the row).
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }


ATTACHMENTS_STORAGE = attachments_storage(
    local_dir=ATTACHMENTS_DIR, bucket=ATTACHMENTS_S3_BUCKET, endpoint_url=ATTACHMENTS_S3_ENDPOINT_URL,
    region=ATTACHMENTS_S3_REGION, access_key=ATTACHMENTS_S3_ACCESS_KEY, secret_key=ATTACHMENTS_S3_SECRET_KEY,
    prefix=ATTACHMENTS_S3_PREFIX, addressing_style=ATTACHMENTS_S3_ADDRESSING_STYLE,
)
