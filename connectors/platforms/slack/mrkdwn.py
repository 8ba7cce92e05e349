"""BRAIN's Markdown as Slack mrkdwn, and split into messages that never cut inside a formatting span.

slackify-markdown renders the mrkdwn (`*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ``` ```` blocks,
`<url|text>` links, `&lt;` for a literal `<`). To split it, the same renderer runs once more with each marker it
writes wrapped in sentinels (`_Marked`), so the split knows which characters are markup and which are text,
without parsing mrkdwn back. The text is cut where Telegram's is (telegram.text.split_spans: the last paragraph
break that fits, else line break, else space), and, as telegram.text.split_html does for HTML, a span cut in two is
closed at the end of one part and opened again at the start of the next: `*bold*` in both, a code block closed with
```` ``` ```` and reopened with ```` ``` ````, a link repeated with its address. Each part, markup included, fits in
the limit.
"""
import html
import re

from slackify_markdown import slackify_markdown
from slackify_markdown.slackify import SlackifyMarkdown

from connectors.platforms.telegram.text import split_spans, split_text, utf16_len

_OPEN, _CLOSE, _SEP, _END = "\x0e", "\x0f", "\x10", "\x11"
_SENTINELS = re.compile("[\x0e\x0f\x10\x11]")
# A marker (sentinel, kind, its raw mrkdwn), an escape (one visible character), or any other character.
_PIECE = re.compile(r"([\x0e\x0f])([a-z]+)\x10(.*?)\x11|&(?:amp|lt|gt);|.", re.S)
# How a span cut in two is closed at the end of a part (its own closing marker, else this).
_CLOSE_AT_CUT = {"b": "*", "h": "*", "i": "_", "s": "~", "c": "`", "pre": "\n```", "a": ">"}


def to_mrkdwn(text: str) -> str:
    """BRAIN writes Markdown; Slack reads mrkdwn (`*bold*`, `<url|text>`, `&lt;` for a literal `<`)."""
    try:
        converted = slackify_markdown(text).rstrip("\n")
    except Exception:  # a converter bug must not lose the message: send it escaped, unformatted
        converted = _escaped(text)
    return converted if converted.strip() else text


def _escaped(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Marked(SlackifyMarkdown):
    """slackify-markdown's rendering with each span marker written as OPEN kind SEP raw END (or CLOSE …)."""

    @staticmethod
    def _mark(which, kind, raw):
        return f"{which}{kind}{_SEP}{raw}{_END}" if raw else raw

    def strong_open(self, *args):
        return self._mark(_OPEN, "b", super().strong_open(*args))

    def strong_close(self, *args):
        return self._mark(_CLOSE, "b", super().strong_close(*args))

    def em_open(self, *args):
        return self._mark(_OPEN, "i", super().em_open(*args))

    def em_close(self, *args):
        return self._mark(_CLOSE, "i", super().em_close(*args))

    def s_open(self, *args):
        return self._mark(_OPEN, "s", super().s_open(*args))

    def s_close(self, *args):
        return self._mark(_CLOSE, "s", super().s_close(*args))

    def link_open(self, *args):
        return self._mark(_OPEN, "a", super().link_open(*args))

    def link_close(self, *args):
        raw = super().link_close(*args)  # ">", or ">: content\n" (a close token with content: never from the parser)
        return self._mark(_CLOSE, "a", ">") + raw[1:] if raw.startswith(">") else raw

    def heading_open(self, *args):
        return self._mark(_OPEN, "h", super().heading_open(*args))

    def heading_close(self, *args):
        raw = super().heading_close(*args)  # "*" and two structural line breaks
        return self._mark(_CLOSE, "h", "*") + raw[1:]

    def code_inline(self, tokens, idx, options, env):
        return self._mark(_OPEN, "c", "`") + tokens[idx].content + self._mark(_CLOSE, "c", "`")

    def _block(self, raw):  # "```\n" content "```\n"
        return self._mark(_OPEN, "pre", "```\n") + raw[4:-4] + self._mark(_CLOSE, "pre", "```") + "\n"

    def code_block(self, *args):
        return self._block(super().code_block(*args))

    def fence(self, *args):
        return self._block(super().fence(*args))


def _marked(text):
    """The mrkdwn of `text` with its markers marked, or None if it cannot be rendered."""
    try:
        marked = _Marked(_SENTINELS.sub("", text)).slackify().rstrip("\n")
    except Exception:
        return None
    return marked if _SENTINELS.sub("", marked).strip() else None


def _pieces(marked):
    """(items, text, where): items are (raw, kind, opens) for markers and (raw, None, None) for text; `text` is the
    visible text, an escape counted as one character; where[i] is the item of text[i]."""
    items, visible, where = [], [], []
    for match in _PIECE.finditer(marked):
        if match.group(1):
            items.append((match.group(3), match.group(2), match.group(1) == _OPEN))
        else:
            raw = match.group(0)
            where.append(len(items))
            visible.append(html.unescape(raw) if len(raw) > 1 else raw)
            items.append((raw, None, None))
    return items, "".join(visible), where


def _parts(items, text, where, limit):
    parts, stack, replayed = [], [], 0
    for start, end in split_spans(text, limit):
        while start < end and text[start] in " \t":  # a marker must touch its text: `* bold*` is not bold
            start += 1
        first, last = where[start], where[end - 1]
        while replayed < first:  # the spans open where this part starts
            _replay(items[replayed], stack)
            replayed += 1
        opened = "".join(raw for _, raw in stack)
        while replayed <= last:
            _replay(items[replayed], stack)
            replayed += 1
        body = "".join(raw for raw, _, _ in items[first:last + 1])
        # Markers right after the part's last character that close its spans belong to it.
        while replayed < len(items) and items[replayed][1] and not items[replayed][2] and stack \
                and stack[-1][0] == items[replayed][1]:
            body += items[replayed][0]
            _replay(items[replayed], stack)
            replayed += 1
        closed = "".join(_CLOSE_AT_CUT[kind] for kind, _ in reversed(stack))
        parts.append(opened + body + closed)
    return parts


def _replay(item, stack):
    raw, kind, opens = item
    if kind is None:
        return
    if opens:
        stack.append((kind, raw))
    elif stack and stack[-1][0] == kind:
        stack.pop()


def message_parts(markdown: str, limit: int) -> list[str]:
    """BRAIN's Markdown as the mrkdwn texts of the Slack messages that carry it, in order, each at most `limit`
    characters (UTF-16 code units) with its markup, and each with its spans balanced."""
    marked = _marked(markdown)
    if marked is None:  # as to_mrkdwn: unformatted, escaped (or as written if that leaves nothing)
        return split_text(to_mrkdwn(markdown), limit)
    items, text, where = _pieces(marked)
    budget, floor, best = limit, max(2, limit // 8), None  # an escape is up to 5 characters
    for _ in range(10):
        parts = _parts(items, text, where, budget)
        longest = max((utf16_len(part) for part in parts), default=0)
        if longest <= limit:
            return parts
        if best is None or longest < best[0]:
            best = (longest, parts)
        # Markup (escapes, link addresses, markers) makes a part longer than its text: cut the text shorter until
        # every part fits, down to a floor that keeps a pathological text (a link address longer than the limit)
        # from becoming hundreds of messages. Then the parts that came closest.
        if budget <= floor:
            break
        budget = max(floor, min(budget - (longest - limit), budget * limit // longest))
    return best[1]
