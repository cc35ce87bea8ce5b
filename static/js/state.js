// All of the page's mutable state, in one object. Modules read and change it here; nothing else
// keeps state of its own (the DOM aside).

import { root } from "./dom.js";
import { GENERAL } from "./protocol.js";

export const state = {
  // name: renames follow; admin: may delete anyone's message (the server checks it again).
  me: {
    id: Number(root.dataset.userId),
    name: root.dataset.userName,
    admin: root.dataset.userAdmin === "true",
  },
  token: root.dataset.token, // for the next socket; a fresh one is fetched before each reconnect
  socket: null,
  greeted: false, // Nothing but the resume frame may be sent before the server's hello.
  resumed: new Set(), // Rooms this connection asked to resume.
  attempt: 0, // Reconnection attempts since the last hello: the backoff's exponent.
  current: GENERAL, // The room on screen.
  // A room this tab asked for (created, joined, DM, or named by /?room= after an invitation
  // link): show it when it arrives.
  wantRoom: new URLSearchParams(location.search).get("room"),
  wantPrivate: null, // The name of a private room this tab created: its key is the server's.
  rooms: new Map(), // room key -> room record, see newRoom() in rooms.js
  // client_id -> { client_id, kind: "message" | "change", frame, room, queued_at, element }:
  // sent or typed, not confirmed yet; kept in localStorage too (outbox.js). element: the pending
  // message shown, null for a change or a message restored before its room came.
  outbox: new Map(),
  // Files for the next message (uploads.js): { key, name, size, status: "uploading" | "done" |
  // "failed", description (the server's, once done), error, request, element }.
  tray: [],
  // Public rooms not archived, from hello, room_created and room_updated: { room, title,
  // members } (members: null when only a room_updated told of it).
  publicRooms: [],
  replaying: false, // Between a resuming hello and the end of the replay of what was missed.
  hiddenUnread: 0, // Messages from others that arrived while the tab was hidden.
  readTimer: null, // The pending read marker's timeout, if one is due.
  lastTypingSent: new Map(), // room key -> when this tab last said it was typing there
};
