"""Hypothesis strategies for hostile webhook input: strings that break naive code, JSON of any
shape, real-format fixtures with fields dropped, replaced or retyped, and form bodies."""
import json
from pathlib import Path
from urllib.parse import quote_plus

from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Strings that have broken parsers before: NUL, lone surrogates, bidi and zero-width marks,
# non-ASCII digits ("²".isdigit() is True, int("²") fails), overlong values, number-like text.
NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e\u2066", "\ufeff", "\u200b", "é", "日本語", "🧠" * 3,
    "²", "١٢٣", "９", "-1", "0", "1e309", "NaN", "-0", "9" * 30, "9" * 5000, "null", "true", "[]", "{}",
    "whatsapp:", "+", "+14155550199\x00", "client:", "sip:", "anonymous:CA" + "0" * 32,
    "../../etc/passwd", "%00", "%ff%fe", "<Response/>", "]]>", "' OR 1=1 --", "a" * 10_001, "b" * 300,
]

# Every code point, surrogates included (st.text() leaves them out by default).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
hostile_text = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(ANY_CHAR, max_size=40))
# What survives a trip through an HTTP header on a real server (latin-1) without being a control char.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)

hostile_ints = st.one_of(
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]),
    st.integers(),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), hostile_ints, st.floats(allow_nan=False, allow_infinity=False), hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)


def deep_json(depth):
    """A nesting far past Python's recursion limit: `[[[[…]]]]` or `{"a":{"a":…}}`."""
    return st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth])


random_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(ANY_CHAR, max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    deep_json(100_000),
    st.sampled_from([b"", b"null", b"{}", b"[]", b'"x"', b"1e999999", b"\xff\xfe{", b"\x00" * 50,
                     b'{"update_id": 1, "message": ' * 3]),
)

content_types = st.sampled_from([
    "application/json", "application/json; charset=latin-1", "application/json; charset=bogus",
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-16",
    "application/x-www-form-urlencoded; charset=no-such-codec", "multipart/form-data; boundary=xyz",
    "multipart/form-data", "text/plain", "text/xml", "application/octet-stream", "",
])


def fixture(platform, name):
    return json.loads((FIXTURES / platform / f"{name}.json").read_text())


def _retyped(value):
    """Another JSON type than `value` has, or a hostile value of any type."""
    return st.one_of(json_values, st.just([value]), st.just({"value": value}), st.just(str(value)))


@st.composite
def mutated_json(draw, base, max_mutations=4):
    """`base` (a decoded JSON fixture) with 1-`max_mutations` fields dropped, replaced, retyped
    or added, anywhere in the tree."""
    data = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, max_mutations))):
        # Walk to a random container.
        node = data
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            children = [k for k in keys if isinstance(node[k], (dict, list)) and node[k]]
            if not children or draw(st.booleans()):
                break
            node = node[draw(st.sampled_from(children))]
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["drop", "replace", "retype", "add"] if keys else ["add"]))
        if action == "add":
            if isinstance(node, dict):
                node[draw(st.one_of(hostile_text, st.sampled_from(["message", "text", "from", "chat", "id"])))] = (
                    draw(json_values))
            else:
                node.append(draw(json_values))
            continue
        key = draw(st.sampled_from(keys))
        if action == "drop":
            del node[key]
        elif action == "replace":
            node[key] = draw(json_scalars)
        else:
            node[key] = draw(_retyped(node[key]))
    return data


@st.composite
def mutated_form(draw, base, max_mutations=4):
    """Form fields (a Twilio fixture) as a list of (name, value) pairs with fields dropped,
    replaced, duplicated or added; values may be any text."""
    pairs = [(k, v) for k, v in base.items()]
    for _ in range(draw(st.integers(1, max_mutations))):
        action = draw(st.sampled_from(["drop", "replace", "duplicate", "add"] if pairs else ["add"]))
        if action == "add":
            pairs.append((draw(st.one_of(hostile_text, st.sampled_from(sorted(base)))), draw(hostile_text)))
            continue
        index = draw(st.integers(0, len(pairs) - 1))
        name, _ = pairs[index]
        if action == "drop":
            del pairs[index]
        elif action == "replace":
            pairs[index] = (name, draw(hostile_text))
        else:
            pairs.append((name, draw(hostile_text)))
    return pairs


def form_body(pairs):
    """URL-encode `pairs`; lone surrogates become invalid UTF-8 escapes, as a hostile sender sends."""
    return "&".join(
        f"{quote_plus(k.encode('utf-8', 'surrogatepass'))}={quote_plus(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in pairs
    ).encode("ascii")


form_bodies = st.one_of(
    st.lists(st.tuples(hostile_text, hostile_text), max_size=6).map(form_body),
    st.binary(max_size=200),
    st.sampled_from([b"%", b"a=%zz", b"=&=&&", b"a" * 3000, b"&".join([b"x=1"] * 2000)]),
)

http_methods = st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
