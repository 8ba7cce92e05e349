"""Telegram's parse_mode="HTML" rules for the fake Bot API: which tags parse, and the visible text left.

`parse(text)` returns the visible text (tags removed, entities decoded), which is what Telegram
stores and counts against the 4,096 limit, or raises EntityError with a description in the words
Telegram uses after "Bad Request: can't parse entities: ". Like Telegram, it accepts only the
supported tags (b, strong, i, em, u, ins, s, strike, del, a href, code, pre, tg-spoiler, span
class="tg-spoiler", blockquote), properly nested and closed; nothing inside code, only code inside
pre, no link or code inside a link, no blockquote inside a blockquote; the named entities &lt; &gt; &amp; &quot; and numeric ones.
Standard library only, as the fake is.
"""
import html
import re

SUPPORTED = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span",
             "blockquote"}
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[A-Za-z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))?)*)\s*>")
_ATTR = re.compile(r"([A-Za-z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+)))?")
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]*);")


class EntityError(ValueError):
    pass


def parse(text: str) -> str:
    visible, stack, index = [], [], 0
    while index < len(text):
        ch = text[index]
        if ch == "&":
            match = _ENTITY.match(text, index)
            if match is None:  # a lone "&" is text, as on Telegram
                visible.append(ch)
                index += 1
                continue
            name = match.group(1)
            if name.startswith("#"):
                visible.append(html.unescape(match.group(0)))
            elif name in NAMED_ENTITIES:
                visible.append(NAMED_ENTITIES[name])
            else:
                raise EntityError(f"Unsupported HTML entity \"&{name};\" at byte offset {_offset(text, index)}")
            index = match.end()
        elif ch == "<":
            match = _TAG.match(text, index)
            if match is None:
                raise EntityError(f"Unsupported start tag at byte offset {_offset(text, index)}")
            _tag(match, stack, _offset(text, index))
            index = match.end()
        else:
            visible.append(ch)
            index += 1
    if stack:
        raise EntityError(f"Can't find end tag corresponding to start tag \"{stack[-1]}\"")
    return "".join(visible)


def _tag(match, stack, offset):
    closing, name, attrs = match.group(1) == "/", match.group(2).lower(), match.group(3)
    if closing:
        if not stack:
            raise EntityError(f"Unexpected end tag at byte offset {offset}")
        if stack[-1] != name:
            raise EntityError(f"Unmatched end tag at byte offset {offset}, expected \"</{stack[-1]}>\", "
                              f"found \"</{name}>\"")
        stack.pop()
        return
    if name not in SUPPORTED:
        raise EntityError(f"Unsupported start tag \"{name}\" at byte offset {offset}")
    values = {m.group(1).lower(): next((g for g in m.groups()[1:] if g is not None), "")
              for m in _ATTR.finditer(attrs)}
    if name == "a" and not values.get("href"):
        raise EntityError(f"Can't find attribute \"href\" of tag \"a\" at byte offset {offset}")
    if name == "span" and values.get("class") != "tg-spoiler":
        raise EntityError(f"Tag \"span\" must have class \"tg-spoiler\" at byte offset {offset}")
    if stack and stack[-1] == "code" or stack and stack[-1] == "pre" and name != "code":
        raise EntityError(f"Entities can't be nested inside \"{stack[-1]}\" at byte offset {offset}")
    if name in ("a", "code", "pre") and "a" in stack:
        raise EntityError(f"Entities can't be nested inside \"a\" at byte offset {offset}")
    if name == "blockquote" and "blockquote" in stack:
        raise EntityError(f"Blockquote entities can't be nested at byte offset {offset}")
    stack.append(name)


def _offset(text, index):
    return len(text[:index].encode("utf-8"))
