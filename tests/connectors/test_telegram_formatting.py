"""BRAIN's Markdown reaching Telegram as HTML, through the real python-telegram-bot SDK against the loopback fake
Bot API, which parses parse_mode="HTML" as Telegram does (tests/fakes/telegram_html.py): one message, a long one
split into parts that each parse, and the plain-text fallback when Telegram cannot parse the entities, on both
send paths (the Celery task's send() and the batch sender's send_async())."""
import asyncio

import pytest

from connectors import services
from connectors.delivery.sender import Sender
from connectors.models import Connector
from tests.conftest import SYSTEM
from tests.deliveries import send_now
from tests.fakes.telegram_server import FakeTelegram

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
ADA = "5550123401"


@pytest.fixture
def fake():
    server = FakeTelegram().start()
    yield server
    server.stop()


@pytest.fixture
def telegram(make_connector, fake):
    make_connector("tg_fmt", kind="telegram", config={"mode": "polling", "api_base_url": fake.url},
                   credentials={"bot_token": TOKEN})
    return Connector.objects.get(pk="tg_fmt")


def test_markdown_arrives_as_html_that_telegram_parses(telegram, fake):
    delivery = send_now("tg_fmt", ADA, "**Meeting** at *3pm* with `Ada <ops>` — [agenda](https://e.org/a?x=1&y=2)")
    assert delivery.status == "sent", delivery.last_error
    [call] = fake.calls_to("sendMessage")
    assert call.status == 200 and call.params["parse_mode"] == "HTML"
    assert call.params["text"] == ('<b>Meeting</b> at <i>3pm</i> with <code>Ada &lt;ops&gt;</code> — '
                                   '<a href="https://e.org/a?x=1&amp;y=2">agenda</a>')
    assert call.response["result"]["text"] == "Meeting at 3pm with Ada <ops> — agenda"  # what the person sees


def test_a_long_formatted_message_is_split_into_parts_that_each_parse(telegram, fake):
    code = "\n".join(f"step_{i} = run({i}) < limit" for i in range(200))  # ~5,500 characters of code
    content = "**Report** for *today*\n\n```python\n" + code + "\n```\n\nThat is **all**."
    delivery = send_now("tg_fmt", ADA, content)
    assert delivery.status == "sent", delivery.last_error
    calls = fake.calls_to("sendMessage")
    assert len(calls) >= 2 and all(c.status == 200 and c.params["parse_mode"] == "HTML" for c in calls)
    assert all(len(s["visible_text"].encode("utf-16-le")) // 2 <= 4096 for s in fake.sent)
    # The code block was cut at a line break, closed in one part and opened again, with its language, in the next.
    code_parts = [s["text"] for s in fake.sent if "<pre>" in s["text"]]
    assert len(code_parts) >= 2
    assert all(p.count('<pre><code class="language-python">') == 1 and p.count("</code></pre>") == 1
               for p in code_parts)
    seen = "\n".join(s["visible_text"] for s in fake.sent)
    assert seen.split() == f"Report for today {code} That is all.".split()  # nothing lost, nothing reordered
    assert set(code.split("\n")) <= set(seen.split("\n"))  # no line of code cut in two
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])


def test_entities_telegram_cannot_parse_are_sent_again_as_plain_text(telegram, fake):
    fake.fail("bad_entities", method="sendMessage", times=1)
    delivery = send_now("tg_fmt", ADA, "Your **3pm** moved to *Thursday* <soon>.")
    assert delivery.status == "sent" and delivery.attempts == 1, delivery.last_error
    refused, plain = fake.calls_to("sendMessage")
    assert refused.status == 400 and "can't parse entities" in refused.response["description"]
    assert plain.status == 200 and "parse_mode" not in plain.params
    assert plain.params["text"] == "Your 3pm moved to Thursday <soon>."  # the same part, its text without markup
    assert delivery.platform_message_id == str(fake.sent[0]["message_id"])


def test_only_the_refused_part_of_a_long_message_falls_back(telegram, fake):
    content = "\n\n".join(f"**Part {n}** " + "x" * 3000 for n in "abc")  # 3 parts: 2 paragraphs fit no message
    fake.fail("bad_entities", method="sendMessage", times=1, after=1)
    delivery = send_now("tg_fmt", ADA, content)
    assert delivery.status == "sent", delivery.last_error
    assert [(s["parse_mode"], s["visible_text"][:6]) for s in fake.sent] == [
        ("HTML", "Part a"), (None, "Part b"), ("HTML", "Part c")]


def test_other_bad_requests_still_fail_the_delivery(telegram, fake):
    fake.forget_chat(ADA)
    delivery = send_now("tg_fmt", ADA, "**hello**")
    assert delivery.status == "failed" and "chat not found" in delivery.last_error.lower()
    assert len(fake.calls_to("sendMessage")) == 1  # not sent again as plain text


def test_the_batch_sender_sends_html_and_falls_back_too(settings, telegram, fake):
    settings.DELIVERY_ENGINE = "sender"
    services.send_message(SYSTEM, "tg_fmt", ADA, "first **bold**")
    asyncio.run(Sender(poll_seconds=0.05).run(until_idle=True))
    fake.fail("bad_entities", method="sendMessage", times=1)
    services.send_message(SYSTEM, "tg_fmt", ADA, "second *it*")
    asyncio.run(Sender(poll_seconds=0.05).run(until_idle=True))
    assert [(s["text"], s["parse_mode"]) for s in fake.sent] == [
        ("first <b>bold</b>", "HTML"), ("second it", None)]
    assert [c.status for c in fake.calls_to("sendMessage")] == [200, 400, 200]
