"""The frame-parsing table and the server frames, without any I/O."""

import json
from datetime import UTC, datetime

import pytest

from realtime import protocol
from realtime.protocol import ChatMessage, FrameError, parse_frame

MAX = 20


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("hello", ChatMessage("hello")),
        ("  padded \n", ChatMessage("padded")),
        ("line one\nline two", ChatMessage("line one\nline two")),
        ('"a JSON string"', ChatMessage('"a JSON string"')),
        ("[1, 2]", ChatMessage("[1, 2]")),
        ("42", ChatMessage("42")),
        ("<script>x</script>", ChatMessage("<script>x</script>")),
        ("x" * MAX, ChatMessage("x" * MAX)),
        ('{"type": "message", "text": "hi"}', ChatMessage("hi")),
        ('{"type": "message", "text": " hi ", "client_id": "c1"}', ChatMessage("hi", "c1")),
        ('{"type": "message", "text": "hi", "client_id": null}', ChatMessage("hi")),
        ('{"type": "message", "text": "hi", "user": "mallory"}', ChatMessage("hi")),
        ('  {"type": "message", "text": "hi"}', ChatMessage("hi")),
    ],
)
def test_accepted_frames(data, expected):
    assert parse_frame(data, MAX) == expected


@pytest.mark.parametrize(
    ("data", "code", "client_id"),
    [
        (b"binary", "unsupported", None),
        ("", "empty", None),
        ("   \n\t ", "empty", None),
        ("\u3000\u200b\ufeff", "empty", None),
        ("x" * (MAX + 1), "too_long", None),
        ("{not json}", "bad_request", None),
        ('{"type": "message", "text": "hi"', "bad_request", None),
        ('{"type": "message", "text": NaN}', "bad_request", None),
        ('{"type": "message", "text": "hi", "n": Infinity}', "bad_request", None),
        ('{"type": "message", "text": "hi", "n": ' + "9" * 5000 + "}", "bad_request", None),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "bad_request", None),
        ('{"text": "no type"}', "bad_request", None),
        ('{"type": 7, "text": "hi"}', "bad_request", None),
        ('{"type": "message"}', "bad_request", None),
        ('{"type": "message", "text": 5}', "bad_request", None),
        ('{"type": "message", "text": ["a"]}', "bad_request", None),
        ('{"type": "message", "text": "hi", "client_id": 5}', "bad_request", None),
        ('{"type": "message", "text": "hi", "client_id": ""}', "bad_request", None),
        ('{"type": "message", "text": "hi", "client_id": "' + "c" * 65 + '"}', "bad_request", None),
        ('{"type": "shout", "text": "hi", "client_id": "c2"}', "unknown_type", "c2"),
        ('{"type": "message", "text": "  ", "client_id": "c3"}', "empty", "c3"),
        (
            '{"type": "message", "text": "' + "y" * (MAX + 1) + '", "client_id": "c4"}',
            "too_long",
            "c4",
        ),
        ('{"type": "message", "text": 1, "client_id": "c5"}', "bad_request", "c5"),
        ('{"type": "message", "text": "\\ud800", "client_id": "c6"}', "bad_request", "c6"),
        ('{"type": "message", "text": "hi", "client_id": "\\udfff"}', "bad_request", None),
    ],
)
def test_refused_frames(data, code, client_id):
    with pytest.raises(FrameError) as caught:
        parse_frame(data, MAX)
    assert caught.value.code == code
    assert caught.value.client_id == client_id
    assert caught.value.message


def test_length_is_counted_after_trimming():
    assert parse_frame("  " + "x" * MAX + "  ", MAX).text == "x" * MAX


def test_client_id_of_exactly_64_characters_is_accepted():
    frame = json.dumps({"type": "message", "text": "hi", "client_id": "c" * 64})
    assert parse_frame(frame, MAX).client_id == "c" * 64


def test_message_frame_has_utc_timestamp_and_client_id():
    stored = {
        "id": 3,
        "room": "general",
        "user_id": 1,
        "user": "alice",
        "avatar_url": "/avatars/1/0123456789abcdef.webp",
        "text": "hi",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "client_id": "c1",
        "edited_at": None,
        "deleted": False,
        "reply_to": None,
        "reactions": [],
        "mentions": {},
        "attachments": [],
    }
    assert protocol.message_frame(stored) == {
        "type": "message",
        "id": 3,
        "room": "general",
        "user": "alice",
        "user_id": 1,
        "avatar_url": "/avatars/1/0123456789abcdef.webp",
        "text": "hi",
        "html": None,  # Nothing to format: show the text.
        "ts": "2026-01-02T03:04:05.678Z",
        "client_id": "c1",
        "edited_at": None,
        "deleted": False,
        "reply_to": None,
        "reactions": [],
        "mentions": [],
        "attachments": [],
        "bot": False,
        "preview": None,
    }


