// Drawing the page from state. User text is only ever set with textContent, never as markup;
// a message's formatting is built node by node (markup.js).
// Buttons carry data attributes and no listeners: input.js listens on their lists.

import { avatarElement } from "./avatars.js";
import { root, ui } from "./dom.js";
import { regroup, regroupAround, removeGrouped } from "./grouping.js";
import { formats, t, tCount } from "./i18n.js";
import { messageElement, replyQuote } from "./message.js";
import { avatarOf, mentionsAsNames, onAvatarChange } from "./people.js";
import { EXCERPT_CHARS, GENERAL, Kind, Notify } from "./protocol.js";
import { state } from "./state.js";

const NEAR_END_PX = 80; // Closer than this to the bottom counts as reading the latest messages.

// ---- Status and notices -------------------------------------------------------------------

export function setStatus(stateName, text) {
  ui.status.dataset.state = stateName;
  ui.status.textContent = text;
}

// tone: "error" (a refusal, the default) or "info" (news, such as being added to a room).
export function showNotice(text, tone = "error") {
  ui.notice.textContent = text;
  ui.notice.dataset.tone = tone;
  ui.notice.hidden = false;
}

export function hideNotice() {
  ui.notice.hidden = true;
}

// ---- A room's message list ----------------------------------------------------------------

export function newMessageList(key) {
  const list = document.createElement("ol");
  list.className = "messages";
  list.dataset.room = key;
  // Not a live region: history and replays would be read out; #announcer says what is new.
  list.hidden = true;
  ui.lists.append(list);
  return list;
}

export function labelList(room) {
  const label =
    room.kind === "direct"
      ? t("messages_with", { name: room.title })
      : t("messages_in", { room: room.title });
  room.list.setAttribute("aria-label", label);
}

export function roomLabel(room) {
  return room.kind === Kind.DIRECT ? `@${room.title}` : `#${room.title}`;
}

// Only the current room's list is shown; the header names it.
export function renderCurrentRoom(room) {
  for (const other of state.rooms.values()) other.list.hidden = other !== room;
  renderRoomTitle(room);
  ui.leaveRoom.hidden = room.kind === Kind.DIRECT || room.key === GENERAL;
  ui.roomMenuButton.hidden = false; // A direct room's menu has its notifications only.
  renderArchived(room);
}

// The name (a lock first for a private room) and, under it, the topic: text, never markup.
export function renderRoomTitle(room) {
  const label = roomLabel(room);
  if (room.kind === Kind.PRIVATE) ui.roomTitle.replaceChildren(lockIcon(), label);
  else ui.roomTitle.textContent = label;
  ui.roomTopic.textContent = room.topic ?? "";
  ui.roomTopic.hidden = !room.topic;
}

// A lock for the eye; "Private room" for screen readers.
function lockIcon() {
  const lock = document.createElement("span");
  lock.className = "lock";
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "14");
  svg.setAttribute("height", "14");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute(
    "d",
    "M12 2a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5zm-3 8V7a3 3 0 0 1 6 0v3H9z",
  );
  svg.append(path);
  const said = document.createElement("span");
  said.className = "visually-hidden";
  said.textContent = `${t("private_room")} `;
  lock.append(svg, said);
  return lock;
}

// An archived room is read-only: a notice instead of the composer, no controls on messages.
// Focus in the composer goes to the notice, not to <body>.
export function renderArchived(room) {
  const archived = Boolean(room.archived);
  const focused = ui.composerArea.contains(document.activeElement);
  ui.composerArea.hidden = archived;
  ui.archivedNotice.hidden = !archived;
  if (archived && focused) ui.archivedNotice.focus();
  lockControls(room.list, archived);
}

// Reactions, reply, edit and delete answer "archived" in an archived room: not offered.
export function lockControls(element, archived) {
  for (const bar of element.querySelectorAll(".actions")) bar.hidden = archived;
  for (const button of element.querySelectorAll(".reaction")) button.disabled = archived;
}

// Pending messages (sent, not yet confirmed) stay: they are re-sent and confirmed later.
export function clearConfirmedMessages(room) {
  for (const item of [...room.list.children]) if (!item.classList.contains("pending")) item.remove();
  regroup(room.list);
}

// ---- Messages -----------------------------------------------------------------------------

// Messages are kept in id order: history pages arrive older, live ones newer; pending stay last.
export function placeMessage(room, element, id) {
  room.list.insertBefore(element, nextMessageAfter(room, id));
  regroupAround(element);
}

// A pending message confirmed (its real one takes its place) or dropped.
export function removeMessageElement(element) {
  if (element.isConnected) removeGrouped(element);
}

