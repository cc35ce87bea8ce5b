// Frames from the server, one handler per type.

import { continueJump, jumpTo } from "./actions.js";
import { noteChange, noteHello, noteResumed } from "./changes.js";
import { onMessageGone } from "./compose.js";
import { markGreeted, sendFrame } from "./connection.js";
import { isVisible } from "./dom.js";
import { t } from "./i18n.js";
import { tellAboutMessage } from "./notify.js";
import { onMembersChanged } from "./mentions.js";
import { isQueued, markFailed, resendAll, retryLater } from "./outbox.js";
import { learnAvatar, learnName, nameOf } from "./people.js";
import { ClientFrame, ERROR_UNAVAILABLE, GENERAL, Kind, ServerFrame } from "./protocol.js";
import {
  contentHeight,
  isNearEnd,
  keepInView,
  renderOnline,
  renderRoomLists,
  renderWindowControls,
  roomLabel,
  scrollToEnd,
  showNotice,
  updateLoadOlder,
} from "./render.js";
import {
  addMessage,
  applyChange,
  applyRoomUpdate,
  clearTyping,
  dropRoom,
  holdMessage,
  markRead,
  releaseHeld,
  requestLatest,
  resetRoom,
  takeRequest,
  retitleRoom,
  setMembers,
  showRoom,
  showTyping,
  upsertRoom,
} from "./rooms.js";
import {
  claimError,
  forgetRoomDialogs,
  onInviteLink,
  onInvited,
  onNotifyAnswered,
  onMemberRemoved,
  onMembersArrived,
  onRoomUpdated as answerRoomUpdated,
} from "./roommenu.js";
import { retitleResults } from "./search.js";
import { state } from "./state.js";

export function dispatch(frame) {
  switch (frame.type) {
    case ServerFrame.HELLO:
      onHello(frame);
      break;
    case ServerFrame.MESSAGE:
      onChatMessage(frame);
      break;
    case ServerFrame.HISTORY:
      onHistory(frame);
      break;
    case ServerFrame.ROOM:
      onRoom(frame);
      break;
    case ServerFrame.ROOM_LEFT:
      onRoomLeft(frame);
      break;
    case ServerFrame.ROOM_CREATED:
      onRoomCreated(frame);
      break;
    case ServerFrame.PRESENCE:
      onPresence(frame);
      break;
    case ServerFrame.TYPING:
      onTyping(frame);
      break;
    case ServerFrame.READ:
      onRead(frame);
      break;
    case ServerFrame.ERROR:
      onError(frame);
      break;
    case ServerFrame.SWITCHED:
      state.replaying = false; // See onHello.
      break;
    case ServerFrame.MESSAGE_CHANGED:
      onMessageChanged(frame);
      break;
    case ServerFrame.MEMBERS:
      onMembers(frame);
      break;
    case ServerFrame.ONLINE:
      onOnline(frame);
      break;
    case ServerFrame.RESUMED:
      noteResumed(frame.changes);
      break;
    case ServerFrame.ROOM_UPDATED:
      onRoomUpdated(frame);
      break;
    case ServerFrame.ROOM_DELETED:
      onRoomDeleted(frame);
      break;
    case ServerFrame.INVITED:
      onInvited(frame);
      break;
    case ServerFrame.INVITE_LINK:
      onInviteLink(frame);
      break;
    case ServerFrame.MEMBER_REMOVED:
      onMemberRemoved(frame);
      break;
    case ServerFrame.NOTIFY:
      onNotify(frame);
      break;
    default:
      console.warn("ignoring a frame of unknown type", frame.type);
  }
}

function onHello(frame) {
  markGreeted();
  noteHello(frame.changes);
  state.me.name = frame.user.name; // Renamed while away, perhaps.
  learnAvatar(frame.user.id, frame.user.avatar_url); // My picture, for the online list.
  state.replaying = state.resumed.size > 0;
  // The server queues all of the replay before it reads a frame, so the answer to this no-op
  // switch (the socket's current room is already general) comes right after the last of it.
  if (state.replaying) sendFrame({ type: ClientFrame.SWITCH, room: GENERAL });
  syncRooms(frame.rooms);
  showGeneralHistory(frame);
  state.publicRooms = frame.public_rooms;
  if (state.rooms.has(state.wantRoom)) takeWantedRoom();
  if (!state.rooms.has(state.current)) state.current = GENERAL;
  showRoom(state.current);
  resendAll();
}