def test_encode_is_compact_and_keeps_unicode():
    assert protocol.encode({"type": "x", "text": "été"}) == '{"type":"x","text":"été"}'


def test_error_frame_shape():
    assert protocol.error_frame("empty", "The message is empty.", "c1") == {
        "type": "error",
        "code": "empty",
        "message": "The message is empty.",
        "client_id": "c1",
    }


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "message", "text": "hi", "room": "Dev"}, protocol.ChatMessage("hi", None, "dev")),
        ({"type": "switch", "room": "dev"}, protocol.Switch("dev")),
        ({"type": "create_room", "name": " Café-2 "}, protocol.CreateRoom("Café-2")),
        ({"type": "join_room", "room": "DEV"}, protocol.JoinRoom("dev")),
        ({"type": "leave_room", "room": "dev"}, protocol.LeaveRoom("dev")),
        ({"type": "open_dm", "user_id": 7}, protocol.OpenDirect(7)),
        ({"type": "history", "room": "dev"}, protocol.History("dev", None, 50)),
        (
            {"type": "history", "room": "dev", "before": 9, "limit": 100},
            protocol.History("dev", 9, 100),
        ),
        ({"type": "typing", "room": "dm:1:2"}, protocol.Typing("dm:1:2")),
        (
            {"type": "read", "room": "dev", "id": 12, "client_id": "r"},
            protocol.Read("dev", 12, "r"),
        ),
    ],
)
def test_room_frames(frame, expected):
    assert parse_frame(json.dumps(frame), MAX) == expected


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "switch"}, "bad_request"),
        ({"type": "switch", "room": ""}, "bad_request"),
        ({"type": "switch", "room": "r" * 81}, "bad_request"),
        ({"type": "switch", "room": 5}, "bad_request"),
        ({"type": "message", "text": "hi", "room": ["general"]}, "bad_request"),
        ({"type": "create_room", "name": "two words"}, "bad_room_name"),
        ({"type": "create_room", "name": "-dash"}, "bad_room_name"),
        ({"type": "create_room", "name": "dm:1:2"}, "bad_room_name"),
        ({"type": "create_room", "name": "x" * 33}, "bad_room_name"),
        ({"type": "create_room", "name": ""}, "bad_room_name"),
        ({"type": "create_room"}, "bad_request"),
        ({"type": "open_dm", "user_id": "7"}, "bad_request"),
        ({"type": "open_dm", "user_id": True}, "bad_request"),
        ({"type": "open_dm", "user_id": 0}, "bad_request"),
        ({"type": "open_dm", "user_id": 2**60}, "bad_request"),
        ({"type": "history", "room": "dev", "limit": 101}, "bad_request"),
        ({"type": "history", "room": "dev", "limit": 0}, "bad_request"),
        ({"type": "history", "room": "dev", "before": -1}, "bad_request"),
        ({"type": "history", "room": "dev", "before": 1.5}, "bad_request"),
        ({"type": "read", "room": "dev"}, "bad_request"),
    ],
)
def test_refused_room_frames(frame, code):
    with pytest.raises(FrameError) as caught:
        parse_frame(json.dumps(frame), MAX)
    assert caught.value.code == code


def test_resume_frame():
    frame = '{"type": "resume", "rooms": {"General": 5, "dm:1:2": 0}}'
    assert protocol.parse_resume(frame) == protocol.Resume({"general": 5, "dm:1:2": 0})
    assert protocol.parse_resume('{"type": "resume", "rooms": {}}') == protocol.Resume({})
    with_changes = '{"type": "resume", "rooms": {}, "changes": 7}'
    assert protocol.parse_resume(with_changes) == protocol.Resume({}, 7)


@pytest.mark.parametrize(
    "rooms",
    ["[]", '{"general": -1}', '{"general": "5"}', '{"": 1}', '{"general": 1.0}', "null"],
)
def test_bad_resume_frame(rooms):
    with pytest.raises(FrameError):
        protocol.parse_resume('{"type": "resume", "rooms": ' + rooms + "}")


@pytest.mark.parametrize("data", ["general", "{", '{"type": "message"}', b"{}"])
def test_first_frame_that_is_not_a_resume(data):
    with pytest.raises(FrameError):
        protocol.parse_resume(data)


def test_too_many_rooms_to_resume():
    rooms = {f"r{n}": 1 for n in range(protocol.MAX_RESUME_ROOMS + 1)}
    with pytest.raises(FrameError):
        protocol.parse_resume(json.dumps({"type": "resume", "rooms": rooms}))
