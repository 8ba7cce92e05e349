"""Splitting long texts for Telegram (pure functions, no I/O).

Telegram refuses texts over 4,096 characters. Longer texts are sent as several messages, cut at
the last paragraph break that fits, else the last line break, else the last whitespace, and only
for a single "word" longer than the limit, inside it. Nothing visible is ever dropped: only the
whitespace at a cut (the separator, trailing spaces, leading blank lines), and parts that would
hold nothing but whitespace are not sent (Telegram refuses empty texts).

Lengths are counted in UTF-16 code units, as Telegram counts entity offsets: an emoji outside the
Basic Multilingual Plane counts twice. That is never more than Telegram allows, however it
counts.
"""

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


def split_text(text: str, limit: int = MAX_MESSAGE_LENGTH) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-16 code units each, in order."""
    if limit < 2:
        raise ValueError("limit must be at least 2 (a surrogate pair must fit)")
    parts = []
    rest = text
    while utf16_len(rest) > limit:
        end, skip = _cut(rest, _fitting_prefix_length(rest, limit))
        # Trailing whitespace and leading blank lines would be invisible at a message's edge.
        part, rest = rest[:end].rstrip(), rest[end + skip:].lstrip("\n")
        if part:
            parts.append(part)
    if rest.strip():
        parts.append(rest)
    return parts
