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
    # The same, for a message that mentions the reader.
    "mention_room": _l("{name} mentioned you in #{room}"),
    "mention_direct": _l("{name} mentioned you (direct message)"),
    # Read by screen readers after the mention count badge of a room.
    "mentions_one": _l("{count} unread mention"),
    "mentions_other": _l("{count} unread mentions"),
    # A message: edited (the tooltip has when), deleted, and a reply's quote of its parent.
    "edited": _l("edited"),
    # Next to the name of a bot (an automated account) on its messages.
    "bot_badge": _l("bot"),
    "mentions_you": _l("mentions you"),
    "edited_at": _l("Edited {time}"),
    "message_deleted": _l("Message deleted"),
    "in_reply_to": _l("In reply to"),
    "reply_deleted": _l("deleted message"),
    "reply_parent_gone": _l("That message is no longer in this room's history."),
    # A message's reactions: one button per emoji; {who} is a "reacted_…" string.
    "reactions_label": _l("Reactions"),
    "reaction_label": _l("{emoji} {count}: {who}"),
    # {names} is a list already joined in the page's language; it may end with "reacted_others".
    "reacted_by": _l("{names} reacted"),
    "reacted_others_one": _l("{count} other"),
    "reacted_others_other": _l("{count} others"),
    "reacted_count_one": _l("{count} person reacted"),
    "reacted_count_other": _l("{count} people reacted"),
    # The buttons shown on a message when it is hovered or focused: {name} is its author.
    "actions_label": _l("Actions on the message from {name}"),
    "reply": _l("Reply"),
    "react": _l("React"),
    "edit": _l("Edit"),
    "delete": _l("Delete"),
    # On one's own message with a link preview: takes the preview off (for everyone).
    "remove_preview": _l("Remove preview"),
    "cancel": _l("Cancel"),
    "delete_question": _l("Delete this message? Everyone will see that it was deleted."),
    # The reaction picker.
    "picker_label": _l("Pick a reaction"),
    "picker_other": _l("Any emoji"),
    "picker_add": _l("Add"),
    # Above the composer while replying or editing.
    "replying_to": _l("Replying to {name}: {text}"),
    "editing": _l("Editing your message: Enter saves, Escape cancels."),
    "cancel_reply": _l("Cancel the reply"),
    "cancel_edit": _l("Cancel editing"),
    # The list of people shown after "@" in the composer.
    "mention_list": _l("People to mention"),
    # The search panel, under the search box: its state, and how many results it shows.
    "search_busy": _l("Searching…"),
    "search_none": _l("No results."),
    "search_failed": _l("The search failed. Try again in a moment."),
    "search_count_one": _l("{count} result"),
    "search_count_other": _l("{count} results"),
    "search_count_more_one": _l("{count} result so far; more below"),
    "search_count_more_other": _l("{count} results so far; more below"),
    "search_room_gone": _l("You are no longer in that room."),
    # Next to "Jump to latest" under a search result's room: messages that came meanwhile.
    "newer_waiting_one": _l("{count} new message"),
    "newer_waiting_other": _l("{count} new messages"),
    # A message's files: the list's accessible name, and an image's (it opens full size).
    "attachments_label": _l("Files"),
    "open_image": _l("{name}, open full size"),
    # Read by screen readers after a new message's text: {names} is a list of file names.
    "with_files_one": _l("(file: {names})"),
    "with_files_other": _l("({count} files: {names})"),
    # The tray of files to send, above the composer: each file's state and its remove button.
    "uploading": _l("Uploading…"),
    "uploaded": _l("Ready to send"),
    "upload_progress": _l("Uploading {name}"),
    "upload_failed": _l("The upload failed. Remove the file and try again."),
    "file_too_large": _l("Too large: a file may be at most {size}."),
    "file_empty": _l("This file is empty."),
    "remove": _l("Remove"),
    "remove_file": _l("Remove {name}"),
    "too_many_files": _l("A message may carry at most {count} files."),
    "wait_for_uploads": _l("Your files are still uploading: send once they are ready."),
    "remove_failed_uploads": _l("Remove the files that could not be uploaded, then send."),
    # The name given to a screenshot pasted from the clipboard: {time} is when, {ext} its type.
    "pasted_name": _l("Pasted image {time}.{ext}"),
    # Rooms: read by screen readers before a private room's name (a lock icon for the eye), and
    # shown after an archived room's name in the list.
    "private_room": _l("Private room"),
    "archived_mark": _l("archived"),
    "muted": _l("muted"),
    "leave_question": _l("Leave {room}?"),
    # The room menu's dialogs: their state lines. {room} is "#name", {name} a person's name.
    "not_connected": _l("Not connected: try again in a moment."),
    "saving": _l("Saving…"),
    "loading": _l("Loading…"),
    "invite_heading": _l("Invite people to {room}"),
    "invite": _l("Invite"),
    "nobody_matches": _l("Nobody matches."),
    "nobody_left": _l("Everyone is in this room already."),
    "invite_label": _l("Invite {name}"),
    "inviting": _l("Inviting {name}…"),
    "invited_added": _l("{name} is in the room now."),
    "invited_already": _l("{name} is already in the room."),
    "you_name": _l("{name} (you)"),
    "members_heading": _l("Members of {room}"),
    "remove_member": _l("Remove {name} from the room"),
    "member_removed": _l("{name} is no longer in the room."),
    # An invitation link just made: {until} is a "link_expires"/"link_no_expiry" string, {uses}
    # a "link_uses"/"link_any_uses" one.
    "link_made": _l("Link made ({until}, {uses})."),
    "link_expires": _l("expires {date}"),
    "link_no_expiry": _l("never expires"),
    "link_uses_one": _l("{count} use"),
    "link_uses_other": _l("{count} uses"),
    "link_any_uses": _l("any number of uses"),
    "copied": _l("Copied."),
    "copy_failed": _l("Copying was refused: the link is selected, copy it with Ctrl+C."),
    # Notices under the conversation when someone else changes my rooms.
    "added_you": _l("{name} added you to {room}"),
    "added_you_generic": _l("You were added to {room}"),
    "removed_you": _l("{name} removed you from {room}"),
    "removed_you_generic": _l("You were removed from {room}"),
    "room_deleted": _l("{room} was deleted."),
    # Under the first people listed online in a big room: a button that lists everyone.
    "online_more_one": _l("Show {count} more person"),
    "online_more_other": _l("Show {count} more people"),
}


def catalog() -> Catalog:
    """The current locale (a BCP 47 tag, as ``Intl`` wants) and every string, translated."""
    locale = str(get_locale() or DEFAULT_LOCALE).replace("_", "-")
    return {"locale": locale, "strings": {key: str(text) for key, text in STRINGS.items()}}