// The rooms in hello are the ones we are in now: others are dropped, the rest updated.
function syncRooms(entries) {
  const keys = new Set(entries.map((entry) => entry.room));
  for (const key of state.rooms.keys()) if (!keys.has(key)) dropRoom(key);
  for (const entry of entries) {
    const room = upsertRoom(entry);
    room.loading = false; // A page asked for before the disconnect will never come.
    room.requests = [];
    if (!state.resumed.has(room.key)) {
      resetRoom(room); // Not resumed: loaded afresh when opened.
      room.held = [];
      room.loaded = false;
    }
  }
}

// general's latest page comes in hello itself (empty when resuming): shown unless general is
// already loaded and nothing came.
function showGeneralHistory(frame) {
  const general = state.rooms.get(GENERAL);
  if (!frame.history.length && general.loaded) return;
  for (const message of frame.history) addMessage(general, message);
  general.loaded = true;
  general.hasMore = frame.history_has_more;
}

function onChatMessage(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  if (room.hasNewer) {
    onMessageBeyondWindow(room, frame);
    return;
  }
  const added = addMessage(room, frame);
  clearTyping(room, frame.user_id);
  if (added && frame.user_id !== state.me.id) {
    if (!(room.key === state.current && isVisible())) countUnread(room, frame);
    tellAboutMessage(room, frame);
  }
  if (room.key === state.current) markRead(room);
  renderRoomLists();
}

// The room shows a window around a search result: a live message would land in its middle (or
// after a gap), so it is held and counted unread. One of mine means I am writing here now: back
// to the latest page, which holds it (and confirms it).
function onMessageBeyondWindow(room, frame) {
  clearTyping(room, frame.user_id);
  if (frame.user_id === state.me.id) {
    requestLatest(room);
    return;
  }
  if (!holdMessage(room, frame)) return;
  countUnread(room, frame);
  tellAboutMessage(room, frame);
  renderRoomLists();
  if (room.key === state.current) renderWindowControls();
}

// A replayed message is already in the unread and mention counts the room frame gave: the
// server counted them when it greeted the socket, before it replayed them.
function countUnread(room, frame) {
  if (state.replaying) return;
  room.unread += 1;
  if (frame.mentions?.includes(state.me.id)) room.mentions += 1;
}

function onHistory(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  const kind = takeRequest(room, frame);
  const replaced = frame.reset || kind === "jump";
  if (replaced) resetRoom(room);
  const stuck = room.key === state.current && isNearEnd();
  const before = contentHeight();
  for (const message of frame.messages) addMessage(room, message, false);
  room.loaded = true;
  if (kind !== "newer") room.hasMore = frame.has_more; // An "after" page says nothing of older.
  if (kind !== "older") room.hasNewer = frame.has_newer ?? false; // Nor an older one of newer.
  if (!room.hasNewer) releaseHeld(room);
  const target = kind === "around" ? room.target : null;
  if (kind === "around") room.target = null;
  if (room.key !== state.current) return;
  if (target !== null) jumpTo(room, target);
  else if (kind === "newer") renderWindowControls(); // Added below: the reader stays put.
  else if (replaced || stuck) scrollToEnd();
  else keepInView(before); // Older messages came above.
  updateLoadOlder();
  markRead(room);
  renderRoomLists();
  continueJump(room);
}

