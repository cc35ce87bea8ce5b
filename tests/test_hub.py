"""The hub's delivery rules, on the in-memory backplane (sockets are tested in test_socket)."""

import json
import time

import pytest

from realtime import events
from realtime.hub import Hub
from realtime.transport.frames import Kind, Outgoing, encode_text


class Recorder:
    """Stands in for a ``Connection``: the hub only hands it finished frames."""

    def __init__(self, user_id, name="someone", floor=0, change_floor=0):
        self.user_id, self.name, self.floor = user_id, name, floor
        self.change_floor = change_floor
        self.current = "general"
        self.frames = []

    def send(self, frame):
        assert isinstance(frame, Outgoing)
        assert frame.kind is Kind.MESSAGE
        data = bytes(frame.data)
        # A 2-byte header (FIN + text opcode, length), 4 bytes past 125 bytes, then the text as is.
        header = 2 if data[1] < 126 else 4
        assert data == encode_text(data[header:].decode())
        self.frames.append(data[header:].decode())
        return True

    def queue(self, frame):
        """Under ``Hub.ordered()``: recorded the same; nothing left to flush."""
        return self.send(frame) and False

    def decoded(self):
        """The frames received, as JSON."""
        return [json.loads(frame) for frame in self.frames]


def test_a_socket_skips_messages_it_got_in_its_history():
    hub = Hub()
    conn = Recorder(1, floor=10)
    hub.attach(conn, {7: "general"})
    hub.broadcast_messages(7, [(10, "old")])  # Stored before the socket joined: in its history.
    hub.broadcast_messages(7, [(11, "new")])
    hub.broadcast(7, "presence")  # Not a message: always delivered.
    assert conn.frames == ["new", "presence"]


def test_a_socket_skips_changes_its_greeting_showed():
    hub = Hub()
    early, late = Recorder(1), Recorder(2, change_floor=5)  # late was greeted after change 5
    hub.attach(early, {7: "general"})
    hub.attach(late, {7: "general"})
    hub.attach(Recorder(3), {8: "elsewhere"})
    hub.broadcast_change(7, 5, "change 5")
    hub.broadcast_change(7, 6, "change 6")
    assert early.frames == ["change 5", "change 6"]
    assert late.frames == ["change 6"]


def test_broadcast_reaches_the_room_only_and_can_exclude_a_user():
    hub = Hub()
    alice, bob, carol = Recorder(1), Recorder(2), Recorder(3)
    hub.attach(alice, {7: "general"})
    hub.attach(bob, {7: "general", 8: "dm:1:2"})
    hub.attach(carol, {9: "other"})
    hub.broadcast(7, "to general", exclude_user=1)
    hub.broadcast(8, "to the dm")
    assert (alice.frames, bob.frames, carol.frames) == ([], ["to general", "to the dm"], [])


def test_unsubscribing_stops_delivery_and_moves_the_plain_text_room():
    hub = Hub()
    alice = Recorder(1)
    alice.current = "lobby"
    hub.attach(alice, {7: "general", 8: "lobby"})
    hub.unsubscribe(1, 8, "lobby", "general")
    hub.broadcast(8, "lobby chatter")
    assert alice.frames == []
    assert alice.current == "general"
    assert hub.online(8) == []
    hub.subscribe(1, 8, "lobby")
    hub.broadcast(8, "back")
    assert alice.frames == ["back"]


def test_presence_is_per_user_not_per_socket():
    hub = Hub()
    first, second = Recorder(1, "alice"), Recorder(1, "alice")
    assert hub.attach(first, {7: "general"}) is True
    assert hub.attach(second, {7: "general"}) is False
    assert hub.online(7) == [{"id": 1, "name": "alice"}]
    assert hub.detach(first) == (False, {7: "general"})
    assert hub.detach(second) == (True, {7: "general"})
    assert hub.online(7) == []


def test_online_lists_stay_sorted_by_name_through_arrivals_renames_and_departures():
    hub = Hub()
    zoe, bob, amy = Recorder(1, "zoe"), Recorder(2, "Bob"), Recorder(3, "amy")
    for conn in (zoe, bob, amy):
        hub.attach(conn, {7: "general", 8: "dev"} if conn is not amy else {7: "general"})

    def names(room_id):
        return [person["name"] for person in hub.online(room_id)]

    assert names(7) == ["amy", "Bob", "zoe"]  # Case does not count.
    hub.rename(1, "Adam")
    assert (names(7), names(8)) == (["Adam", "amy", "Bob"], ["Adam", "Bob"])
    second_tab = Recorder(2, "Bob")
    hub.attach(second_tab, {7: "general", 8: "dev"})
    assert names(7) == ["Adam", "amy", "Bob"]  # A second tab is not a second person.
    hub.detach(bob)
    assert names(7) == ["Adam", "amy", "Bob"]
    hub.detach(second_tab)
    hub.unsubscribe(1, 8, "dev", "general")
    assert (names(7), names(8)) == (["Adam", "amy"], [])
    hub.broadcast(7, "still here")
    assert zoe.frames[-1] == amy.frames[-1] == "still here"
    assert (bob.frames, second_tab.frames) == ([], [])


