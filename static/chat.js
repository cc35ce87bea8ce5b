// The chat page: one WebSocket to /ws for every room, reconnecting with capped, jittered backoff,
// resuming each room from the last message id seen and re-sending what was never confirmed.
// User text is only ever rendered with textContent. Every string it shows comes from the
// catalog the server renders into the page (jscatalog.py), in the user's language.

const root = document.getElementById("chat");
const i18n = readCatalog();
const formats = {
  time: new Intl.DateTimeFormat(i18n.locale, { hour: "2-digit", minute: "2-digit" }),
  dateTime: new Intl.DateTimeFormat(i18n.locale, { dateStyle: "medium", timeStyle: "short" }),
  full: new Intl.DateTimeFormat(i18n.locale, { dateStyle: "full", timeStyle: "medium" }),
  plural: new Intl.PluralRules(i18n.locale),
  list: new Intl.ListFormat(i18n.locale, { type: "conjunction" }),
};
const me = { id: Number(root.dataset.userId), name: root.dataset.userName };
const ui = {
  status: document.getElementById("status"),
  roomTitle: document.getElementById("room-title"),
  leaveRoom: document.getElementById("leave-room"),
  roomList: document.getElementById("room-list"),
  dmList: document.getElementById("dm-list"),
  dmHint: document.getElementById("dm-hint"),
  publicList: document.getElementById("public-list"),
  publicHint: document.getElementById("public-hint"),
  createRoom: document.getElementById("create-room"),
  roomName: document.getElementById("room-name"),
  scroller: document.getElementById("scroller"),
  loadOlder: document.getElementById("load-older"),
  lists: document.getElementById("message-lists"),
  typing: document.getElementById("typing"),
  notice: document.getElementById("notice"),
  composer: document.getElementById("composer"),
  input: document.getElementById("message-input"),
  online: document.getElementById("online"),
  onlineCount: document.getElementById("online-count"),
  panelsToggle: document.getElementById("panels-toggle"),
  notify: document.getElementById("notify"),
  announcer: document.getElementById("announcer"),
};

const GENERAL = "general";
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const TYPING_EVERY_MS = 3000;
const READ_DELAY_MS = 500;
const RETRY_UNAVAILABLE_MS = 3000;
const MAX_RESUME_ROOMS = 200;
const ANNOUNCED_KEPT = 5;
const NOTIFICATION_CHARS = 120;

let token = root.dataset.token;
let socket = null;
let greeted = false; // Nothing but the resume frame may be sent before the server's hello.
let resumed = new Set(); // Rooms this connection asked to resume.
let attempt = 0;
let current = GENERAL;
let wantRoom = null; // A room this tab asked for (created, joined, DM): show it when it arrives.
const lastTypingSent = new Map(); // room key -> when this tab last said it was typing there
let readTimer = null;
const rooms = new Map(); // room key -> state, see newRoom()
const outbox = new Map(); // client_id -> { room, text, element }: sent or typed, not yet confirmed
let publicRooms = [];
let replaying = false; // Between a resuming hello and the end of the replay of what was missed.
let hiddenUnread = 0; // Messages from others that arrived while the tab was hidden.
const pageTitle = document.title;

class SessionGone extends Error {}

// ---- Translations -----------------------------------------------------------------------------

// The catalog is data in the page; a page rendered without it still works, showing keys.
function readCatalog() {
  let catalog = {};
  try {
    catalog = JSON.parse(document.getElementById("chat-i18n")?.textContent ?? "{}") ?? {};
  } catch {
    console.warn("the page's string catalog is not JSON");
  }
  return { locale: validLocale(catalog.locale), strings: catalog.strings ?? {} };
}

// Intl throws on a malformed tag: one bad tag must not stop the page.
function validLocale(tag) {
  try {
    return Intl.getCanonicalLocales(tag ?? [])[0] ?? "en";
  } catch {
    return "en";
  }
}

