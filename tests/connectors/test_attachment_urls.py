"""Signed attachment URLs: BRAIN's payload carries one per stored file, and GET /attachments/<id>/ with it (or with a
request BRAIN signs) gives the decrypted bytes, through Django's test client. A voice note and a document arrive
through the real Telegram SDK against the fake Bot API first (the fixtures of test_attachments)."""
import json
import time
import uuid
from urllib.parse import urlsplit

import pytest
from django.test import Client

from audit.models import AuditEvent
from brain_connectors.shared import signing
from connectors.delivery import attachment_urls
from connectors.models import Attachment
from tests.connectors import test_attachments as telegram_attachments
from tests.connectors.test_attachments import DOCUMENT_ID, OGG, PDF, VOICE_ID, fixture

BASE = "https://brain.example.org"

# The Telegram bot, fake Bot API and per-test attachment storage of test_attachments, shared.
attachment_dir, bot, fake = telegram_attachments.attachment_dir, telegram_attachments.bot, telegram_attachments.fake


@pytest.fixture
def voice(bot, fake):
    """A stored voice note (EchoBrain answered it); returns its Attachment row."""
    fake.add_file(VOICE_ID, OGG, file_path="voice/file_3.oga")
    inbound = bot(fixture("message_voice"))
    row = Attachment.objects.get(inbound=inbound)
    assert row.status == "stored"
    return row


def get(url, **headers):
    parts = urlsplit(url)
    return Client().get(f"{parts.path}?{parts.query}" if parts.query else parts.path, **headers)


def forbidden(response):
    return response.status_code == 403 and response.json() == {
        "error": {"code": "forbidden", "message": "This download is not authorised.", "details": {}}}


