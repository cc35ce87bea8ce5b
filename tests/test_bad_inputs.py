"""The bad-input table (docs/bad-inputs.md), row by row over a real socket, plus a property test."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core import text as text_rules
from helpers import rejected, token_issued_at
from realtime import protocol

MAX = 2000

# (id, frame sent, what must come back: ("error", code) or ("message", stored text))
TABLE = [
    ("binary", b"\x00\x01", ("error", "unsupported")),
    ("non-json", "just words", ("message", "just words")),
    ("json-array", '["a", 1]', ("message", '["a", 1]')),
    ("json-string", '"quoted"', ("message", '"quoted"')),
    ("broken-json", '{"type": "message", "text": "hi"', ("error", "bad_request")),
    ("wrong-type", '{"type": "message", "text": 42}', ("error", "bad_request")),
    ("missing-text", '{"type": "message"}', ("error", "bad_request")),
    ("missing-type", '{"text": "hi"}', ("error", "bad_request")),
    ("unknown-type", '{"type": "delete_everything"}', ("error", "unknown_type")),
    ("deep-json", '{"a":' * 10_000 + "1" + "}" * 10_000, ("error", "bad_request")),
    ("deep-brackets", "[" * 30_000 + "]" * 30_000, ("error", "too_long")),
    (
        "huge-number",
        '{"type": "message", "text": "x", "n": ' + "9" * 5000 + "}",
        ("error", "bad_request"),
    ),
    ("nan", '{"type": "message", "text": NaN}', ("error", "bad_request")),
    ("infinity", '{"type": "message", "text": "x", "n": -Infinity}', ("error", "bad_request")),
    ("empty", "", ("error", "empty")),
    ("whitespace", " \t\n ", ("error", "empty")),
    ("ideographic-space", "\u3000\u3000", ("error", "empty")),
    ("zero-width", "\u200b\u200d\ufeff", ("error", "empty")),
    ("exactly-the-limit", "x" * MAX, ("message", "x" * MAX)),
    ("limit-plus-one", "x" * (MAX + 1), ("error", "too_long")),
    ("ten-thousand", "x" * 10_000, ("error", "too_long")),
    ("script", "<script>alert(1)</script>", ("message", "<script>alert(1)</script>")),
    ("img-onerror", "<img src=x onerror=alert(1)>", ("message", "<img src=x onerror=alert(1)>")),
    ("javascript-url", "javascript:alert(1)", ("message", "javascript:alert(1)")),
    ("nul", "a\x00b", ("error", "bad_text")),
    ("ansi-escape", "\x1b[2J\x1b[31mred", ("error", "bad_text")),
    ("bidi-override", "abc\u202edcba", ("message", "abc\u202edcba")),
    ("lone-surrogate", '{"type": "message", "text": "\\ud800"}', ("error", "bad_request")),
    (
        "claims-another-user",
        '{"type": "message", "text": "hi", "user": "bob", "user_id": 2}',
        ("message", "hi"),
    ),
]


@pytest.fixture
def pair(ws_connect, make_user):
    """Alice, who sends the bad input, and Bob, who must see only what is valid."""
    alice, bob = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    a, b = ws_connect(alice), ws_connect(bob)
    a.await_presence(online=[bob])
    b.settle_presence()
    return a, b, alice


@pytest.mark.parametrize(
    ("frame", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_bad_input_row(pair, frame, expected):
    a, b, alice = pair
    a.send(frame)
    answer = a.recv()
    kind, value = expected
    if kind == "error":
        assert (answer["type"], answer["code"]) == ("error", value)
        assert answer["message"]
    else:
        assert (answer["type"], answer["text"], answer["user_id"]) == ("message", value, alice)
        assert b.recv() == answer  # Stored verbatim, sent as the real sender.
    a.send("still served")  # The socket survives every row.
    assert a.recv()["text"] == "still served"
    # Bob's next frame, stored after the row: nothing else of it reached anyone else.
    assert b.recv()["text"] == "still served"


def test_invalid_utf8_closes_with_1007(pair):
    a, b, alice = pair
    a.ws.send(b"\xff\xfe", text=True)
    with pytest.raises(ConnectionClosed) as closed:
        a.recv()
    assert closed.value.rcvd.code == 1007
    b.await_presence(offline=[alice])
    b.send("others carry on")
    assert b.recv()["text"] == "others carry on"


@pytest.mark.parametrize("compression", ["deflate", None], ids=["inflates-past-limit", "plain"])
def test_frames_over_the_limit_close_with_1009(app, live_server, make_user, compression):
    alice = make_user()[0]
    url = f"ws://{live_server}/ws?token={token_issued_at(app, alice)}"
    with connect(url, compression=compression, max_size=None, open_timeout=5) as ws:
        ws.recv(timeout=5)
        # Compressed, a megabyte of "x" is a frame of about a kilobyte on the wire.
        ws.send("x" * 1_000_000)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1009


def test_nesting_100000_deep_is_over_the_frame_limit(pair):
    a, _, _ = pair
    a.ws.send("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConnectionClosed) as closed:
        a.recv()
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize(
    "make_token",
    [
        lambda app, uid: token_issued_at(app, uid)[:-6] + "forged",
        lambda app, uid: token_issued_at(app, uid, seconds_ago=10_000),
        lambda app, uid: token_issued_at(app, uid, salt="other-salt"),
        lambda app, uid: URLSafeTimedSerializer(
            "a-retired-key-no-longer-listed-anywhere", salt=app.config["CHAT_TOKEN_SALT"]
        ).dumps({"uid": uid, "v": 0}),
        lambda app, uid: token_issued_at(app, uid + 1000),
        lambda app, uid: token_issued_at(app, uid, version=-1),
    ],
    ids=["forged", "expired", "other-salt", "retired-key", "deleted-user", "revoked"],
)
def test_bad_tokens_never_open_a_socket(app, live_server, make_user, make_token):
    alice = make_user()[0]
    response = rejected(live_server, f"?token={make_token(app, alice)}")
    assert response.status_code == 401
    assert json.loads(response.body)["error"] in {"invalid_token", "expired_token"}


def test_bad_origin(app, live_server, make_user):
    alice = make_user()[0]
    response = rejected(
        live_server, f"?token={token_issued_at(app, alice)}", {"Origin": "https://evil.example"}
    )
    assert response.status_code == 403


@pytest.mark.database
def test_after_the_whole_table_everyone_is_still_served(pair):
    a, b, _ = pair
    for _, frame, _ in TABLE:
        a.send(frame)
        a.recv()
    valid = [expected[1] for _, _, expected in TABLE if expected[0] == "message"]
    assert [b.recv()["text"] for _ in valid] == valid
    b.send("bob carries on")
    assert a.recv()["text"] == "bob carries on"


# ---- Property: the frame handler never raises, and never lets anything invalid through --------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
frames = st.one_of(
    st.text(),
    st.binary(),
    st.builds(
        lambda kind, fields: json.dumps({"type": kind, **fields}),
        st.sampled_from(
            ["message", "switch", "history", "typing", "read", "open_dm", "create_room", "x"]
        ),
        st.dictionaries(
            st.sampled_from(
                ["text", "room", "client_id", "before", "limit", "id", "user_id", "name"]
            ),
            json_values,
        ),
    ),
)


PARSE_ERRORS = {"unsupported", "bad_request", "unknown_type", "empty", "too_long", "bad_text"}


def parse_outcome(data):
    """``(command, None)`` or ``(None, FrameError)``: any other exception fails the test."""
    try:
        return protocol.parse_frame(data, MAX), None
    except protocol.FrameError as error:
        return None, error


@settings(max_examples=500, deadline=None)
@given(frames)
def test_parse_frame_never_raises_and_never_passes_invalid_text(data):
    command, error = parse_outcome(data)
    if error is not None:
        assert error.code in PARSE_ERRORS | {"bad_room_name"}
        assert error.message
        return
    if isinstance(command, protocol.ChatMessage):
        text = command.text
        assert 0 < len(text) <= MAX
        assert text == text.strip()
        assert text_rules.is_unicode(text)
        assert not text_rules.has_control_characters(text)
        protocol.encode({"text": text, "client_id": command.client_id})  # Always encodable.
