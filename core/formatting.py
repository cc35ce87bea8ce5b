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
import html
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

# The block and inline rules of CommonMark that the subset uses; every other one is off.
BLOCK_RULES = ["blockquote", "code", "fence", "list", "paragraph"]
INLINE_RULES = ["backticks", "emphasis", "escape", "link", "autolink", "newline", "text"]
TAGS = {"p", "br", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a", "span"}
# "*": the attributes any tag may have: none (ammonia's default allows lang and title).
ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href"},
    "ol": {"start"},
    "span": {"data-user-id"},
    "*": set(),
}
CLASSES = {"span": {"mention"}}  # A mention is the only span.
# A mention of user 42 is written <@42> (as Slack and Discord do): an id, so that it survives
# renames, and text no Markdown rule turns into anything else.
MENTION_MARK = "<@"
_MENTION = re.compile(r"<@([1-9][0-9]{0,15})>")
MAX_MENTIONS = 50  # Distinct people one message may mention; the rest stay text.
EXCERPT_CHARS = 100
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
    # Before autolink, which would otherwise read <@42> as a (failed) link and escape it.
    parser.inline.ruler.before("autolink", "mention", _mention_rule)
    parser.add_render_rule("mention", _render_mention)
    return parser


def _mention_rule(state: StateInline, silent: bool) -> bool:
    """Inline rule: ``<@42>`` is a ``mention`` token of user 42 (never inside code)."""
    if state.src[state.pos] != "<":
        return False
    match = _MENTION.match(state.src, state.pos)
    if match is None:
        return False
    if not silent:
        token = state.push("mention", "", 0)
        token.content = match.group(0)
        token.meta = {"user_id": int(match.group(1))}
    state.pos = match.end()
    return True


def _render_mention(
    _renderer: Any, tokens: Sequence[Token], idx: int, _options: Any, env: Mapping[str, Any]
) -> str:
    """``@name`` for someone the message mentions; anyone else's id stays the text it is."""
    token = tokens[idx]
    user_id = token.meta["user_id"]
    name = env.get("mentions", {}).get(user_id)
    if name is None:
        return html.escape(token.content, quote=False)
    return f'<span class="mention" data-user-id="{user_id}">@{html.escape(name)}</span>'


def format_ts(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attachment_object(attachment: Mapping[str, Any]) -> dict[str, Any]:
    """A file as clients read it (``models.AttachmentData`` with its addresses): in message
    objects and in the answer to an upload. Addresses are relative to the chat's origin."""
    attachment_id = attachment["id"]
    return {
        "id": attachment_id,
        "name": attachment["name"],
        "size": attachment["size"],
        "content_type": attachment["content_type"],
        "url": f"/files/{attachment_id}/{quote(attachment['name'], safe='')}",
        "thumbnail_url": f"/thumbnails/{attachment_id}" if attachment["thumbnail"] else None,
        "width": attachment["width"],
        "height": attachment["height"],
    }


def message_object(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message as it is now (``models.describe``), as every client reads it: in the
    socket's frames (``realtime.protocol.message_frame``) and in the JSON API."""
    edited_at = message["edited_at"]
    mentions = message["mentions"]
    return {
        "type": "message",
        "id": message["id"],
        "room": message["room"],
        "user": message["user"],
        "user_id": message["user_id"],
        # The author's uploaded picture (an immutable address), or None: draw their initials.
        "avatar_url": message.get("avatar_url"),
        "bot": message.get("bot", False),  # The author is a bot (``models.Bot``).
        "text": message["text"],
        "html": render(message["text"], mentions) if message["text"] else None,
        "ts": format_ts(message["created_at"]),
        "client_id": message["client_id"],
        "edited_at": format_ts(edited_at) if edited_at is not None else None,
        "deleted": message["deleted"],
        "reply_to": message["reply_to"],
        "reactions": message["reactions"],
        "mentions": list(mentions),
        "attachments": [attachment_object(a) for a in message.get("attachments", ())],
        "preview": message.get("preview"),  # ``models.PreviewData`` of its first link, or None.
    }


def mentioned_ids(text: str) -> list[int]:
    """The user ids ``text`` mentions, in order of first mention, outside code, at most
    ``MAX_MENTIONS``."""
    if MENTION_MARK not in text:
        return []
    found: dict[int, None] = {}
    for block in _parser().parse(text):
        for token in block.children or ():
            if token.type == "mention" and len(found) < MAX_MENTIONS:
                found[token.meta["user_id"]] = None
    return list(found)


def excerpt(text: str, mentions: Mapping[int, str], limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, its mentions as ``@name``, cut at ``limit`` characters: a quote."""

    def named(match: re.Match[str]) -> str:
        name = mentions.get(int(match.group(1)))
        return match.group(0) if name is None else f"@{name}"

    line = " ".join(_MENTION.sub(named, text).split())
    return line if len(line) <= limit else f"{line[: limit - 1]}…"


def _safe_link(url: str) -> bool:
    """Only ``http``, ``https`` and ``mailto`` targets become links (the sanitizer checks again)."""
    scheme, colon, _rest = url.strip().partition(":")
    return bool(colon) and scheme.lower() in URL_SCHEMES


def render(text: str, mentions: Mapping[int, str] | None = None) -> str | None:
    """The sanitized HTML of ``text``'s Markdown, or None when it formats nothing: then the text
    is shown as it is (most chat lines; the frame stays small). ``mentions`` ({user id: name})
    are the people shown as mentioned; any other ``<@id>`` stays text."""
    return _render(text, tuple(sorted(mentions.items())) if mentions else ())


@functools.lru_cache(maxsize=CACHE_SIZE)
def _render(text: str, mentions: tuple[tuple[int, str], ...]) -> str | None:
    if _is_plain(text):
        return None
    formatted = markdown(text, dict(mentions))
    return None if formatted == f"<p>{_escape(text)}</p>" else formatted


def _escape(text: str) -> str:
    """``text`` as the sanitizer's serializer writes a text node."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown(text: str, mentions: Mapping[int, str] | None = None) -> str:
    """``render`` without its shortcut for plain text: the parser, then the sanitizer."""
    return nh3.clean(
        _parser().render(text, {"mentions": mentions or {}}),
        tags=TAGS,
        attributes=ATTRIBUTES,
        allowed_classes=CLASSES,
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
