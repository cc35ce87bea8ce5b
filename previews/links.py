"""The link of a message that gets a preview: its first http(s) link, as the page shows it.

Read from the message's rendered HTML (``core.formatting.render``, cached for the broadcast
that just rendered it), so it is exactly what the Markdown renderer linkifies: a bare URL, an
autolink or a ``[text](url)`` link, never anything inside a code span or block, never a
``mailto:``.
"""

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from core.formatting import render
from previews.opengraph import MAX_URL_CHARS

SCHEMES = ("http", "https")
# A scheme, or a dot before a letter (a domain's): what every link the renderer makes contains.
_MAYBE_LINK = re.compile(r"://|\.[^\W\d_]")


class _FirstLink(HTMLParser):
    """The ``href`` of the first ``<a>`` whose target is http(s)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a" or self.found is not None:
            return
        href = dict(attrs).get("href") or ""
        if urlsplit(href).scheme.lower() in SCHEMES:
            self.found = href


def may_have_link(text: str) -> bool:
    """A cheap first test, on the committer's thread: could ``text`` hold a link at all?"""
    return _MAYBE_LINK.search(text) is not None


def first_link(text: str) -> str | None:
    """The first http(s) link the page shows in ``text``; None if none (or one too long)."""
    html = render(text)
    if html is None or "<a " not in html:
        return None
    reader = _FirstLink()
    reader.feed(html)
    reader.close()
    url = reader.found
    if url is None or len(url) > MAX_URL_CHARS or not urlsplit(url).hostname:
        return None
    return url