function nextMessageAfter(room, id) {
  for (const item of room.list.children) {
    if (item.classList.contains("pending") || Number(item.dataset.id) > id) return item;
  }
  return null;
}

// A message of ours not confirmed yet, at the end of its room's list; a reply with its quote,
// if the parent is on the page.
export function appendPending(room, text, replyTo = null, attachments = []) {
  const mine = { user: state.me.name, user_id: state.me.id, text, ts: null, attachments };
  const element = messageElement(mine, true);
  const parent = replyTo === null ? undefined : room.messages?.get(replyTo);
  if (parent) element.querySelector(".meta").after(replyQuote(quoteOf(parent)));
  element.classList.add("pending");
  element.title = t("not_sent");
  room.list.append(element);
  regroupAround(element);
  return element;
}

// An edit, a deletion or a reaction: the element is rebuilt in place. Focus stays on the same
// control (a reaction toggled by keyboard), or goes to the composer if that control is gone.
export function replaceMessageElement(room, message) {
  const old = room.list.querySelector(`.message[data-id="${message.id}"]`);
  if (!old) return;
  const fresh = messageElement(message, message.user_id === state.me.id);
  const active = old.contains(document.activeElement) ? document.activeElement : null;
  const control = active && controlSelector(active);
  for (const kept of old.querySelectorAll(":scope > .keep-on-replace")) fresh.append(kept);
  if (old.classList.contains("highlight")) fresh.classList.add("highlight");
  if (room.archived) lockControls(fresh, true);
  old.replaceWith(fresh);
  regroupAround(fresh);
  if (!active) return;
  if (active.isConnected) active.focus();
  else (fresh.querySelector(control) ?? ui.input).focus();
}

function controlSelector(element) {
  if (element.dataset.action) return `[data-action="${element.dataset.action}"]`;
  if (element.dataset.emoji) return `.reaction[data-emoji="${CSS.escape(element.dataset.emoji)}"]`;
  if (element.classList.contains("reply-quote")) return ".reply-quote";
  return ".actions button";
}

// Replies to a changed message quote it as it is now.
export function replaceQuotes(room, quoted) {
  for (const old of room.list.querySelectorAll(`.reply-quote[data-reply-id="${quoted.id}"]`)) {
    const focused = document.activeElement === old;
    const fresh = replyQuote(quoted);
    old.replaceWith(fresh);
    if (focused) fresh.focus();
  }
}

// How a reply shows a message (the server sends the same as reply_to and quoted).
export function quoteOf(message) {
  const excerpt = Array.from(mentionsAsNames(message.text)).slice(0, EXCERPT_CHARS).join("");
  const { id, user, user_id, deleted } = message;
  return { id, user, user_id, excerpt, deleted };
}

export function showFailed(element, reason) {
  element.classList.remove("pending");
  element.classList.add("failed");
  element.title = reason;
}

// ---- Room lists ---------------------------------------------------------------------------

export function renderRoomLists() {
  // The buttons are rebuilt: a keyboard user must not lose their place (focus falling to <body>).
  const focusedRoom = document.activeElement?.closest?.(".room-button")?.dataset.room;
  const mine = [...state.rooms.values()].sort((a, b) => a.title.localeCompare(b.title));
  ui.roomList.replaceChildren(...mine.filter((r) => r.kind !== Kind.DIRECT).map(roomButton));
  const direct = mine.filter((r) => r.kind === Kind.DIRECT);
  ui.dmList.replaceChildren(...direct.map(roomButton));
  ui.dmHint.hidden = direct.length > 0;
  const others = state.publicRooms.filter((item) => !state.rooms.has(item.room));
  ui.publicList.replaceChildren(...others.map(joinButton));
  ui.publicHint.hidden = others.length > 0;
  if (focusedRoom !== undefined) {
    root.querySelector(`.room-button[data-room="${CSS.escape(focusedRoom)}"]`)?.focus();
  }
}

function roomButton(room) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "room-button";
  button.dataset.room = room.key;
  const name = document.createElement("span"); // One flex item: the badges go to the right.
  name.className = "room-button-name";
  if (room.kind === Kind.PRIVATE) name.append(lockIcon());
  name.append(roomLabel(room));
  if (room.archived) name.append(" ", archivedMark());
  if (room.notify === Notify.NOTHING) name.append(" ", mutedMark());
  button.append(name);
  if (room.key === state.current) button.setAttribute("aria-current", "true");
  // A muted room keeps its unread count (shown when it is opened), not its badge.
  const counted = room.unread > 0 || room.mentions > 0;
  if (counted && room.notify !== Notify.NOTHING) button.append(" ", badges(room));
  item.append(button);
  return item;
}

