// The rooms this page knows: a record per room (its list element, the ids it shows, who is
// online and typing there, unread counts), and moving between them.

import { onMessageClick } from "./actions.js";
import { endComposing } from "./compose.js";
import { sendFrame } from "./connection.js";
import { isVisible } from "./dom.js";
import { confirmQueued } from "./outbox.js";
import { learnAvatar, learnFromMessage, learnName } from "./people.js";
import { ClientFrame, HISTORY_PAGE, Kind, Notify, directRoomKey } from "./protocol.js";
import {
  clearConfirmedMessages,
  isNearEnd,
  labelList,
  lockControls,
  newMessageList,
  placeMessage,
  renderCurrentRoom,
  renderOnline,
  renderRoomLists,
  renderRoomTitle,
  renderTyping,
  replaceMessageElement,
  replaceQuotes,
  scrollToEnd,
  updateLoadOlder,
} from "./render.js";
import { messageElement } from "./message.js";
import { state } from "./state.js";

const READ_DELAY_MS = 500;

function newRoom(entry) {
  const list = newMessageList(entry.room);
  list.addEventListener("click", onMessageClick); // One listener per list, not one per button.
  return {
    key: entry.room,
    list,
    lastId: 0,
    lastReadId: 0,
    unread: 0,
    mentions: 0, // Unread messages that mention me.
    loaded: false, // Its latest page (or a replay) has been shown.
    loading: false, // A history frame is on its way.
    hasMore: true,
    // A window around a search result, not the latest page: newer messages exist that are not
    // shown, and live ones wait in held (shown once the window reaches the latest).
    hasNewer: false,
    held: [], // Live messages that came while the room showed a window
    // What each history frame on its way answers, oldest first: "older", "latest" (the first
    // page), "newer", "around" (a search result), "jump" (back to the latest, replacing a window).
    requests: [],
    target: null, // The message to scroll to when the window around it arrives
    ids: new Set(),
    messages: new Map(), // id -> the message as it is now (for edits, replies, reactions)
    members: null, // user id -> name, from a members frame: for @ completion
    membersStale: true, // Presence changed since: asked for again when next needed.
    online: new Map(), // user id -> name
    typing: new Map(), // user id -> { name, timer }
  };
}

// A room from hello or a room frame: new, or updated from what the server says now.
export function upsertRoom(entry) {
  let room = state.rooms.get(entry.room);
  if (!room) {
    room = newRoom(entry);
    state.rooms.set(entry.room, room);
  }
  Object.assign(room, { title: entry.title, kind: entry.kind, unread: entry.unread });
  room.topic = entry.topic ?? "";
  room.archived = Boolean(entry.archived);
  room.createdBy = entry.created_by ?? null;
  room.notify = entry.notify ?? (entry.kind === Kind.DIRECT ? Notify.ALL : Notify.MENTIONS);
  room.mentions = entry.mentions ?? 0;
  room.membersStale = true; // A new socket, or a room joined again: ask afresh when needed.
  room.lastReadId = Math.max(room.lastReadId, entry.last_read_id);
  room.online = new Map(entry.online.map((person) => [person.id, person.name]));
  // A big room's entry lists the first people only; the count says how many are online.
  room.onlineCount = entry.online_count ?? entry.online.length;
  for (const person of entry.online) {
    learnName(person.id, person.name);
    learnAvatar(person.id, person.avatar_url);
  }
  labelList(room);
  return room;
}

// A room_updated frame: its name, topic and archiving as they are now; the room record, or
// undefined for a room this page is not in (a public room to join: its title only).
export function applyRoomUpdate(frame) {
  const room = state.rooms.get(frame.room);
  updatePublicList(frame, room);
  if (!room) return undefined;
  const wasArchived = room.archived;
  Object.assign(room, { title: frame.title, topic: frame.topic, archived: frame.archived });
  labelList(room);
  if (room.key === state.current) {
    if (room.archived && !wasArchived) endComposing(); // A reply or an edit can no longer go.
    renderCurrentRoom(room);
  } else {
    lockControls(room.list, room.archived);
  }
  renderRoomLists();
  return room;
}

