"""Shared pieces of the Twilio voice tests: the voice connector fixture, TwiML parsing and signed call requests."""
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.connectors.twilio_support import fixture, post_twilio

CALL_SID = "CA5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
CALLER = "+14155550199"
VOICE = "/webhooks/twilio/{}/voice/"


def parse(xml):
    return ET.fromstring(xml)  # noqa: S314 (TwiML this service wrote itself)


def twiml(response):
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/xml")
    root = parse(response.content)
    assert root.tag == "Response"
    return root


def verbs(root):
    return [child.tag for child in root]


def says(element):
    return [say.text for say in element.iter("Say")]


def call(client, url, params, **kwargs):
    """POST to an absolute URL our TwiML gave Twilio, signed for exactly that URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return post_twilio(client, path, params, sign_url=url, **kwargs)


def query(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def speech(text, **overrides):
    return fixture("voice_gather_speech", SpeechResult=text, **overrides)


def silence():
    return fixture("voice_gather_speech", SpeechResult=None, Confidence=None)


@pytest.fixture
def voice(settings, twilio_connector):
    settings.PUBLIC_BASE_URL = ""  # tests that want one set it after this

    def make(id="voice_main", **config):
        config.setdefault("greeting", "Hi, BRAIN here. What can I do for you?")
        config.setdefault("reply_wait_seconds", 2)
        return twilio_connector(id, "voice", **config)

    return make


def greet(client, connector_id="voice_main"):
    root = twiml(post_twilio(client, VOICE.format(connector_id), fixture("voice_incoming")))
    return root, root.find("Gather").get("action")
