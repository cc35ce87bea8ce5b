"""The strings the chat page's script shows, translated on the server and sent as JSON data.

``static/js/i18n.js`` reads them from ``<script type="application/json" id="chat-i18n">`` (data, not
script: the CSP forbids inline script). Placeholders are ``{name}`` braces that the script fills;
plural forms are separate keys (``unread_one``, ``unread_other``) picked with ``Intl.PluralRules``.
"""

from typing import TypedDict

from flask_babel import LazyString, get_locale
from flask_babel import lazy_gettext as _l

DEFAULT_LOCALE = "en"


class Catalog(TypedDict):
    """What the page reads: its locale, and each string by key, translated into it."""

    locale: str
    strings: dict[str, str]


STRINGS: dict[str, LazyString] = {
    # The connection status, top right of the conversation.
    "connecting": _l("Connecting…"),
    "reconnecting": _l("Reconnecting…"),
    "connected": _l("Connected"),
    # Notices under the conversation.
    "too_fast": _l("You sent too many messages too fast. Reconnecting in a moment."),
    "still_connecting": _l(
        "Still connecting: your message is still in the box; send it in a moment."
    ),
    # Tooltip of a message that the server has not confirmed yet.
    "not_sent": _l("Not sent yet"),
    # Accessible names of a room's message list: {room} is a room name, {name} a person's.
    "messages_in": _l("Messages in #{room}"),
    "messages_with": _l("Messages with {name}"),
    # Read by screen readers after the unread count badge of a room.
    "unread_one": _l("{count} unread message"),
    "unread_other": _l("{count} unread messages"),
    "join_room": _l("Join #{room}"),
    # Next to each person in the online list, and its accessible name.
    "message_button": _l("Message"),
    "message_label": _l("Send a direct message to {name}"),
    # {names} is a list already joined in the page's language ("alice, bob and carol").
    "typing_one": _l("{name} is typing…"),
    "typing_other": _l("{names} are typing…"),
    # Who wrote where: a notification's title, and the start of a screen reader announcement.
    "from_room": _l("{name} in #{room}"),
    "from_direct": _l("{name} (direct message)"),
    # A new message read aloud by screen readers: {name} is a person, or a "from_…" string.
    "announce": _l("{name}: {text}"),
}


def catalog() -> Catalog:
    """The current locale (a BCP 47 tag, as ``Intl`` wants) and every string, translated."""
    locale = str(get_locale() or DEFAULT_LOCALE).replace("_", "-")
    return {"locale": locale, "strings": {key: str(text) for key, text in STRINGS.items()}}
