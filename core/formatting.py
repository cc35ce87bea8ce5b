"""Message text as safe HTML: a Markdown subset (markdown-it-py), then a sanitizer (nh3).

What people type stays the message's ``text`` (Postman and websocat see exactly that); ``html``
is derived from it for the page, and is None when the text formats nothing. The subset:
emphasis, strong, strike-through, inline code, fenced code blocks, block quotes, lists, links,
and bare URLs made links. Raw HTML is never rendered: the parser escapes it, and the sanitizer
keeps only the tags the subset makes, with ``http``, ``https`` and ``mailto`` links opened in a
new tab with ``rel="noopener noreferrer nofollow"``. Headings, images, tables and rules stay the
text they were typed as.
"""

import functools
import re

import nh3
from markdown_it import MarkdownIt

# The block and inline rules of CommonMark that the subset uses; every other one is off.
BLOCK_RULES = ["blockquote", "code", "fence", "list", "paragraph"]
INLINE_RULES = ["backticks", "emphasis", "escape", "link", "autolink", "newline", "text"]
TAGS = {"p", "br", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a"}
# "*": the attributes any tag may have: none (ammonia's default allows lang and title).
ATTRIBUTES: dict[str, set[str]] = {"a": {"href"}, "ol": {"start"}, "*": set()}
URL_SCHEMES = {"http", "https", "mailto"}
# Text that no rule of the subset can change: one line of letters, digits, spaces and harmless
# punctuation, with ":" only where no scheme can precede it (no ASCII letter anywhere) and "."
# only ending a sentence or between digits (no domain, no numbered list). Most chat lines are
# such: they skip the parser (about 50 µs a message). A property test holds it to its output.
_SPECIAL = r"\-*_~`\[\]<>!\\&#+=|()@/"  # Inside a character class: Markdown's, HTML's, links'.
_PLAIN = re.compile(rf"[^\s{_SPECIAL}.:](?:[^\n\r\t{_SPECIAL}]*[^\s{_SPECIAL}])?")
_LETTER = re.compile(r"[A-Za-z]")
# A "." inside a word could start a domain; one between two digits (3.14, 1.2.3) cannot: a
# domain ends in letters, and bare IP addresses are not linked.
_DOMAIN_DOT = re.compile(r"(?<!\d)\.(?=\S)|\.(?=[^\s\d])")
_LIST_ITEM = re.compile(r"\d{1,9}\.(?:\s|$)")

# Rendered messages kept: a broadcast renders once, history pages mostly hit recent messages.
CACHE_SIZE = 4096


@functools.cache
def _parser() -> MarkdownIt:
    """CommonMark without raw HTML, reduced to the subset, with strike-through and linkify."""
    parser = MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True})
    parser.disable(parser.get_all_rules()["block"])
    parser.disable(parser.get_all_rules()["inline"])
    parser.enable([*BLOCK_RULES, *INLINE_RULES, "strikethrough", "linkify"])
    parser.validateLink = _safe_link  # type: ignore[method-assign]  # markdown-it's documented hook
    return parser


def _safe_link(url: str) -> bool:
    """Only ``http``, ``https`` and ``mailto`` targets become links (the sanitizer checks again)."""
    scheme, colon, _rest = url.strip().partition(":")
    return bool(colon) and scheme.lower() in URL_SCHEMES


@functools.lru_cache(maxsize=CACHE_SIZE)
def render(text: str) -> str | None:
    """The sanitized HTML of ``text``'s Markdown, or None when it formats nothing: then the text
    is shown as it is (most chat lines; the frame stays small)."""
    if _is_plain(text):
        return None
    html = markdown(text)
    return None if html == f"<p>{_escape(text)}</p>" else html


def _escape(text: str) -> str:
    """``text`` as the sanitizer's serializer writes a text node."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown(text: str) -> str:
    """``render`` without its shortcut for plain text: the parser, then the sanitizer."""
    return nh3.clean(
        _parser().render(text),
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    ).strip()


def _is_plain(text: str) -> bool:
    """True if the parser would return ``text`` as one paragraph, unchanged (see ``_PLAIN``)."""
    if not text.isprintable() or not _PLAIN.fullmatch(text):
        return False
    if ":" in text and _LETTER.search(text):
        return False
    return not (_DOMAIN_DOT.search(text) or _LIST_ITEM.match(text))
