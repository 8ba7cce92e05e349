"""A location and a contact shared on WhatsApp, as Twilio posts them (signed form fields): the location becomes a
`location` attachment (coordinates, the place's name and address as caption) with nothing to fetch; the contact, a
vCard medium, becomes a `contact` fetched like a file, its card's text then kept for BRAIN."""
import pytest

from connectors.delivery.attachments import for_brain
from connectors.models import Attachment, Delivery, InboundMessage
from connectors.platforms.attachments import card_text
from connectors.platforms.twilio_common import inbound_message
from tests.connectors import twilio_support
from tests.connectors.twilio_support import fixture, post_twilio

pytestmark = pytest.mark.django_db(transaction=True)
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

CONTACT_MEDIA_SID = "ME1f2e3d4c5b6a79880706f5e4d3c2b1a0"  # the contact fixture's MediaUrl0
VCARD = (b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Lovelace;Augusta Ada;;;\r\nFN:Augusta Ada\r\n  Lovelace\r\n"
         b"TEL;type=CELL;waid=447700900456:+44 7700 900456\r\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQ\r\n"
         b" AAAQABAAD\r\nitem1.EMAIL;type=INTERNET:ada@example.org\r\nEND:VCARD\r\n")
CARD = ("BEGIN:VCARD\nVERSION:3.0\nN:Lovelace;Augusta Ada;;;\nFN:Augusta Ada Lovelace\n"
        "TEL;type=CELL;waid=447700900456:+44 7700 900456\nitem1.EMAIL;type=INTERNET:ada@example.org\nEND:VCARD")


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


def test_a_shared_place_is_a_location_with_its_name_and_address(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_location")).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.content == "" and inbound.brain_status == InboundMessage.BrainStatus.REPLIED
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.status, row.latitude, row.longitude) == ("location", "stored", 51.5007292, -0.1246254)
    assert row.caption == "Big Ben\nWestminster, London SW1A 0AA"
    assert twilio_fake.media_requests() == []  # nothing to fetch
    assert "media_types" not in inbound.metadata
    assert Delivery.objects.get().content == 'Echo: "" (0 context messages) [1 attachment: location 51.5007292,-0.1246254]'


def test_a_dropped_pin_has_no_caption_and_a_body_stays_the_text():
    params = fixture("whatsapp_inbound_location", Label=None, Address=None, Body="I am here")
    message = inbound_message(params)
    [place] = message.attachments
    assert message.content == "I am here" and (place.kind, place.caption) == ("location", "")


@pytest.mark.parametrize("latitude, longitude", [("91", "0"), ("0", "-180.5"), ("nan", "1"), ("north", "1"), ("", "")])
def test_unusable_coordinates_are_no_location(latitude, longitude):
    params = fixture("whatsapp_inbound_location", Latitude=latitude, Longitude=longitude, Body="see you")
    message = inbound_message(params)
    assert message.content == "see you" and message.attachments == ()


def test_a_shared_contact_is_fetched_and_its_card_reaches_brain(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    twilio_fake.add_media(CONTACT_MEDIA_SID, VCARD, "text/vcard")
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_contact")).status_code == 200
    inbound = InboundMessage.objects.get()
    row = Attachment.objects.get(inbound=inbound)
    assert (row.kind, row.status, row.mime_type, row.size) == ("contact", "stored", "text/vcard", len(VCARD))
    assert row.platform_ref == CARD  # the card's text, no longer the media URL
    assert [status for _, status in twilio_fake.media_requests()] == [307, 200]
    assert inbound.metadata["media_types"] == ["text/vcard"]
    [seen] = for_brain(inbound)
    assert seen["kind"] == "contact" and seen["contact"] == CARD
    assert inbound.brain_status == InboundMessage.BrainStatus.REPLIED


def test_a_contact_that_cannot_be_fetched_gives_brain_no_media_reference(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")  # no media added: the fake answers 404
    assert post_twilio(client, "/webhooks/twilio/wa_in/", fixture("whatsapp_inbound_contact")).status_code == 200
    inbound = InboundMessage.objects.get()
    [seen] = for_brain(inbound)
    assert seen["kind"] == "contact" and seen["status"] == "unavailable" and "contact" not in seen
    assert "/Media/" not in str(seen) and "api.twilio.com" not in str(seen)


def test_an_x_vcard_label_is_a_contact_and_matches_the_bytes(client, twilio_connector, twilio_fake):
    twilio_connector("wa_in", "whatsapp")
    twilio_fake.add_media(CONTACT_MEDIA_SID, VCARD, "text/x-vcard")
    params = fixture("whatsapp_inbound_contact", MediaContentType0="text/x-vcard")
    assert post_twilio(client, "/webhooks/twilio/wa_in/", params).status_code == 200
    row = Attachment.objects.get()
    assert (row.kind, row.status, row.platform_ref) == ("contact", "stored", CARD)


def test_card_text_keeps_at_most_the_stored_length_and_no_nul():
    card = card_text(b"BEGIN:VCARD\r\nNOTE:" + b"x\x00" * 2000 + b"\r\nEND:VCARD\r\n")
    assert len(card) == 1000 and "\x00" not in card