// The room this tab asked for is here: it becomes the current one (hello or onRoom shows it).
// A /?room= from an invitation link is spent: the address stops naming it.
function takeWantedRoom() {
  state.current = state.wantRoom;
  state.wantRoom = null;
  const params = new URLSearchParams(location.search);
  if (!params.has("room")) return;
  params.delete("room");
  const query = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${query ? `?${query}` : ""}`);
}

function onRoom(entry) {
  const known = state.rooms.has(entry.room);
  const room = upsertRoom(entry);
  if (!known && entry.invited_by != null && entry.invited_by !== state.me.id) tellAdded(room, entry);
  if (!known && isPrivateICreated(entry)) state.wantRoom = entry.room;
  if (state.wantRoom === entry.room) {
    takeWantedRoom();
    showRoom(entry.room);
  } else {
    renderRoomLists();
  }
}

// Its key is random: the private room this tab just created is known by its name.
function isPrivateICreated(entry) {
  const asked = state.wantPrivate;
  if (asked === null || entry.kind !== Kind.PRIVATE || entry.created_by !== state.me.id) return false;
  if (entry.title !== asked.normalize("NFKC")) return false;
  state.wantPrivate = null;
  return true;
}

// Someone put me in a room (an invitation, or a link they made): said, not shown over what I read.
function tellAdded(room, entry) {
  const name = nameOf(entry.invited_by);
  const label = roomLabel(room);
  const text = name ? t("added_you", { name, room: label }) : t("added_you_generic", { room: label });
  showNotice(text, "info");
}

function onRoomLeft(frame) {
  const room = state.rooms.get(frame.room);
  forgetRoomDialogs(frame.room);
  if (room && frame.removed_by != null && frame.removed_by !== state.me.id) {
    const name = nameOf(frame.removed_by);
    const label = roomLabel(room);
    const text = name ? t("removed_you", { name, room: label }) : t("removed_you_generic", { room: label });
    showNotice(text, "info");
  }
  dropRoom(frame.room);
  if (state.current === frame.room) showRoom(GENERAL);
  else renderRoomLists();
}

// A name, a topic or archiving changed: the lists, the header, the composer and search results.
function onRoomUpdated(frame) {
  const room = applyRoomUpdate(frame);
  if (room) retitleResults(room);
  answerRoomUpdated(frame);
  if (!room) renderRoomLists(); // A room to join was renamed.
}

// The room's notification level changed (from any of my tabs or devices): its badge follows.
function onNotify(frame) {
  const room = state.rooms.get(frame.room);
  if (room) room.notify = frame.level;
  onNotifyAnswered(frame);
  renderRoomLists();
}

// An administrator deleted a room: forgotten; if it was on screen, general instead, and why.
function onRoomDeleted(frame) {
  state.publicRooms = state.publicRooms.filter((item) => item.room !== frame.room);
  const room = state.rooms.get(frame.room);
  forgetRoomDialogs(frame.room);
  if (!room) {
    renderRoomLists();
    return;
  }
  const label = roomLabel(room);
  dropRoom(frame.room);
  if (state.current !== frame.room) {
    renderRoomLists();
    return;
  }
  showRoom(GENERAL);
  showNotice(t("room_deleted", { room: label }), "info");
}

function onRoomCreated(frame) {
  if (state.publicRooms.some((item) => item.room === frame.room)) return;
  state.publicRooms.push({ room: frame.room, title: frame.title, members: 1 });
  renderRoomLists();
}

// One frame per room and batch: who is online now, and who is not. Applying it twice is harmless.
function onPresence(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  for (const person of frame.offline) room.online.delete(person.user_id);
  for (const person of frame.online) {
    learnAvatar(person.user_id, person.avatar_url); // A new picture may come with the same name.
    if (room.online.get(person.user_id) !== person.user) onOnlineOrRenamed(room, person);
  }
  if (typeof frame.count === "number") room.onlineCount = frame.count;
  if (room.key === state.current) renderOnline();
  room.membersStale = true; // Joined or left, perhaps: asked for again when next needed.
  onMembersChanged(room);
}

// A rename comes as "online" with the new name: the lists, and a direct room's title, follow.
function onOnlineOrRenamed(room, person) {
  room.online.set(person.user_id, person.user);
  learnName(person.user_id, person.user);
  if (person.user_id === state.me.id) state.me.name = person.user;
  else if (room.kind === "direct" && room.title !== person.user) retitleRoom(room, person.user);
}

function onTyping(frame) {
  const room = state.rooms.get(frame.room);
  if (room) showTyping(room, frame.user_id, frame.user, frame.expires_in);
}

function onRead(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.lastReadId = Math.max(room.lastReadId, frame.id);
  // A window's last message is not the room's: what it holds beyond stays unread.
  if (room.lastReadId >= room.lastId && !room.hasNewer) {
    room.unread = 0;
    room.mentions = 0;
  }
  renderRoomLists();
}

function onError(frame) {
  if (claimError(frame)) return; // Said in the room menu's dialog that asked.
  showNotice(frame.message);
  if (!isQueued(frame.client_id)) return;
  if (frame.code === ERROR_UNAVAILABLE) retryLater(frame.client_id);
  else markFailed(frame.client_id, frame.message);
}

// An edit, a deletion or a reaction (chat.js has the outbox confirm ours); a null change
// changed nothing.
function onMessageChanged(frame) {
  noteChange(frame.change);
  if (frame.change === null) return;
  const room = state.rooms.get(frame.room);
  if (!room) return;
  // A link preview makes a message taller: a reader at the end stays at the end.
  const follow = frame.kind === "preview" && room.key === state.current && isNearEnd();
  applyChange(room, frame);
  if (follow) scrollToEnd();
  if (frame.message.deleted) onMessageGone(frame.message.id);
}

// Everyone online in a room, as asked for by the list's "Show more" button.
function onOnline(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  room.online = new Map(frame.online.map((person) => [person.id, person.name]));
  for (const person of frame.online) learnName(person.id, person.name);
  room.onlineCount = frame.count;
  if (room.key === state.current) renderOnline();
}

function onMembers(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  setMembers(room, frame.members);
  onMembersChanged(room);
  onMembersArrived(room);
}