// A bell struck through for the eye; screen readers hear "muted".
function mutedMark() {
  const mark = document.createElement("span");
  mark.className = "muted-mark";
  const icon = document.createElement("span");
  icon.setAttribute("aria-hidden", "true");
  icon.textContent = "🔕";
  const said = document.createElement("span");
  said.className = "visually-hidden";
  said.textContent = t("muted");
  mark.append(icon, said);
  return mark;
}

function archivedMark() {
  const mark = document.createElement("span");
  mark.className = "archived-mark";
  mark.textContent = t("archived_mark");
  return mark;
}

// Unread and mention counts, side by side: "@2" before "5".
function badges(room) {
  const group = document.createElement("span");
  group.className = "badges";
  const { mentions, unread } = room;
  if (mentions > 0) {
    group.append(...badge("mention-badge", `@${mentions}`, tCount("mentions", mentions)));
  }
  if (unread > 0) group.append(...badge("", String(unread), tCount("unread", unread)));
  return group;
}

// The number is for the eye; screen readers get "3 unread" instead (a span has no label).
function badge(kind, shown, said) {
  const element = document.createElement("span");
  element.className = `badge ${kind}`.trim();
  element.textContent = shown;
  element.setAttribute("aria-hidden", "true");
  const spoken = document.createElement("span");
  spoken.className = "visually-hidden";
  spoken.textContent = said;
  return [element, spoken];
}

function joinButton(entry) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button";
  button.dataset.join = entry.room;
  button.textContent = t("join_room", { room: entry.title });
  item.append(button);
  return item;
}

// ---- Who is online, who is typing ---------------------------------------------------------

// A picture learnt (from hello, a message): the list shows it, once for all those learnt at once.
let onlineRedraw = false;
onAvatarChange(() => {
  if (onlineRedraw) return;
  onlineRedraw = true;
  queueMicrotask(() => {
    onlineRedraw = false;
    renderOnline();
  });
});

export function renderOnline() {
  const room = state.rooms.get(state.current);
  const people = room ? [...room.online].sort((a, b) => a[1].localeCompare(b[1])) : [];
  const items = people.map(([id, name]) => personItem(id, name));
  const count = Math.max(room?.onlineCount ?? 0, people.length);
  if (count > people.length) items.push(moreOnlineItem(room, count - people.length));
  ui.online.replaceChildren(...items);
  ui.onlineCount.textContent = `(${count})`;
}

// The rest of a big room's people, asked for (input.js sends "who") when someone wants them.
function moreOnlineItem(room, more) {
  const item = document.createElement("li");
  item.className = "more";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "online-more";
  button.dataset.room = room.key;
  button.textContent = tCount("online_more", more);
  item.append(button);
  return item;
}

function personItem(id, name) {
  const item = document.createElement("li");
  const label = document.createElement("span");
  label.className = "person-name";
  label.textContent = name;
  item.append(avatarElement(id, name, avatarOf(id) ?? null), label);
  if (id === state.me.id) {
    item.className = "me";
    return item;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button dm-button";
  button.dataset.userId = id;
  button.textContent = t("message_button");
  button.setAttribute("aria-label", t("message_label", { name }));
  item.append(" ", button);
  return item;
}

export function renderTyping() {
  const room = state.rooms.get(state.current);
  const names = room ? [...room.typing.values()].map((entry) => entry.name) : [];
  if (!names.length) ui.typing.textContent = "";
  else if (names.length === 1) ui.typing.textContent = t("typing_one", { name: names[0] });
  else ui.typing.textContent = t("typing_other", { names: formats.list.format(names) });
}

// ---- Scrolling ----------------------------------------------------------------------------

export function updateLoadOlder() {
  const room = state.rooms.get(state.current);
  ui.loadOlder.hidden = !(room && room.loaded && room.hasMore);
  renderWindowControls();
}

// Under a window around a search result: the next page down, and the way back to the latest
// (with how many live messages wait there). Focus on a control that goes away goes to the composer.
export function renderWindowControls() {
  const room = state.rooms.get(state.current);
  const shown = Boolean(room && room.loaded && room.hasNewer);
  const waiting = shown ? room.held.length : 0;
  ui.newerCount.textContent = waiting ? tCount("newer_waiting", waiting) : "";
  if (shown === !ui.windowControls.hidden) return;
  const focused = ui.windowControls.contains(document.activeElement);
  ui.windowControls.hidden = !shown;
  if (focused && !shown) ui.input.focus();
}

export function isNearEnd() {
  const box = ui.scroller;
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_END_PX;
}

export function scrollToEnd() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

export function contentHeight() {
  return ui.scroller.scrollHeight;
}

// Older messages were added above: keep what was on screen where it was.
export function keepInView(heightBefore) {
  ui.scroller.scrollTop += ui.scroller.scrollHeight - heightBefore;
}
