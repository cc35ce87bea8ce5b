"""What a page says about itself: its OpenGraph tags, else its ``<title>`` and meta description.

Pure: bytes in, a ``Card`` out, no I/O. The bytes are decoded with the charset the response's
``Content-Type`` names, else the one a ``<meta charset>`` (or its ``http-equiv`` form) names
in the first bytes, else UTF-8; what does not decode is replaced. Only the ``<head>`` matters:
parsing stops at ``<body>``. The standard library's tolerant parser reads broken HTML too.
"""

import codecs
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

# Stored lengths (``models.LinkPreview``); what is longer is cut, with an ellipsis.
MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 1000
MAX_SITE_NAME_CHARS = 100
MAX_URL_CHARS = 2048
SNIFF_BYTES = 4096  # Where a <meta charset> must be (HTML says 1024; pages are sloppy).
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Card:
    """What a preview shows, as the page said it (the image an absolute http(s) address)."""

    title: str = ""
    description: str = ""
    site_name: str = ""
    image: str | None = None

    @property
    def worth_showing(self) -> bool:
        """A card needs at least a title or a description."""
        return bool(self.title or self.description)


def charset_of(content_type: str) -> str | None:
    """The ``charset`` parameter of a ``Content-Type``, if Python knows it."""
    for parameter in content_type.split(";")[1:]:
        name, _equals, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return _known(value.strip().strip("\"'"))
    return None


def _known(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode(body: bytes, content_type: str) -> str:
    """``body`` as text: the header's charset, else the page's ``<meta>``, else UTF-8."""
    charset = charset_of(content_type)
    if charset is None:
        found = _META_CHARSET.search(body[:SNIFF_BYTES])
        charset = _known(found.group(1).decode("ascii")) if found else None
    if body.startswith(codecs.BOM_UTF8):
        charset = "utf-8-sig"
    return body.decode(charset or "utf-8", errors="replace")


class _HeadReader(HTMLParser):
    """Collects the ``<meta>`` properties and the ``<title>`` of a page's head."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}  # The first value of each name or property.
        self.title: list[str] = []
        self.in_title = False
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done:
            return
        if tag == "body":
            self.done = True
        elif tag == "title" and not self.title:
            self.in_title = True
        elif tag == "meta":
            values = {name.lower(): value or "" for name, value in attrs}
            key = (values.get("property") or values.get("name") or "").strip().lower()
            if key and "content" in values:
                self.meta.setdefault(key, values["content"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag == "head":
            self.done = True

    def handle_data(self, data: str) -> None:
        if self.in_title and not self.done:
            self.title.append(data)


def parse(body: bytes, content_type: str, page_url: str) -> Card:
    """The card of the HTML page in ``body`` (fetched from ``page_url``, after redirects)."""
    reader = _HeadReader()
    text = decode(body, content_type)
    # Fed in pieces so that parsing stops at the body: most of a page is never looked at.
    for start in range(0, len(text), 8192):
        reader.feed(text[start : start + 8192])
        if reader.done:
            break
    reader.close()
    meta = reader.meta
    title = meta.get("og:title") or meta.get("twitter:title") or "".join(reader.title)
    description = (
        meta.get("og:description")
        or meta.get("twitter:description")
        or meta.get("description")
        or ""
    )
    image = meta.get("og:image:secure_url") or meta.get("og:image") or meta.get("twitter:image")
    return Card(
        title=_clip(title, MAX_TITLE_CHARS),
        description=_clip(description, MAX_DESCRIPTION_CHARS),
        site_name=_clip(meta.get("og:site_name", ""), MAX_SITE_NAME_CHARS),
        image=_absolute(image, page_url) if image else None,
    )


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, without control characters, at most ``limit`` characters."""
    line = _SPACES.sub(" ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return line if len(line) <= limit else f"{line[: limit - 1].rstrip()}…"


def _absolute(address: str, page_url: str) -> str | None:
    """An image's address made absolute against the page's; None unless http(s)."""
    url = urljoin(page_url, address.strip())
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or len(url) > MAX_URL_CHARS:
        return None
    return url