// The list of rooms to join holds public rooms that are not archived (an archived one takes
// nobody): archiving takes a room out of it, unarchiving brings it back, under its new name.
function updatePublicList(frame, room) {
  const at = state.publicRooms.findIndex((item) => item.room === frame.room);
  const isPublic = room ? room.kind === Kind.PUBLIC : true; // Outsiders hear of public ones only.
  if (frame.archived || !isPublic) {
    if (at !== -1) state.publicRooms.splice(at, 1);
  } else if (at === -1) {
    state.publicRooms.push({ room: frame.room, title: frame.title, members: null }); // Unknown.
  } else {
    state.publicRooms[at].title = frame.title;
  }
}

export function retitleRoom(room, title) {
  room.title = title;
  labelList(room);
  if (room.key === state.current) renderRoomTitle(room);
  renderRoomLists();
}

export function dropRoom(key) {
  const room = state.rooms.get(key);
  if (!room) return;
  room.list.remove();
  for (const { timer } of room.typing.values()) clearTimeout(timer);
  state.rooms.delete(key);
}

export function resetRoom(room) {
  clearConfirmedMessages(room);
  room.ids.clear();
  room.messages.clear();
  room.lastId = 0;
  room.hasNewer = false;
}

export function showRoom(key) {
  const room = state.rooms.get(key);
  if (!room) return;
  if (key !== state.current) endComposing(); // A reply or an edit belongs to its room.
  state.current = key;
  renderCurrentRoom(room);
  if (!room.hasNewer) {
    room.unread = 0; // A window's held messages stay unread until they are shown.
    room.mentions = 0;
  }
  if (!room.loaded) requestHistory(room);
  markRead(room);
  renderRoomLists();
  renderOnline();
  renderTyping();
  updateLoadOlder();
  scrollToEnd();
}

// The latest page of a room not loaded yet, or the page before the oldest message shown.
export function requestHistory(room) {
  if (room.loading) return;
  const frame = { type: ClientFrame.HISTORY, room: room.key, limit: HISTORY_PAGE };
  const oldest = room.list.querySelector(".message[data-id]");
  if (room.loaded && oldest) frame.before = Number(oldest.dataset.id);
  sendHistory(room, frame, frame.before ? "older" : "latest");
}

function sendHistory(room, frame, kind) {
  if (!sendFrame(frame)) return;
  room.loading = true;
  room.requests.push(kind);
}

// The kind of request a history frame answers (the server answers in order); null for a reset
// nobody asked for (after a long absence).
export function takeRequest(room, frame) {
  if (frame.reset && room.requests[0] !== "around") return null;
  const kind = room.requests.shift() ?? null;
  room.loading = room.requests.length > 0;
  return kind;
}

// The messages around one (a search result): the server's answer replaces what is shown.
export function requestAround(room, id) {
  const frame = { type: ClientFrame.HISTORY, room: room.key, around: id, limit: HISTORY_PAGE };
  room.target = id;
  sendHistory(room, frame, "around");
}

// The page after the newest message a window shows.
export function requestNewer(room) {
  if (room.loading || !room.hasNewer) return;
  const frame = { type: ClientFrame.HISTORY, room: room.key, after: room.lastId };
  sendHistory(room, { ...frame, limit: HISTORY_PAGE }, "newer");
}

// Back to the latest page, replacing the window (the answer is a plain page, not a reset).
export function requestLatest(room) {
  sendHistory(room, { type: ClientFrame.HISTORY, room: room.key, limit: HISTORY_PAGE }, "jump");
}

// A live message while the room shows a window: kept for later, not put below the window.
export function holdMessage(room, frame) {
  if (room.ids.has(frame.id) || room.held.some((held) => held.id === frame.id)) return false;
  room.held.push(frame);
  return true;
}

