"""Search over encrypted messages through a blind index.

Tokenising (`tokenize`): NFKC normalisation, case folding, accents stripped (NFKD, combining
marks dropped), then words made of letters and digits (anything else separates words). Each word
gets a light suffix stemming: the first of -ing, -ed, -es, -ly, -s that leaves at least three
characters is removed ("running" → "runn", "boxes" → "box", "cats" → "cat"). Query words go through
the same steps, so "meetings" finds "meeting" and "meet-ing" finds "meet ing".

Each distinct token of a message is stored as HMAC-SHA256(SEARCH_INDEX_KEY, token) (`digest`),
with `key_id`, the first 16 hex digits of SHA-256 of the key. A query matches a message when
every one of its tokens does (AND). Quoted phrases ("two words") are matched exactly by
decrypting the candidates the index returned and filtering them. Prefix queries ("meet*") are
NOT supported: a keyed hash of a word reveals nothing about its prefixes, which is the point.
See docs/privacy.md for what the index leaks.
"""
import hashlib
import hmac
import re
import unicodedata

from django.conf import settings

from brain_connectors.shared.errors import ValidationFailed

MAX_QUERY_CHARS = 200
MAX_QUERY_TOKENS = 10
SUFFIXES = ("ing", "ed", "es", "ly", "s")
MIN_STEM = 3
_WORD = re.compile(r"[^\W_]+")
_PHRASE = re.compile(r'"([^"]*)"')


def _fold(text):
    text = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def stem(word):
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= MIN_STEM:
            return word[: -len(suffix)]
    return word


def tokenize(text):
    """The tokens of `text`, in order, repeats kept."""
    return [stem(word) for word in _WORD.findall(_fold(text or ""))]


def _key():
    key = settings.SEARCH_INDEX_KEY
    if not key:
        raise ValidationFailed("Search is not configured: SEARCH_INDEX_KEY is not set.", code="search_unconfigured")
    return key.encode()


def key_id(key=None):
    key = key.encode() if isinstance(key, str) else (key or _key())
    return hashlib.sha256(key).hexdigest()[:16]


def digest(token, key=None):
    key = key.encode() if isinstance(key, str) else (key or _key())
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def digests_for(text, key=None):
    """The distinct digests of a message's tokens."""
    key = key.encode() if isinstance(key, str) else (key or _key())
    return sorted({digest(t, key) for t in tokenize(text)})


def phrase_match(phrase_tokens, text):
    """Whether the tokens appear consecutively in `text` (after tokenising it)."""
    tokens = tokenize(text)
    n = len(phrase_tokens)
    return any(tokens[i : i + n] == phrase_tokens for i in range(len(tokens) - n + 1))


def parse_query(query):
    """(tokens, phrases): all distinct tokens (AND), and the quoted phrases as token lists.
    Raises ValidationFailed for empty or over-long queries; never echoes the query."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationFailed("The search query is empty.", code="empty_query", details={"q": "empty"})
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationFailed(
            f"The search query is longer than {MAX_QUERY_CHARS} characters.", code="query_too_long",
            details={"q": "too_long"},
        )
    phrases = [tokenize(p) for p in _PHRASE.findall(query)]
    phrases = [p for p in phrases if len(p) > 1]
    tokens = list(dict.fromkeys(tokenize(query)))
    if not tokens:
        raise ValidationFailed("The search query has no words.", code="empty_query", details={"q": "empty"})
    if len(tokens) > MAX_QUERY_TOKENS:
        raise ValidationFailed(
            f"The search query has more than {MAX_QUERY_TOKENS} words.", code="query_too_long",
            details={"q": "too_many_words"},
        )
    return tokens, phrases
