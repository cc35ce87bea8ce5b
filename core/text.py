"""What a message or a name may contain: the rules the pages and the socket share."""

import re
import unicodedata

import emoji

# C0 and C1 control characters but tab and newline: NUL, terminal escapes (ESC), backspace…
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def is_unicode(value: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot: lone surrogates such as ``\\ud800``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_control_characters(text: str) -> bool:
    """True if ``text`` holds a control character other than tab and newline."""
    return _CONTROL.search(text) is not None


def is_invisible(text: str) -> bool:
    """True if nothing in ``text`` would show: only spaces and invisible format characters."""
    return not any(_is_visible(char) for char in text)


def _is_visible(char: str) -> bool:
    """Whitespace and invisible format characters (zero-width space, BOM…) show nothing."""
    return not char.isspace() and unicodedata.category(char) != "Cf"


def is_single_emoji(text: str) -> bool:
    """One emoji: a single grapheme cluster with the Unicode emoji property (skin tones, ZWJ
    sequences, keycaps and flags included), as the ``emoji`` package's data lists them."""
    return emoji.is_emoji(text)
