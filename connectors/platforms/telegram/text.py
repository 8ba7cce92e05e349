"""Splitting long texts for Telegram, as plain text or as rendered HTML (pure functions, no I/O).

Telegram refuses texts over 4,096 characters. Longer texts are sent as several messages, cut at
the last paragraph break that fits, else the last line break, else the last whitespace, and only
for a single "word" longer than the limit, inside it. Nothing visible is ever dropped: only the
whitespace at a cut (the separator, trailing spaces, leading blank lines), and parts that would
hold nothing but whitespace are not sent (Telegram refuses empty texts).

Lengths are counted in UTF-16 code units, as Telegram counts entity offsets: an emoji outside the
Basic Multilingual Plane counts twice. That is never more than Telegram allows, however it
counts.

BRAIN's Markdown is rendered to Telegram HTML first (connectors.platforms.formatting) and the HTML
is split (split_html): the limit is counted on the visible text, as Telegram counts it after
parsing the tags, and a formatting span cut in two is closed and reopened so each part parses.
"""

import html
import re
from dataclasses import dataclass

from connectors.platforms.formatting import to_telegram_html

MAX_MESSAGE_LENGTH = 4096
_SEPARATORS = ("\n\n", "\n")


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _fitting_prefix_length(text: str, limit: int) -> int:
    """How many characters (code points) of `text` fit in `limit` UTF-16 code units."""
    used = 0
    for index, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def _cut(text: str, fits: int) -> tuple[int, int]:
    """Where to end the next part of `text`, of which `fits` characters fit: (end, skip), where
    text[:end] is the part and `skip` separator characters after it are dropped."""
    for separator in _SEPARATORS:
        # A separator that starts right at the limit still counts: the part before it fits.
        index = text.rfind(separator, 0, fits + len(separator))
        if index > 0 and text[:index].strip():
            return index, len(separator)
    for index in range(min(fits, len(text) - 1), 0, -1):
        if text[index].isspace() and text[:index].strip():
            return index, 1
    return fits, 0  # one "word" longer than the limit: cut inside it, dropping nothing


def split_spans(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[tuple[int, int]]:
    """Where split_text cuts `text`: the (start, end) of each part, in order."""
    if limit < 2:
        raise ValueError("limit must be at least 2 (a surrogate pair must fit)")
    spans = []
    start = 0
    while utf16_len(text[start:]) > limit:
        rest = text[start:]
        end, skip = _cut(rest, _fitting_prefix_length(rest, limit))
        # Trailing whitespace and leading blank lines would be invisible at a message's edge.
        part = rest[:end].rstrip()
        if part:
            spans.append((start, start + len(part)))
        start += end + skip
        while text[start:start + 1] == "\n":
            start += 1
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def split_text(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-16 code units each, in order."""
    return [text[start:end] for start, end in split_spans(text, limit)]


@dataclass(frozen=True)
class Part:
    html: str  # sent with parse_mode="HTML"
    text: str  # its visible text: what Telegram counts, and the plain-text fallback


_PIECE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z]+);|.", re.S)


def split_html(markup: str, limit: int = MAX_MESSAGE_LENGTH) -> list[Part]:
    """Split well-formed Telegram HTML into parts whose visible text (tags do not count, an entity
    is one character) fits in `limit`, cut where split_text would cut that text. A formatting span
    cut in two is closed at the end of one part and opened again, with its attributes, at the
    start of the next (a code block stays a code block in both), so each part is well-formed."""
    items = []  # (raw markup, tag name or None, closing?) for tags; (raw, None, visible character) for text
    visible = []
    where = []  # item index of each visible character
    for match in _PIECE.finditer(markup):
        raw = match.group(0)
        if match.group(2):
            items.append((raw, match.group(2).lower(), bool(match.group(1))))
        else:
            where.append(len(items))
            visible.append(html.unescape(raw) if raw.startswith("&") else raw)
            items.append((raw, None, None))
    text = "".join(visible)
    parts, stack, replayed = [], [], 0
    for start, end in split_spans(text, limit):
        first, last = where[start], where[end - 1]
        while replayed < first:  # the tags open where this part starts
            _replay(items[replayed], stack)
            replayed += 1
        opened = "".join(raw for _, raw in stack)
        while replayed <= last:
            _replay(items[replayed], stack)
            replayed += 1
        body = "".join(raw for raw, _, _ in items[first:last + 1])
        closed = "".join(f"</{name}>" for name, _ in reversed(stack))
        parts.append(Part(html=opened + body + closed, text=text[start:end]))
    return parts


def _replay(item, stack):
    raw, name, closing = item
    if name is None:
        return
    if closing:
        if stack and stack[-1][0] == name:
            stack.pop()
    else:
        stack.append((name, raw))


def message_parts(markdown: str, limit: int = MAX_MESSAGE_LENGTH) -> list[Part]:
    """BRAIN's Markdown as the Telegram messages that carry it, in order."""
    return split_html(to_telegram_html(markdown), limit)
