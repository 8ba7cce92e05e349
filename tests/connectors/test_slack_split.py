"""Splitting a long Slack message never cuts inside a formatting span (connectors/platforms/slack/mrkdwn.py): a span
cut in two is closed at the end of one part and reopened at the start of the next, every part fits with its markup,
and the parts carry the whole text in order. Then once through the real slack_sdk against the loopback fake Slack."""
import re

import pytest

from connectors.models import Connector, ConnectorStatus
from connectors.platforms.slack.mrkdwn import message_parts, to_mrkdwn
from tests.deliveries import send_now
from tests.fakes.slack_server import FakeSlack

BOT_TOKEN = "xoxb-1111111111-2222222222-SpLiTtInGtEsTtOkEn00"
URL = "https://example.com/x"
WORDS = [f"w{n}" for n in range(400)]

# (Markdown around the words, the mrkdwn span that must enclose every run of them in each part)
SPANS = {
    "bold": ("**", "**", r"\*", r"\*"),
    "italic": ("_", "_", "_", "_"),
    "strike": ("~~", "~~", "~", "~"),
    "code span": ("`", "`", "`", "`"),
    "link": ("[", f"]({URL})", re.escape(f"<{URL}|"), ">"),
}


def words_of(parts):
    return re.findall(r"(?<![a-z0-9])(?:lead|w\d+|tail|line \d+)(?![a-z0-9])", "\n".join(parts))


@pytest.mark.parametrize("kind", SPANS)
def test_a_span_across_the_cut_is_closed_and_reopened_in_every_part(kind):
    opens, closes, o, c = SPANS[kind]
    markdown = "lead " * 30 + opens + " ".join(WORDS) + closes + " tail"
    parts = message_parts(markdown, 300)

    assert len(parts) > 3 and all(len(part) <= 300 for part in parts)
    # Each part: some plain words, then the span's words inside the span's own markers, then plain words again.
    balanced = re.compile(rf"(?:lead(?: lead)*)? ?(?:{o}w\d+(?: w\d+)*{c})?(?: tail)?")
    assert [part for part in parts if not balanced.fullmatch(part)] == []
    assert words_of(parts) == ["lead"] * 30 + WORDS + ["tail"]  # nothing lost, nothing repeated, in order


def test_a_code_block_longer_than_the_limit_is_closed_and_reopened_as_a_code_block():
    lines = [f"line {n}" for n in range(120)]
    parts = message_parts("```\n" + "\n".join(lines) + "\n```", 200)

    assert len(parts) > 3 and all(len(part) <= 200 for part in parts)
    assert [part for part in parts if not re.fullmatch(r"```\n(?:line \d+\n)*line \d+\n```", part)] == []
    assert words_of(parts) == lines


def test_nested_spans_reopen_in_order_and_markup_counts_against_the_limit():
    markdown = "**bold _both " + " ".join(WORDS[:60]) + "_ bold** & <more> " + "&" * 150
    parts = message_parts(markdown, 120)

    assert all(len(part) <= 120 for part in parts)  # `&amp;` is five characters of the limit, not one
    inside = [part for part in parts if re.search(r"w\d+", part)]
    assert len(inside) > 2 and inside[0].startswith("*bold _both w0") and inside[0].endswith("_*")
    assert all(part.startswith("*_w") for part in inside[1:])
    # No other `*` or `_` in the text: an even count in every part is every span closed where it was opened.
    assert [part for part in parts if part.count("*") % 2 or part.count("_") % 2] == []
    assert words_of(parts) == WORDS[:60]
    assert "".join(parts).count("&amp;") == 151 and "&lt;more&gt;" in "".join(parts)


@pytest.mark.parametrize("markdown", [
    "**bold** and *it* and ~~gone~~ and `code`",
    "# Title\n\n- a\n- b\n\n1. one\n2. two",
    "5 > 3 <b> & [link](https://example.org/n) <https://example.org/a>",
    "```py\ncode **stays**\n```\n\n> quoted **b**",
])
def test_a_text_that_fits_is_one_part_exactly_as_rendered(markdown):
    assert message_parts(markdown, 4000) == [to_mrkdwn(markdown)]


@pytest.fixture
def fake():
    server = FakeSlack(bot_tokens={BOT_TOKEN}).start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_long_formatted_message_reaches_slack_as_balanced_parts_in_order(make_connector, fake, settings):
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("slack_split", kind="slack", config={"api_base_url": fake.url},
                   credentials={"bot_token": BOT_TOKEN, "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"})
    assert Connector.objects.get(pk="slack_split").status == ConnectorStatus.CONNECTED
    many = [f"w{n}" for n in range(1700)]  # about 9,100 characters of bold (the cap is 10,000): three messages
    delivery = send_now("slack_split", "C0LAN2Q65", "lead **" + " ".join(many) + "** tail")

    assert delivery.status == "sent"
    texts = [sent["text"] for sent in fake.sent]
    assert len(texts) == 3 and all(len(text) <= 4000 for text in texts)
    assert re.fullmatch(r"lead \*w0(?: w\d+)*\*", texts[0])
    assert re.fullmatch(r"\*w\d+(?: w\d+)*\*", texts[1])
    assert re.fullmatch(r"\*w\d+(?: w\d+)*\* tail", texts[2])
    assert words_of(texts) == ["lead", *many, "tail"]
    assert delivery.platform_message_id == fake.sent[0]["ts"]
