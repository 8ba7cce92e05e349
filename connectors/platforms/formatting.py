"""BRAIN's Markdown rendered for each platform: Telegram HTML, WhatsApp markup, plain text and email HTML.

BRAIN writes CommonMark (with ~~strikethrough~~ and tables). markdown-it-py parses it, with raw HTML
disabled, so a `<` that BRAIN writes is text, never markup. One walk over its syntax tree renders the
text-based targets; each target (a `_Style`) only says how a construct is written:

- Telegram (`to_telegram_html`, for parse_mode="HTML"): b, i, s, code, pre, a, blockquote; `<`, `>`
  and `&` escaped. Headings become bold lines, lists "•"/"1." lines, tables "a | b" rows, images
  links, a rule a line of dashes. Telegram's nesting rules are kept: nothing inside code, no
  code inside a link, no blockquote inside a blockquote.
- WhatsApp (`to_whatsapp`): *bold*, _italic_, ~strike~, `code`, ```blocks```, links "text (url)".
- Plain text (`to_plain`, SMS and voice): the markers removed, links "text (url)".
- Email (`to_email_html`): markdown-it-py's own HTML renderer.

Every function falls back to the text as written if rendering fails or leaves nothing visible:
a renderer bug must not lose a message.
"""
import html
import logging

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

logger = logging.getLogger(__name__)

_PARSER = MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])
# BRAIN writes chat messages: a single line break is meant as one (as on every chat platform), not as a space.
_EMAIL = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["strikethrough", "table"])
RULE = "———"
# Telegram makes links only of these; anything else (markdown-it already refuses javascript: and the
# like) is shown as text with its address.
_TELEGRAM_SCHEMES = ("http://", "https://", "tg://", "mailto:")


def _escape(text):
    return html.escape(text, quote=False)


class _Style:
    """How the plain-text target writes each construct; subclasses change what differs."""

    bullet = "- "

    def text(self, content):
        return content

    def strong(self, inner):
        return inner

    def em(self, inner):
        return inner

    def strike(self, inner):
        return inner

    def code(self, content, in_link):
        return content

    def code_block(self, content, info):
        return content

    def heading(self, inner):
        return inner

    def quote(self, inner, nested):
        return inner

    def link(self, inner, href, autolink):
        if autolink or not href or inner == href:
            return inner or href
        return f"{inner} ({href})" if inner else href

    def image(self, alt, src, in_link):
        return self.link(alt, src, autolink=False)

    def rule(self):
        return RULE


class _WhatsApp(_Style):
    def strong(self, inner):
        return f"*{inner}*" if inner.strip() else inner

    def em(self, inner):
        return f"_{inner}_" if inner.strip() else inner

    def strike(self, inner):
        return f"~{inner}~" if inner.strip() else inner

    def code(self, content, in_link):
        return f"`{content}`"

    def code_block(self, content, info):
        return f"```\n{content}\n```"

    def heading(self, inner):
        return self.strong(inner)

    def quote(self, inner, nested):
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))


class _Telegram(_Style):
    bullet = "• "

    def text(self, content):
        return _escape(content)

    def strong(self, inner):
        return f"<b>{inner}</b>"

    def em(self, inner):
        return f"<i>{inner}</i>"

    def strike(self, inner):
        return f"<s>{inner}</s>"

    def code(self, content, in_link):  # Telegram allows no code entity inside a link
        return _escape(content) if in_link else f"<code>{_escape(content)}</code>"

    def code_block(self, content, info):
        language = info.split()[0] if info.split() else ""
        if language:
            return f'<pre><code class="language-{html.escape(language)}">{_escape(content)}</code></pre>'
        return f"<pre>{_escape(content)}</pre>"

    def heading(self, inner):
        return self.strong(inner)

    def quote(self, inner, nested):  # Telegram refuses a blockquote inside a blockquote
        return inner if nested else f"<blockquote>{inner}</blockquote>"

    def link(self, inner, href, autolink):
        if not href.lower().startswith(_TELEGRAM_SCHEMES):
            return super().link(inner, _escape(href), autolink)
        return f'<a href="{html.escape(href)}">{inner or _escape(href)}</a>'

    def image(self, alt, src, in_link):  # a link to it; inside a link (no link in a link), its description
        return alt or "image" if in_link else self.link(alt or "image", src, autolink=False)