def test_a_tab_greeted_before_a_leave_arrives_keeps_the_rosters_consistent():
    # Another worker's "left dev" event is still on its way when a new tab of the same user,
    # which read the user's rooms after the leave, attaches here without dev. A rename in that
    # window, then the late event, must take that user (and nobody else) off dev's list.
    hub = Hub()
    aaa, mid, zzz = Recorder(1, "aaa"), Recorder(2, "mid"), Recorder(3, "zzz")
    for conn in (aaa, mid, zzz):
        hub.attach(conn, {7: "general", 8: "dev"})
    hub.attach(Recorder(2, "mid"), {7: "general"})
    hub.rename(2, "a")
    assert [p["name"] for p in hub.online(8)] == ["a", "aaa", "zzz"]
    hub.unsubscribe(2, 8, "dev", "general")
    assert [p["name"] for p in hub.online(8)] == ["aaa", "zzz"]
    assert [p["name"] for p in hub.online(7)] == ["a", "aaa", "zzz"]
    hub.broadcast(8, "dev only")
    assert (aaa.frames[-1], zzz.frames[-1]) == ("dev only", "dev only")
    assert "dev only" not in mid.frames


def test_a_storm_of_arrivals_is_one_presence_frame_per_room():
    hub = Hub()
    watcher = Recorder(1, "watcher")
    hub.attach(watcher, {7: "general", 8: "dev"})
    arrivals = [Recorder(uid, f"user{uid}") for uid in range(2, 102)]
    for conn in arrivals:
        hub.attach(conn, {7: "general"})
        hub.presence.note(7, "general", conn.user_id, conn.name)
    gone = arrivals[0]
    hub.detach(gone)  # Came and went within one batch: offline is where they are now.
    hub.presence.note(7, "general", gone.user_id, gone.name)
    assert hub.presence.flush() == 1
    assert watcher.decoded() == [
        {
            "type": "presence",
            "room": "general",
            "online": [{"user_id": uid, "user": f"user{uid}"} for uid in range(3, 102)],
            "offline": [{"user_id": 2, "user": "user2"}],
            "count": 100,
        }
    ]
    assert all(conn.frames == watcher.frames for conn in arrivals[1:])
    assert hub.presence.flush() == 0  # Nothing new: nothing sent.


def test_a_lone_arrival_is_not_echoed_but_a_rename_is():
    hub = Hub()
    alice, bob = Recorder(1, "alice"), Recorder(2, "bob")
    hub.attach(alice, {7: "general"})
    hub.attach(bob, {7: "general"})
    hub.presence.note(7, "general", 2, "bob")
    hub.presence.flush()
    assert (len(alice.frames), bob.frames) == (1, [])
    hub.rename(2, "Bobby")
    hub.presence.note(7, "general", 2, "Bobby", echo=True)
    hub.presence.flush()
    assert bob.decoded()[0]["online"] == [{"user_id": 2, "user": "Bobby"}]


def test_the_flusher_sends_a_batch_within_its_interval():
    hub = Hub(presence_interval=0.01)
    watcher, bob = Recorder(1, "watcher"), Recorder(2, "bob")
    hub.attach(watcher, {7: "general"})
    hub.start()
    try:
        hub.attach(bob, {7: "general"})
        hub.presence.note(7, "general", 2, "bob")
        deadline = time.monotonic() + 10
        while not watcher.frames and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        hub.stop()
    assert watcher.decoded()[0]["online"] == [{"user_id": 2, "user": "bob"}]


class RawRecorder(Recorder):
    """Keeps the bytes it is handed, whole (a batch of messages is one piece)."""

    def send(self, frame):
        self.frames.append(bytes(frame.data))
        return True


def test_a_batch_of_messages_is_one_piece_per_socket_but_respects_floors():
    hub = Hub()
    early, late = RawRecorder(1), RawRecorder(2, floor=11)  # late joined after message 11
    hub.attach(early, {7: "general"})
    hub.attach(late, {7: "general"})
    hub.broadcast_messages(7, [(10, "ten"), (11, "eleven"), (12, "twelve")])
    assert early.frames == [b"".join(encode_text(t) for t in ("ten", "eleven", "twelve"))]
    assert late.frames == [encode_text("twelve")]


@pytest.mark.parametrize(
    "event",
    [
        events.ToRoom(3, exclude=2),
        events.Messages(3, (7, 8)),
        events.Change(3, 41),
        events.ToUser(2),
        events.ToAll(),
        events.CloseUser(2, 4001, "bye"),
        events.Subscribe(2, 3, "python"),
        events.Unsubscribe(2, 3, "python", "general"),
        events.Rename(2, "bobby"),
    ],
    ids=lambda event: event.kind,
)
def test_every_event_survives_the_backplane_encoding(event):
    assert events.decode(events.encode(event)) == event
    assert events.KINDS[event.kind] is type(event)