// A missing string shows its key, so it is seen (and fixed) rather than crashing the page.
function t(key, params = {}) {
  const text = i18n.strings[key] ?? key;
  const fill = (whole, name) => (Object.hasOwn(params, name) ? `${params[name]}` : whole);
  return text.replace(/\{(\w+)\}/g, fill); // A function: "$&" in a message is not a pattern.
}

// Plural forms are keys "<base>_<category>"; a language without a category falls back to "other".
function tCount(base, count, params = {}) {
  const key = `${base}_${formats.plural.select(count)}`;
  return t(key in i18n.strings ? key : `${base}_other`, { count, ...params });
}

// ---- Connection -------------------------------------------------------------------------------

// The rooms this page has loaded, with the last id seen in each: the current room first, so
// that it is always among the MAX_RESUME_ROOMS the server accepts.
function resumeMarks() {
  const loaded = [...rooms.values()].filter((room) => room.loaded);
  loaded.sort((a, b) => (b.key === current) - (a.key === current));
  return Object.fromEntries(loaded.slice(0, MAX_RESUME_ROOMS).map((r) => [r.key, r.lastId]));
}

function connect() {
  setStatus("connecting", t("connecting"));
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const marks = resumeMarks();
  resumed = new Set(Object.keys(marks));
  const query = new URLSearchParams({ token, resume: resumed.size ? "1" : "0" });
  socket = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
  socket.addEventListener("open", () => {
    // Must be the first frame: the server replays what we missed before anything live.
    if (resumed.size) socket.send(JSON.stringify({ type: "resume", rooms: marks }));
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", onClose);
}

function onMessage(event) {
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch {
    console.warn("ignoring a frame that is not JSON");
    return;
  }
  dispatch(frame);
}

function dispatch(frame) {
  switch (frame.type) {
    case "hello":
      onHello(frame);
      break;
    case "message":
      onChatMessage(frame);
      break;
    case "history":
      onHistory(frame);
      break;
    case "room":
      onRoom(frame);
      break;
    case "room_left":
      onRoomLeft(frame);
      break;
    case "room_created":
      onRoomCreated(frame);
      break;
    case "presence":
      onPresence(frame);
      break;
    case "typing":
      onTyping(frame);
      break;
    case "read":
      onRead(frame);
      break;
    case "error":
      onError(frame);
      break;
    case "switched":
      replaying = false; // See onHello.
      break;
    default:
      console.warn("ignoring a frame of unknown type", frame.type);
  }
}

const CLOSE_REVOKED = 4001;
const CLOSE_FLOOD = 4029;

function onClose(event) {
  socket = null;
  greeted = false;
  if (event.code === CLOSE_REVOKED) {
    // Signed out (here or elsewhere): the login page sends a still-valid session straight back.
    goToLogin();
    return;
  }
  if (event.code === CLOSE_FLOOD) {
    showNotice(t("too_fast"));
    attempt = Math.max(attempt, 4);
  }
  setStatus("reconnecting", t("reconnecting"));
  scheduleReconnect();
}

function goToLogin() {
  location.assign(`${root.dataset.loginUrl}?next=${encodeURIComponent(location.pathname)}`);
}

// Full jitter between half and all of an exponentially growing, capped delay.
function backoffDelay(n) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** n);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

function scheduleReconnect() {
  setTimeout(reconnect, backoffDelay(attempt));
  attempt += 1;
}

async function reconnect() {
  try {
    token = await fetchToken();
  } catch (error) {
    if (error instanceof SessionGone) {
      goToLogin();
      return;
    }
    scheduleReconnect(); // The server is still down: try again later.
    return;
  }
  connect();
}

async function fetchToken() {
  const response = await fetch(root.dataset.tokenUrl, {
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  });
  if (response.status === 401) throw new SessionGone();
  if (!response.ok) throw new Error(`token request failed with ${response.status}`);
  return (await response.json()).token;
}

function resend(clientId) {
  const item = outbox.get(clientId);
  if (item) sendFrame({ type: "message", room: item.room, text: item.text, client_id: clientId });
}

function sendFrame(frame) {
  if (!socket || !greeted || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

// ---- Frames from the server -------------------------------------------------------------------

function onHello(frame) {
  attempt = 0; // Only a greeting proves the server is healthy: a socket that opens and closes is not.
  greeted = true;
  setStatus("connected", t("connected"));
  me.name = frame.user.name; // Renamed while away, perhaps.
  replaying = resumed.size > 0;
  // The server queues all of the replay before it reads a frame, so the answer to this no-op
  // switch (the socket's current room is already general) comes right after the last of it.
  if (replaying) sendFrame({ type: "switch", room: GENERAL });
  const keys = new Set(frame.rooms.map((entry) => entry.room));
  for (const key of rooms.keys()) if (!keys.has(key)) dropRoom(key);
  for (const entry of frame.rooms) {
    const room = upsertRoom(entry);
    room.loading = false; // A page asked for before the disconnect will never come.
    if (!resumed.has(room.key)) {
      resetRoom(room); // Not resumed: loaded afresh when opened.
      room.loaded = false;
    }
  }
  if (frame.history.length || !rooms.get(GENERAL).loaded) {
    const general = rooms.get(GENERAL);
    for (const message of frame.history) renderMessage(general, message);
    general.loaded = true;
    general.hasMore = frame.history_has_more;
  }
  publicRooms = frame.public_rooms;
  if (!rooms.has(current)) current = GENERAL;
  showRoom(current);
  // Re-send, in order, what was never confirmed; a known client_id gets the original back.
  for (const clientId of outbox.keys()) resend(clientId);
}

function onChatMessage(frame) {
  const room = rooms.get(frame.room);
  if (!room) return;
  const added = renderMessage(room, frame);
  clearTyping(room, frame.user_id);
  if (added && frame.user_id !== me.id) {
    if (!(room.key === current && isVisible())) room.unread += 1;
    tellAboutMessage(room, frame);
  }
  if (room.key === current) markRead(room);
  renderRoomLists();
}

// A new message from someone else: in the tab title, to screen readers, as a notification.
function tellAboutMessage(room, frame) {
  if (document.hidden) countHiddenUnread();
  if (replaying) return; // Missed while disconnected: shown and counted, not announced as news.
  const who = room.key === current ? frame.user : fromWhere(room, frame);
  announce(t("announce", { name: who, text: frame.text }));
  if (document.hidden) notify(room, frame);
}

function onHistory(frame) {
  const room = rooms.get(frame.room);
  if (!room) return;
  room.loading = false;
  if (frame.reset) resetRoom(room);
  const stuck = room.key === current && isNearEnd();
  const before = ui.scroller.scrollHeight;
  for (const message of frame.messages) renderMessage(room, message);
  room.loaded = true;
  room.hasMore = frame.has_more;
  if (room.key !== current) return;
  if (frame.reset || stuck) scrollToEnd();
  else ui.scroller.scrollTop += ui.scroller.scrollHeight - before; // Keep what was on screen.
  updateLoadOlder();
  markRead(room);
}

function onRoom(entry) {
  upsertRoom(entry);
  if (wantRoom === entry.room) {
    wantRoom = null;
    showRoom(entry.room);
  } else {
    renderRoomLists();
  }
}

function onRoomLeft(frame) {
  dropRoom(frame.room);
  if (current === frame.room) showRoom(GENERAL);
  else renderRoomLists();
}

function onRoomCreated(frame) {
  if (!publicRooms.some((item) => item.room === frame.room)) {
    publicRooms.push({ room: frame.room, title: frame.title, members: 1 });
    renderRoomLists();
  }
}

// One frame per room and batch: who is online now, and who is not. Applying it twice is harmless.
function onPresence(frame) {
  const room = rooms.get(frame.room);
  if (!room) return;
  for (const person of frame.offline) room.online.delete(person.user_id);
  for (const person of frame.online) {
    if (room.online.get(person.user_id) !== person.user) onOnlineOrRenamed(room, person);
  }
  if (room.key === current) renderOnline();
}

// A rename comes as "online" with the new name: the lists, and a direct room's title, follow.
function onOnlineOrRenamed(room, person) {
  room.online.set(person.user_id, person.user);
  if (person.user_id === me.id) me.name = person.user;
  else if (room.kind === "direct" && room.title !== person.user) retitleRoom(room, person.user);
}

function onTyping(frame) {
  const room = rooms.get(frame.room);
  if (!room) return;
  clearTyping(room, frame.user_id);
  // The indicator ends by itself: nobody sends "stopped typing".
  const timer = setTimeout(() => clearTyping(room, frame.user_id), frame.expires_in * 1000);
  room.typing.set(frame.user_id, { name: frame.user, timer });
  renderTyping();
}

function onRead(frame) {
  const room = rooms.get(frame.room);
  if (!room) return;
  room.lastReadId = Math.max(room.lastReadId, frame.id);
  if (room.lastReadId >= room.lastId) room.unread = 0;
  renderRoomLists();
}

function onError(frame) {
  showNotice(frame.message);
  const item = outbox.get(frame.client_id);
  if (item && frame.code === "unavailable") {
    // Not saved; the server recovers by itself. Same client_id, so a retry never posts twice.
    setTimeout(() => resend(frame.client_id), RETRY_UNAVAILABLE_MS);
    return;
  }
  if (item) {
    outbox.delete(frame.client_id);
    item.element.classList.remove("pending");
    item.element.classList.add("failed");
    item.element.title = frame.message;
  }
}

// ---- Rooms ------------------------------------------------------------------------------------

function newRoom(entry) {
  const list = document.createElement("ol");
  list.className = "messages";
  list.dataset.room = entry.room;
  // Not a live region: history and replays would be read out; #announcer says what is new.
  list.hidden = true;
  ui.lists.append(list);
  return {
    key: entry.room,
    list,
    lastId: 0,
    lastReadId: 0,
    unread: 0,
    loaded: false,
    loading: false,
    hasMore: true,
    ids: new Set(),
    online: new Map(),
    typing: new Map(),
  };
}

function upsertRoom(entry) {
  let room = rooms.get(entry.room);
  if (!room) {
    room = newRoom(entry);
    rooms.set(entry.room, room);
  }
  Object.assign(room, { title: entry.title, kind: entry.kind, unread: entry.unread });
  room.lastReadId = Math.max(room.lastReadId, entry.last_read_id);
  room.online = new Map(entry.online.map((person) => [person.id, person.name]));
  labelList(room);
  return room;
}

function labelList(room) {
  const label =
    room.kind === "direct"
      ? t("messages_with", { name: room.title })
      : t("messages_in", { room: room.title });
  room.list.setAttribute("aria-label", label);
}

function retitleRoom(room, title) {
  room.title = title;
  labelList(room);
  if (room.key === current) ui.roomTitle.textContent = roomLabel(room);
  renderRoomLists();
}

function roomLabel(room) {
  return room.kind === "direct" ? `@${room.title}` : `#${room.title}`;
}

function dropRoom(key) {
  const room = rooms.get(key);
  if (!room) return;
  room.list.remove();
  for (const { timer } of room.typing.values()) clearTimeout(timer);
  rooms.delete(key);
}

function resetRoom(room) {
  for (const item of [...room.list.children]) if (!item.classList.contains("pending")) item.remove();
  room.ids.clear();
  room.lastId = 0;
}

function showRoom(key) {
  const room = rooms.get(key);
  if (!room) return;
  current = key;
  for (const other of rooms.values()) other.list.hidden = other !== room;
  ui.roomTitle.textContent = roomLabel(room);
  ui.leaveRoom.hidden = room.kind !== "public" || key === GENERAL;
  room.unread = 0;
  if (!room.loaded) requestHistory(room);
  markRead(room);
  renderRoomLists();
  renderOnline();
  renderTyping();
  updateLoadOlder();
  scrollToEnd();
}

function requestHistory(room) {
  if (room.loading) return;
  const frame = { type: "history", room: room.key, limit: 50 };
  const oldest = room.list.querySelector(".message[data-id]");
  if (room.loaded && oldest) frame.before = Number(oldest.dataset.id);
  room.loading = sendFrame(frame);
}

// Read markers go out at most every READ_DELAY_MS, not once per message.
function markRead(room) {
  if (room.key !== current || !isVisible()) return;
  room.unread = 0;
  if (readTimer === null) readTimer = setTimeout(sendReadMarker, READ_DELAY_MS);
}

function sendReadMarker() {
  readTimer = null;
  const room = rooms.get(current);
  if (!room || room.lastId <= room.lastReadId) return;
  if (sendFrame({ type: "read", room: room.key, id: room.lastId })) room.lastReadId = room.lastId;
}

function isVisible() {
  return document.visibilityState === "visible";
}

// ---- Rendering --------------------------------------------------------------------------------

// Whether the message was new to this page (a resent or replayed one may already be here).
function renderMessage(room, frame) {
  if (room.ids.has(frame.id)) return false;
  room.ids.add(frame.id);
  room.lastId = Math.max(room.lastId, frame.id);
  const own = frame.user_id === me.id;
  const stuck = room.key === current && isNearEnd();
  const confirmed = outbox.get(frame.client_id);
  if (own && confirmed) {
    confirmed.element.remove();
    outbox.delete(frame.client_id);
  }
  const element = messageElement(frame, own);
  room.list.insertBefore(element, nextMessageAfter(room, frame.id));
  if (room.key === current && (stuck || own)) scrollToEnd();
  return true;
}

// Messages are kept in id order: history pages arrive older, live ones newer; pending stay last.
function nextMessageAfter(room, id) {
  for (const item of room.list.children) {
    if (item.classList.contains("pending") || Number(item.dataset.id) > id) return item;
  }
  return null;
}

function messageElement(frame, own) {
  const item = document.createElement("li");
  item.className = own ? "message own" : "message";
  if (frame.id) item.dataset.id = frame.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = frame.user;
  meta.append(author);
  if (frame.ts) meta.append(" ", timeElement(frame.ts));
  const text = document.createElement("p");
  text.className = "text";
  text.dir = "auto"; // Right-to-left messages read right to left, in their own isolate.
  text.textContent = frame.text;
  item.append(meta, text);
  return item;
}

// Today's messages show the time only; older ones the date too. The tooltip has it all.
function timeElement(ts) {
  const moment = new Date(ts);
  const time = document.createElement("time");
  time.dateTime = ts;
  const today = moment.toDateString() === new Date().toDateString();
  time.textContent = (today ? formats.time : formats.dateTime).format(moment);
  time.title = formats.full.format(moment);
  return time;
}

function renderRoomLists() {
  // The buttons are rebuilt: a keyboard user must not lose their place (focus falling to <body>).
  const focusedRoom = document.activeElement?.closest?.(".room-button")?.dataset.room;
  const mine = [...rooms.values()].sort((a, b) => a.title.localeCompare(b.title));
  ui.roomList.replaceChildren(...mine.filter((r) => r.kind === "public").map(roomButton));
  const direct = mine.filter((r) => r.kind === "direct");
  ui.dmList.replaceChildren(...direct.map(roomButton));
  ui.dmHint.hidden = direct.length > 0;
  const others = publicRooms.filter((item) => !rooms.has(item.room));
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
  button.textContent = roomLabel(room);
  if (room.key === current) button.setAttribute("aria-current", "true");
  if (room.unread > 0) button.append(" ", ...unreadBadge(room.unread));
  button.addEventListener("click", () => {
    showRoom(room.key);
    closePanels();
  });
  item.append(button);
  return item;
}

// The number is for the eye; screen readers get "3 unread" instead (a span has no label).
function unreadBadge(count) {
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = String(count);
  badge.setAttribute("aria-hidden", "true");
  const spoken = document.createElement("span");
  spoken.className = "visually-hidden";
  spoken.textContent = tCount("unread", count);
  return [badge, spoken];
}

function joinButton(entry) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button";
  button.textContent = t("join_room", { room: entry.title });
  button.addEventListener("click", () => {
    wantRoom = entry.room;
    sendFrame({ type: "join_room", room: entry.room });
    closePanels();
  });
  item.append(button);
  return item;
}

function renderOnline() {
  const room = rooms.get(current);
  const people = room ? [...room.online].sort((a, b) => a[1].localeCompare(b[1])) : [];
  ui.online.replaceChildren(...people.map(([id, name]) => personItem(id, name)));
  ui.onlineCount.textContent = `(${people.length})`;
}

function personItem(id, name) {
  const item = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = name;
  item.append(label);
  if (id === me.id) {
    item.className = "me";
    return item;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button dm-button";
  button.textContent = t("message_button");
  button.setAttribute("aria-label", t("message_label", { name }));
  button.addEventListener("click", () => {
    openDirect(id);
    closePanels();
  });
  item.append(" ", button);
  return item;
}

function openDirect(userId) {
  const low = Math.min(userId, me.id);
  const high = Math.max(userId, me.id);
  const key = `dm:${low}:${high}`;
  if (rooms.has(key)) {
    showRoom(key);
    return;
  }
  wantRoom = key;
  sendFrame({ type: "open_dm", user_id: userId });
}

function renderTyping() {
  const room = rooms.get(current);
  const names = room ? [...room.typing.values()].map((entry) => entry.name) : [];
  if (!names.length) ui.typing.textContent = "";
  else if (names.length === 1) ui.typing.textContent = t("typing_one", { name: names[0] });
  else ui.typing.textContent = t("typing_other", { names: formats.list.format(names) });
}

function clearTyping(room, userId) {
  const entry = room.typing.get(userId);
  if (!entry) return;
  clearTimeout(entry.timer);
  room.typing.delete(userId);
  if (room.key === current) renderTyping();
}

function updateLoadOlder() {
  const room = rooms.get(current);
  ui.loadOlder.hidden = !(room && room.loaded && room.hasMore);
}

function isNearEnd() {
  const box = ui.scroller;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToEnd() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

// ---- Telling about new messages ---------------------------------------------------------------

// Where a message was written, for a notification or an announcement made from another room.
function fromWhere(room, frame) {
  if (room.kind === "direct") return t("from_direct", { name: frame.user });
  return t("from_room", { name: frame.user, room: room.title });
}

// A role=log region reads what is appended; the last few lines are plenty to keep.
function announce(text) {
  const line = document.createElement("p");
  line.textContent = text;
  ui.announcer.append(line);
  while (ui.announcer.childElementCount > ANNOUNCED_KEPT) ui.announcer.firstElementChild.remove();
}

function countHiddenUnread() {
  hiddenUnread += 1;
  document.title = `(${hiddenUnread}) ${pageTitle}`;
}

function resetHiddenUnread() {
  hiddenUnread = 0;
  document.title = pageTitle;
}

// Permission is only ever asked for from the button's click, never on page load.
function setUpNotifyButton() {
  ui.notify.hidden = !("Notification" in window && Notification.permission === "default");
}

async function onNotifyClick() {
  await Notification.requestPermission();
  ui.notify.hidden = true;
}

// Counted in code points, so that an emoji is never cut in half.
function truncate(text, limit) {
  const chars = Array.from(text);
  return chars.length > limit ? `${chars.slice(0, limit - 1).join("")}…` : text;
}

function notify(room, frame) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const body = truncate(frame.text, NOTIFICATION_CHARS);
  let notification;
  try {
    notification = new Notification(fromWhere(room, frame), { body, tag: room.key });
  } catch (error) {
    // Chrome on Android only shows notifications from a service worker, which this page has not.
    if (!(error instanceof TypeError)) throw error;
    console.warn("notifications are not available here", error.message);
    return;
  }
  notification.addEventListener("click", () => {
    window.focus();
    showRoom(room.key);
    notification.close();
  });
}

// ---- Panels (on a narrow screen, rooms and people are behind a button) -------------------------

function setPanels(open) {
  root.classList.toggle("show-panels", open);
  ui.panelsToggle.setAttribute("aria-expanded", String(open));
}

// A room was picked from the panels: on a phone they cover the conversation, so get out of the way.
function closePanels() {
  if (!root.classList.contains("show-panels")) return;
  setPanels(false);
  ui.input.focus();
}

function onPanelsKeyDown(event) {
  if (event.key !== "Escape" || !root.classList.contains("show-panels")) return;
  setPanels(false);
  ui.panelsToggle.focus();
}

// ---- Sending ----------------------------------------------------------------------------------

function newClientId() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function send(text) {
  const room = rooms.get(current);
  if (!room) return false; // Before the first hello there is no room to show it in yet.
  const clientId = newClientId();
  const element = messageElement({ user: me.name, text, ts: null }, true);
  element.classList.add("pending");
  element.title = t("not_sent");
  room.list.append(element);
  scrollToEnd();
  // Kept until the server confirms it, and re-sent after a reconnect if need be.
  outbox.set(clientId, { room: room.key, text, element });
  sendFrame({ type: "message", room: room.key, text, client_id: clientId });
  return true;
}

function onSubmit(event) {
  event.preventDefault();
  const text = ui.input.value.trim();
  if (!text) return;
  if (send(text)) {
    ui.input.value = "";
    ui.notice.hidden = true;
  } else {
    showNotice(t("still_connecting"));
  }
  ui.input.focus();
}

function onKeyDown(event) {
  // Enter sends; Shift+Enter is a new line; never interrupt an IME composition.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
}

function onInput() {
  const now = Date.now();
  if (!ui.input.value.trim() || now - (lastTypingSent.get(current) || 0) < TYPING_EVERY_MS) return;
  if (sendFrame({ type: "typing", room: current })) lastTypingSent.set(current, now);
}

function onCreateRoom(event) {
  event.preventDefault();
  const name = ui.roomName.value.trim();
  if (!name) return;
  wantRoom = name.toLowerCase();
  if (sendFrame({ type: "create_room", name })) ui.roomName.value = "";
}

function onScroll() {
  const room = rooms.get(current);
  if (room && room.loaded && room.hasMore && ui.scroller.scrollTop < 40) requestHistory(room);
}

function onVisibilityChange() {
  if (isVisible()) resetHiddenUnread();
  const room = rooms.get(current);
  if (room && isVisible()) {
    markRead(room);
    renderRoomLists();
  }
}

// A welcome or logout flash has been read by now; it floats over the conversation.
setTimeout(() => document.querySelector(".flashes")?.remove(), 6000);

ui.composer.addEventListener("submit", onSubmit);
ui.input.addEventListener("keydown", onKeyDown);
ui.input.addEventListener("input", onInput);
ui.createRoom.addEventListener("submit", onCreateRoom);
ui.loadOlder.addEventListener("click", () => requestHistory(rooms.get(current)));
ui.leaveRoom.addEventListener("click", () => sendFrame({ type: "leave_room", room: current }));
ui.scroller.addEventListener("scroll", onScroll);
document.addEventListener("visibilitychange", onVisibilityChange);
ui.panelsToggle.addEventListener("click", () => setPanels(!root.classList.contains("show-panels")));
root.addEventListener("keydown", onPanelsKeyDown);
ui.notify.addEventListener("click", onNotifyClick);
setUpNotifyButton();
connect();
