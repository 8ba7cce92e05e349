"""BRAIN's Markdown per platform (connectors/platforms/formatting.py) and the Telegram HTML splitter
(connectors/platforms/telegram/text.py), pure: every Telegram rendering and every part is checked with
the fake Bot API's HTML rules (tests/fakes/telegram_html.py), which refuse what Telegram refuses."""
import random

import pytest

from connectors.platforms.formatting import to_email_html, to_plain, to_telegram_html, to_whatsapp
from connectors.platforms.telegram.text import message_parts, split_html, split_text, utf16_len
from tests.fakes import telegram_html

# Pure functions and loopback fakes: nothing here depends on the database, so the PostgreSQL pass skips it.
pytestmark = pytest.mark.vendor_neutral

SAMPLE = """# Plan

Hello **Ada** & *team*: `a < b` and ~~old~~ see [the doc](https://example.org/?a=1&b=2) or <https://x.org>.

- one
- two **bold**
  - nested

1. first
2. second

> quoted **text**

```python
if a < b:
    print("&")
```

| a | b |
|---|---|
| 1 | 2 |

![a cat](https://example.org/cat.png)

---
end"""


# --- Telegram HTML ------------------------------------------------------------------------------------------


def test_telegram_html_renders_the_supported_entities_and_escapes_the_rest():
    html = to_telegram_html(SAMPLE)
    assert "<b>Plan</b>" in html  # a heading: a bold line
    assert "Hello <b>Ada</b> &amp; <i>team</i>: <code>a &lt; b</code> and <s>old</s>" in html
    assert '<a href="https://example.org/?a=1&amp;b=2">the doc</a>' in html
    assert '<a href="https://x.org">https://x.org</a>' in html
    assert "• one\n• two <b>bold</b>\n  • nested" in html and "1. first\n2. second" in html
    assert "<blockquote>quoted <b>text</b></blockquote>" in html
    assert '<pre><code class="language-python">if a &lt; b:\n    print("&amp;")</code></pre>' in html
    assert "a | b\n1 | 2" in html  # a table: readable rows
    assert '<a href="https://example.org/cat.png">a cat</a>' in html  # an image: a link to it
    assert "———\nend" not in html and "———\n\nend" in html
    telegram_html.parse(html)  # Telegram would accept it


@pytest.mark.parametrize("markdown, expected", [
    ("<b>raw</b> & <script>", "&lt;b&gt;raw&lt;/b&gt; &amp; &lt;script&gt;"),  # BRAIN's HTML is text
    ("[x `code` y](https://e.org)", '<a href="https://e.org">x code y</a>'),  # no code inside a link
    ("> a\n> > b", "<blockquote>a\n\nb</blockquote>"),  # no blockquote inside a blockquote
    ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),  # markdown-it refuses the link
    ("[ftp](ftp://e.org/f)", "ftp (ftp://e.org/f)"),  # a scheme Telegram makes no link of
    ("```\n<x>\n```", "<pre>&lt;x&gt;</pre>"),
    ("a\\*b\\* 2 * 3", "a*b* 2 * 3"),
    ("&amp;lt; &copy;", "&amp;lt; ©"),
    ("[![cat](https://e.org/c.png)](https://e.org)", '<a href="https://e.org">cat</a>'),  # no link in a link
])
def test_telegram_html_edge_cases(markdown, expected):
    html = to_telegram_html(markdown)
    assert html == expected
    telegram_html.parse(html)


def test_random_markdown_always_renders_to_html_telegram_accepts():
    rng = random.Random(18)
    atoms = ["**", "*", "_", "~~", "`", "```", "\n", "\n\n", "> ", "- ", "1. ", "# ", "[", "](https://e.org)", "<",
             ">", "&", "|", "---", "![", "a", "word ", "\\", "<b>", "&amp;", "😀"]
    for _ in range(400):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 60)))
        html = to_telegram_html(text)
        telegram_html.parse(html)  # raises EntityError if Telegram would refuse it


# --- splitting the rendered HTML ------------------------------------------------------------------------------


def test_a_short_message_is_one_part_with_its_visible_text():
    [part] = message_parts("Hi **Ada** <3")
    assert part.html == "Hi <b>Ada</b> &lt;3" and part.text == "Hi Ada <3"


def test_a_bold_span_cut_in_two_is_closed_and_reopened():
    parts = message_parts("**" + " ".join(f"w{i}" for i in range(40)) + "**", limit=50)
    assert len(parts) > 2
    for part in parts:
        assert part.html.startswith("<b>") and part.html.endswith("</b>")
        assert telegram_html.parse(part.html) == part.text and utf16_len(part.text) <= 50


def test_a_code_block_cut_in_two_is_closed_and_reopened_with_its_language():
    code = "\n".join(f"x{i} = {i} < {i + 1}" for i in range(30))
    parts = message_parts(f"Before\n\n```py\n{code}\n```\n\nAfter", limit=100)
    code_parts = [p for p in parts if "<pre>" in p.html]
    assert len(code_parts) >= 3
    for part in code_parts:
        assert part.html.startswith('<pre><code class="language-py">') and part.html.endswith("</code></pre>")
    # Cut at line breaks only, and every line arrives whole, in order.
    assert "\n".join(p.text for p in code_parts) == code
    assert parts[0].text == "Before" and parts[-1].text == "After"