@pytest.mark.django_db(transaction=True)
def test_http_brain_gets_a_signed_url_and_fetches_the_bytes_with_it(bot, fake, settings):
    inbound, request = telegram_attachments.document_through_http_brain(bot, fake, settings)
    [entry] = request.json["message"]["attachments"]
    row = Attachment.objects.get(inbound=inbound)
    url = urlsplit(entry["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{BASE}/attachments/{row.id}/"
    query = dict(pair.split("=") for pair in url.query.split("&"))
    assert 0 < int(query["expires"]) - time.time() <= settings.ATTACHMENT_URL_TTL
    response = get(entry["url"])
    assert response.status_code == 200 and response.content == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == "attachment; filename*=UTF-8''invoice-2026-11.pdf"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, no-store"
    [audit] = AuditEvent.objects.filter(action="attachment.download")
    assert audit.result == "success" and audit.target_id == inbound.connector_id
    assert {k: audit.details[k] for k in ("attachment_id", "size", "via")} == {
        "attachment_id": str(row.id), "size": len(PDF), "via": "signed_url"}
    assert "invoice" not in json.dumps(audit.details)  # the file name is what the person wrote


@pytest.mark.django_db(transaction=True)
def test_a_voice_note_is_served_with_its_type_and_a_made_up_name(voice):
    response = get(attachment_urls.url_for(voice.id))
    assert response.status_code == 200 and response.content == OGG
    assert response["Content-Type"] == voice.mime_type == "audio/ogg"
    assert response["Content-Disposition"] == f"attachment; filename*=UTF-8''voice-{voice.id}"  # it had no name


@pytest.mark.django_db(transaction=True)
def test_a_hostile_file_name_is_sanitised_and_encoded(voice):
    Attachment.objects.filter(pk=voice.pk).update(file_name="../../etc/pass\r\nwd \"ü\";.ogg")
    voice.refresh_from_db()
    response = get(attachment_urls.url_for(voice.id))
    # Path separators and control characters become "_", leading dots go, the rest is percent-encoded (RFC 5987).
    assert response["Content-Disposition"] == "attachment; filename*=UTF-8''_.._etc_pass_wd%20%22%C3%BC%22%3B.ogg"


@pytest.mark.django_db(transaction=True)
def test_an_expired_url_is_refused(voice, settings):
    stale = attachment_urls.url_for(voice.id, now=time.time() - settings.ATTACHMENT_URL_TTL - 1)
    assert forbidden(get(stale))
    assert not AuditEvent.objects.filter(action="attachment.download").exists()


@pytest.mark.django_db(transaction=True)
def test_a_tampered_url_is_refused(voice):
    url = attachment_urls.url_for(voice.id)
    path, query = url.split("?")
    params = dict(pair.split("=") for pair in query.split("&"))
    flipped = params["sig"][:-1] + ("0" if params["sig"][-1] != "0" else "1")
    assert forbidden(get(f"{path}?expires={params['expires']}&sig={flipped}"))
    assert forbidden(get(f"{path}?expires={int(params['expires']) + 3600}&sig={params['sig']}"))  # a longer life
    assert forbidden(get(f"{path}?expires=soon&sig={params['sig']}"))
    assert forbidden(get(path))  # no signature at all
    assert get(url).status_code == 200  # the untouched URL works


@pytest.mark.django_db(transaction=True)
def test_another_ids_signature_is_refused_the_same_whether_the_id_exists_or_not(voice, bot, fake):
    fake.add_file(DOCUMENT_ID, PDF, file_path="documents/file_7.pdf")
    other = Attachment.objects.get(inbound=bot(fixture("message_document")))
    query = attachment_urls.url_for(voice.id).split("?")[1]
    existing = get(f"/attachments/{other.id}/?{query}")
    missing = get(f"/attachments/{uuid.uuid4()}/?{query}")
    assert forbidden(existing) and forbidden(missing) and existing.content == missing.content


@pytest.mark.django_db(transaction=True)
def test_a_request_signed_with_the_brain_key_is_authorised_for_its_path_only(voice, settings):
    path = f"/attachments/{voice.id}/"

    def headers(secret, signed_path):
        return {f"HTTP_{k.upper().replace('-', '_')}": v
                for k, v in signing.signed_headers(secret, signed_path.encode()).items()}

    response = Client().get(path, **headers(settings.BRAIN_SIGNING_KEY, path))
    assert response.status_code == 200 and response.content == OGG
    assert AuditEvent.objects.get(action="attachment.download").details["via"] == "signed_request"
    assert forbidden(Client().get(path, **headers(settings.BRAIN_SIGNING_KEY, f"/attachments/{uuid.uuid4()}/")))
    assert forbidden(Client().get(path, **headers("whsec_" + "d3Jvbmcta2V5LXdyb25nLWtleQ==", path)))
    stale = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signing.signed_headers(
        settings.BRAIN_SIGNING_KEY, path.encode(), timestamp=time.time() - 3600).items()}
    assert forbidden(Client().get(path, **stale))


@pytest.mark.django_db(transaction=True)
def test_an_authorised_request_for_no_stored_file_gets_a_json_404(voice):
    for missing in (uuid.uuid4(), voice.id):
        if missing == voice.id:
            Attachment.objects.filter(pk=voice.pk).update(status="unavailable", error="gone")
        response = get(attachment_urls.url_for(missing))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "attachment_unavailable"


@pytest.mark.django_db(transaction=True)
def test_without_public_base_url_no_url_is_given_and_the_check_warns(voice, settings):
    settings.PUBLIC_BASE_URL = ""
    assert attachment_urls.url_for(voice.id) is None
    from connectors.delivery.attachments import for_brain

    [entry] = for_brain(voice.inbound)
    assert "url" not in entry and entry["status"] == "stored"
    settings.BRAIN_BACKEND, settings.BRAIN_URL = "connectors.delivery.brain.HttpBrain", "https://brain.invalid/"
    from connectors.checks import check_attachment_urls

    assert [m.id for m in check_attachment_urls()] == ["connectors.W001"]
    settings.PUBLIC_BASE_URL = BASE
    assert check_attachment_urls() == []


@pytest.mark.django_db
def test_only_get_is_served():
    assert Client().post(f"/attachments/{uuid.uuid4()}/").status_code == 405