class _Walk:
    """One rendering of one document in one style."""

    def __init__(self, style):
        self.style = style
        self.quote_depth = 0
        self.in_link = False

    # --- blocks ---
    def blocks(self, nodes, tight=False):
        rendered = [self.block(node, tight) for node in nodes]
        return ("\n" if tight else "\n\n").join(part for part in rendered if part != "")

    def block(self, node, tight=False):
        kind, style = node.type, self.style
        if kind in ("paragraph", "th", "td"):
            return self.inline_of(node)
        if kind == "heading":
            return style.heading(self.inline_of(node))
        if kind in ("fence", "code_block"):
            return style.code_block(node.content.removesuffix("\n"), node.info or "")
        if kind == "hr":
            return style.rule()
        if kind == "blockquote":
            self.quote_depth += 1
            try:
                inner = self.blocks(node.children)
            finally:
                self.quote_depth -= 1
            return style.quote(inner, nested=self.quote_depth > 0)
        if kind in ("bullet_list", "ordered_list"):
            return self.list(node)
        if kind == "table":
            return self.table(node)
        if kind == "inline":
            return self.inline(node.children)
        return self.blocks(node.children, tight)  # anything else: its content

    def list(self, node):
        tight = any(p.type == "paragraph" and p.hidden for item in node.children for p in item.children)
        number = int(node.attrs.get("start", 1) or 1)
        items = []
        for item in node.children:
            marker = f"{number}. " if node.type == "ordered_list" else self.style.bullet
            number += 1
            body = self.blocks(item.children, tight)
            lines = body.split("\n")
            indent = " " * len(marker)
            items.append(marker + "\n".join([lines[0]] + [indent + line if line else line for line in lines[1:]]))
        return ("\n" if tight else "\n\n").join(items)

    def table(self, node):
        rows = []
        for section in node.children:
            for row in section.children:
                rows.append(" | ".join(self.block(cell) for cell in row.children))
        return "\n".join(rows)

    # --- inline ---
    def inline_of(self, node):
        return "".join(self.inline(child.children) for child in node.children)

    def inline(self, nodes):
        return "".join(self.span(node) for node in nodes)

    def span(self, node):
        kind, style = node.type, self.style
        if kind == "text":
            return style.text(node.content)
        if kind in ("softbreak", "hardbreak"):
            return "\n"
        if kind == "code_inline":
            return style.code(node.content, self.in_link)
        if kind == "strong":
            return style.strong(self.inline(node.children))
        if kind == "em":
            return style.em(self.inline(node.children))
        if kind == "s":
            return style.strike(self.inline(node.children))
        if kind == "link":
            was, self.in_link = self.in_link, True
            try:
                inner = self.inline(node.children)
            finally:
                self.in_link = was
            return style.link(inner, str(node.attrs.get("href", "")), autolink=node.markup == "autolink")
        if kind == "image":
            return style.image(style.text(node.content), str(node.attrs.get("src", "")), self.in_link)
        return style.text(node.content) + self.inline(node.children)


def _render(text, style, name):
    try:
        rendered = _Walk(style).blocks(SyntaxTreeNode(_PARSER.parse(text)).children).strip("\n")
    except Exception as exc:  # a parser or renderer bug must not lose the message
        # The type only: an exception's text or traceback may quote the message, which stays out of the log.
        logger.error("Rendering a message as %s failed (%s); sending it as written", name, type(exc).__name__)
        return None
    return rendered if rendered.strip() else None


def to_telegram_html(text: str) -> str:
    """Telegram HTML (parse_mode="HTML"); the text escaped, as written, if it cannot be rendered."""
    rendered = _render(text, _Telegram(), "Telegram HTML")
    return rendered if rendered is not None else _escape(text)


def to_whatsapp(text: str) -> str:
    rendered = _render(text, _WhatsApp(), "WhatsApp markup")
    return rendered if rendered is not None else text


def to_plain(text: str) -> str:
    rendered = _render(text, _Style(), "plain text")
    return rendered if rendered is not None else text


def to_email_html(text: str) -> str:
    """The body of an HTML email part: markdown-it-py's HTML, raw HTML in the text escaped."""
    try:
        return _EMAIL.render(text)
    except Exception as exc:  # as in _render: the text, escaped, rather than nothing
        logger.error("Rendering a message as email HTML failed (%s); sending it escaped", type(exc).__name__)
        return f"<p>{html.escape(text)}</p>"