def test_the_limit_counts_visible_text_not_tags():
    # 3,000 bold words: the HTML is far over 4,096 characters, the visible text just under.
    markdown = " ".join(f"**{'w' * 4}**" for _ in range(800))
    visible = " ".join("w" * 4 for _ in range(800))
    assert len(visible) <= 4096 < len(to_telegram_html(markdown))
    [part] = message_parts(markdown)
    assert part.text == visible and telegram_html.parse(part.html) == visible


def test_split_html_cuts_where_split_text_cuts_the_visible_text():
    rng = random.Random(7)
    for _ in range(150):
        words = [rng.choice(["**bold words**", "*it*", "`code`", "plain", "[l](https://e.org)", "\n", "\n\n",
                             "😀", "a&b", "<x>"]) for _ in range(rng.randint(1, 80))]
        markdown = " ".join(words)
        limit = rng.randint(8, 60)
        html = to_telegram_html(markdown)
        visible = telegram_html.parse(html)
        parts = split_html(html, limit)
        assert [p.text for p in parts] == split_text(visible, limit)
        for part in parts:
            assert telegram_html.parse(part.html) == part.text  # well-formed, and its visible text is the part
            assert 0 < utf16_len(part.text) <= limit


# --- WhatsApp, plain text, email ------------------------------------------------------------------------------


def test_whatsapp_markup():
    text = to_whatsapp(SAMPLE)
    assert "*Plan*" in text
    assert "Hello *Ada* & _team_: `a < b` and ~old~ see the doc (https://example.org/?a=1&b=2) or https://x.org." in text
    assert "- one\n- two *bold*\n  - nested" in text and "> quoted *text*" in text
    assert '```\nif a < b:\n    print("&")\n```' in text
    assert "a cat (https://example.org/cat.png)" in text


@pytest.mark.parametrize("markdown, expected", [
    ("**b** __b__ *i* _i_ ~~s~~", "*b* *b* _i_ _i_ ~s~"),
    ("***both***", "_*both*_"),
    ("`x` and ```y```", "`x` and `y`"),
    ("[same](https://e.org) [https://e.org](https://e.org)", "same (https://e.org) https://e.org"),
])
def test_whatsapp_edge_cases(markdown, expected):
    assert to_whatsapp(markdown) == expected


def test_plain_text_drops_the_markers_and_keeps_the_addresses():
    text = to_plain(SAMPLE)
    assert text.startswith("Plan\n\nHello Ada & team: a < b and old see the doc (https://example.org/?a=1&b=2) or "
                           "https://x.org.")
    assert "**" not in text and "`" not in text and "~~" not in text and "#" not in text
    assert "- one\n- two bold\n  - nested" in text and "quoted text" in text
    assert 'if a < b:\n    print("&")' in text and "a cat (https://example.org/cat.png)" in text


def test_email_html_renders_markdown_and_escapes_raw_html():
    html = to_email_html("Hi **Ada** <script>x</script>\nnext line\n\n[doc](https://e.org) [js](javascript:x)")
    assert "<strong>Ada</strong>" in html and "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html
    assert "<br />\nnext line" in html  # a line break stays a line break
    assert '<a href="https://e.org">doc</a>' in html and "javascript:" not in html.split("[js]")[0]


def test_a_text_that_renders_to_nothing_is_sent_as_written():
    assert to_plain("   ") == "   " and to_whatsapp("") == ""
    assert to_telegram_html("<>") == "&lt;&gt;"


# --- the fake's HTML rules themselves (they must be able to fail) ---------------------------------------------


@pytest.mark.parametrize("html", [
    "<b>open", "a</b>", "<b><i>x</b></i>", "<h1>x</h1>", "<a>no href</a>", "<code><b>x</b></code>",
    "<blockquote><blockquote>x</blockquote></blockquote>", "1 < 2", "&nbsp;", '<a href="u"><code>x</code></a>',
])
def test_the_fake_refuses_what_telegram_refuses(html):
    with pytest.raises(telegram_html.EntityError):
        telegram_html.parse(html)


def test_the_fake_accepts_telegram_html_and_returns_the_visible_text():
    html = ('<b>b</b><strong>s</strong><i>i</i><u>u</u><s>s</s><tg-spoiler>t</tg-spoiler>'
            '<span class="tg-spoiler">p</span><a href="https://e.org">a</a> &lt;&gt;&amp;&quot;&#38; a & b'
            '<pre><code class="language-py">x</code></pre><blockquote>q</blockquote>')
    assert telegram_html.parse(html) == 'bsiustpa <>&"& a & bxq'


def test_a_renderer_failure_sends_the_text_as_written_and_logs_no_content(monkeypatch, caplog):
    from connectors.platforms import formatting

    def broken(*args, **kwargs):
        raise ValueError("secret words from the message")

    monkeypatch.setattr(formatting._Walk, "blocks", broken)
    monkeypatch.setattr(formatting._EMAIL, "render", broken)
    assert to_telegram_html("**a** <b>") == "**a** &lt;b&gt;"
    assert to_whatsapp("**a**") == "**a**" and to_plain("**a**") == "**a**"
    assert to_email_html("**a** <b>") == "<p>**a** &lt;b&gt;</p>"
    assert "ValueError" in caplog.text and "secret words" not in caplog.text
