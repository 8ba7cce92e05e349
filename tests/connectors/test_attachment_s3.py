"""Attachment bytes in an S3-compatible bucket (django-storages' S3Storage), against moto's S3 server on 127.0.0.1:
stored encrypted, read back, re-encrypted by rotate_keys, deleted with their row; ATTACHMENTS_S3_* select the
backend, and the system check names what is missing."""
import base64
import json
import subprocess
import sys
from io import StringIO

import boto3
import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from moto.server import ThreadedMotoServer

from brain_connectors.settings.storage import attachments_storage
from connectors import services
from connectors.checks import check_attachment_storage
from connectors.delivery import attachment_store
from connectors.models import Attachment, Delivery
from connectors.platforms import locmem
from tests.conftest import BASE_DIR, SYSTEM, free_port

BUCKET = "brain-attachments"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
# moto accepts any key pair; these only have to be consistent between the test's client and the storage.
ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret-key-for-moto-only"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, settings):
    """A fresh bucket, and STORAGES["attachments"] pointed at it exactly as ATTACHMENTS_S3_* would configure it."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "attachments": attachments_storage(
        local_dir="/nonexistent", bucket=BUCKET, endpoint_url=s3_endpoint, region="us-east-1", access_key=ACCESS_KEY,
        secret_key=SECRET_KEY, prefix="attachments")}
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _objects(client):
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _b64(data):
    return base64.b64encode(data).decode()


@pytest.mark.django_db(transaction=True)
def test_a_sent_file_lives_encrypted_in_the_bucket_is_rotated_there_and_goes_with_its_row(make_connector, bucket,
                                                                                        settings):
    make_connector()
    delivery, _ = services.send_message(SYSTEM, "locmem_main", "ada", "Your report", attachments=[
        {"data": _b64(PNG), "file_name": "chart.png"}, {"data": _b64(PDF), "file_name": "report.pdf"}])
    rows = list(Attachment.objects.filter(delivery=delivery).order_by("position"))
    stored = _objects(bucket)
    assert sorted(stored) == sorted(f"attachments/{row.storage_name}" for row in rows)
    for row, plain in zip(rows, (PNG, PDF), strict=True):
        token = stored[f"attachments/{row.storage_name}"]
        assert plain not in token and Fernet(settings.FERNET_KEYS[0]).decrypt(token) == plain  # encrypted at rest
        assert attachment_store.read(row.storage_name) == plain
    [(_, message)] = locmem.outbox  # the platform got the bytes, read back from the bucket
    assert [a.read() for a in message.attachments] == [PNG, PDF]

    old, new = settings.FERNET_KEYS[0], Fernet.generate_key().decode()
    settings.FERNET_KEYS = [new, old]
    out = StringIO()
    call_command("rotate_keys", stdout=out, stderr=StringIO())
    assert "attachment files: 2 re-encrypted, 0 already under the first key" in out.getvalue()
    rows = list(Attachment.objects.filter(delivery=delivery).order_by("position"))
    stored = _objects(bucket)
    assert sorted(stored) == sorted(f"attachments/{row.storage_name}" for row in rows)  # the old copies are gone
    for row, plain in zip(rows, (PNG, PDF), strict=True):
        with pytest.raises(InvalidToken):
            Fernet(old).decrypt(stored[f"attachments/{row.storage_name}"])
        assert Fernet(new).decrypt(stored[f"attachments/{row.storage_name}"]) == plain
    settings.FERNET_KEYS = [new]
    assert [attachment_store.read(row.storage_name) for row in rows] == [PNG, PDF]

    Delivery.objects.filter(pk=delivery.pk).delete()  # the rows cascade; their files follow after commit
    assert not Attachment.objects.exists() and _objects(bucket) == {}


@pytest.mark.django_db(transaction=True)
def test_an_upload_in_the_bucket_is_swept_when_it_expires(bucket, settings, make_connector, make_user, grant):
    from connectors.delivery import outbound_attachments, sweeper
    from connectors.permissions import Principal

    user = make_user("uploader")
    grant(user, "send_via_connector", make_connector())
    row = outbound_attachments.upload(Principal.for_user(user, via="test"), PDF, file_name="notes.pdf")
    assert list(_objects(bucket)) == [f"attachments/{row.storage_name}"]
    assert sweeper.sweep()["uploads_expired"] == 0
    settings.ATTACHMENT_UPLOAD_TTL = 0
    assert sweeper.sweep()["uploads_expired"] == 1
    assert not Attachment.objects.exists() and _objects(bucket) == {}


def test_the_bucket_setting_selects_s3_storage_with_private_signed_objects():
    env = {"ATTACHMENTS_S3_BUCKET": "files", "ATTACHMENTS_S3_ENDPOINT_URL": "https://minio.example.org:9000",
           "ATTACHMENTS_S3_REGION": "eu-west-1", "ATTACHMENTS_S3_ACCESS_KEY": "AKIDEXAMPLE",
           "ATTACHMENTS_S3_SECRET_KEY": "not-a-real-secret", "ATTACHMENTS_S3_PREFIX": "/brain/files/"}
    code = ("import json; from brain_connectors.settings import storage; "
            "print(json.dumps(storage.ATTACHMENTS_STORAGE))")
    base = {"PATH": "/usr/bin:/bin", "BRAIN_READ_DOTENV": "0"}
    chosen = json.loads(subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=BASE_DIR,
                                       capture_output=True, text=True, check=True, timeout=60).stdout)
    assert chosen == {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": "files", "endpoint_url": "https://minio.example.org:9000", "region_name": "eu-west-1",
        "access_key": "AKIDEXAMPLE", "secret_key": "not-a-real-secret", "location": "brain/files",
        "addressing_style": None, "default_acl": None, "querystring_auth": True, "file_overwrite": False}}
    local = json.loads(subprocess.run([sys.executable, "-c", code], env={**base, "ATTACHMENTS_DIR": "/srv/files"},
                                      cwd=BASE_DIR, capture_output=True, text=True, check=True, timeout=60).stdout)
    assert local == {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": "/srv/files"}}


def test_the_check_names_what_an_s3_bucket_is_missing(settings, monkeypatch):
    settings.ATTACHMENTS_S3_BUCKET = ""
    assert check_attachment_storage() == []
    settings.ATTACHMENTS_S3_BUCKET = "files"
    settings.ATTACHMENTS_S3_ENDPOINT_URL, settings.ATTACHMENTS_S3_ACCESS_KEY = "", ""
    settings.ATTACHMENTS_S3_SECRET_KEY = ""
    assert check_attachment_storage() == []  # AWS itself, credentials from boto3's chain
    settings.ATTACHMENTS_S3_ENDPOINT_URL = "minio:9000"
    settings.ATTACHMENTS_S3_ACCESS_KEY = "AKIDEXAMPLE"
    messages = check_attachment_storage()
    assert [m.id for m in messages] == ["connectors.E008", "connectors.E009"]
    assert "ATTACHMENTS_S3_SECRET_KEY is not set" in messages[1].msg and "AKIDEXAMPLE" not in str(messages)
    settings.ATTACHMENTS_S3_ENDPOINT_URL, settings.ATTACHMENTS_S3_ACCESS_KEY = "http://127.0.0.1:9000", ""
    assert [m.id for m in check_attachment_storage()] == ["connectors.W002"]
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if django-storages[s3] were not installed
    settings.ATTACHMENTS_S3_ACCESS_KEY, settings.ATTACHMENTS_S3_SECRET_KEY = "AKIDEXAMPLE", "s3cr3t"
    [missing] = check_attachment_storage()
    assert missing.id == "connectors.E007" and "boto3" in missing.msg