// The window reached the latest message: what was held and is newer than it now shows.
export function releaseHeld(room) {
  const held = room.held.filter((frame) => frame.id > room.lastId);
  room.held = [];
  for (const frame of held) addMessage(room, frame, false);
}

// A direct room already known is shown at once; otherwise the server's room frame will be.
export function openDirect(userId) {
  const key = directRoomKey(userId, state.me.id);
  if (state.rooms.has(key)) {
    showRoom(key);
    return;
  }
  state.wantRoom = key;
  sendFrame({ type: ClientFrame.OPEN_DM, user_id: userId });
}

// Read markers go out at most every READ_DELAY_MS, not once per message.
export function markRead(room) {
  if (room.key !== state.current || !isVisible()) return;
  // A window leaves the held messages unread; the marker only reaches what is shown.
  if (!room.hasNewer) {
    room.unread = 0;
    room.mentions = 0;
  }
  if (state.readTimer === null) state.readTimer = setTimeout(sendReadMarker, READ_DELAY_MS);
}

function sendReadMarker() {
  state.readTimer = null;
  const room = state.rooms.get(state.current);
  if (!room || room.lastId <= room.lastReadId) return;
  const frame = { type: ClientFrame.READ, room: room.key, id: room.lastId };
  if (sendFrame(frame)) room.lastReadId = room.lastId;
}

// Whether the message was new to this page (a resent or replayed one may already be here).
// follow: a live message keeps a reader at the end there; a history page scrolls as a whole.
export function addMessage(room, frame, follow = true) {
  if (room.ids.has(frame.id)) return false;
  room.ids.add(frame.id);
  room.messages.set(frame.id, frame);
  learnFromMessage(frame);
  room.lastId = Math.max(room.lastId, frame.id);
  const own = frame.user_id === state.me.id;
  const stuck = follow && room.key === state.current && isNearEnd();
  if (own) confirmQueued(frame.client_id);
  const element = messageElement(frame, own);
  if (room.archived) lockControls(element, true);
  placeMessage(room, element, frame.id);
  if (follow && room.key === state.current && (stuck || own)) scrollToEnd();
  return true;
}

// The indicator ends by itself: nobody sends "stopped typing".
export function showTyping(room, userId, name, seconds) {
  clearTyping(room, userId);
  const timer = setTimeout(() => clearTyping(room, userId), seconds * 1000);
  room.typing.set(userId, { name, timer });
  renderTyping();
}

export function clearTyping(room, userId) {
  const entry = room.typing.get(userId);
  if (!entry) return;
  clearTimeout(entry.timer);
  room.typing.delete(userId);
  if (room.key === state.current) renderTyping();
}

// A message_changed frame: the message as it is now, and how replies to it quote it now. A
// message this page never loaded is not shown: nothing to replace.
export function applyChange(room, frame) {
  const { message, quoted } = frame;
  const held = room.held.findIndex((item) => item.id === message.id);
  if (held !== -1) room.held[held] = message; // Shown as it is now once the window reaches it.
  if (room.ids.has(message.id)) {
    room.messages.set(message.id, message);
    learnFromMessage(message);
    replaceMessageElement(room, message);
  }
  if (!quoted) return;
  for (const reply of room.messages.values()) {
    if (reply.reply_to?.id === message.id) reply.reply_to = quoted;
  }
  replaceQuotes(room, quoted);
}

// The room's members, for @ completion; asked for once, and again after presence changed.
export function requestMembers(room) {
  if (!room.membersStale) return;
  if (sendFrame({ type: ClientFrame.MEMBERS, room: room.key })) room.membersStale = false;
}

export function setMembers(room, members) {
  room.members = new Map(members.map((person) => [person.id, person.name]));
  for (const person of members) {
    learnName(person.id, person.name);
    learnAvatar(person.id, person.avatar_url); // Pictures for the lists, before they post.
  }
}
