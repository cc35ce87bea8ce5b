// The chat page: one WebSocket to /ws, reconnecting with capped, jittered backoff.
// User text is only ever rendered with textContent.

const root = document.getElementById("chat");
const me = { id: Number(root.dataset.userId), name: root.dataset.userName };
const ui = {
  status: document.getElementById("status"),
  messages: document.getElementById("messages"),
  notice: document.getElementById("notice"),
  composer: document.getElementById("composer"),
  input: document.getElementById("message-input"),
  online: document.getElementById("online"),
  onlineCount: document.getElementById("online-count"),
};

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;

let token = root.dataset.token;
let socket = null;
let attempt = 0;
const seenIds = new Set();
const pending = new Map(); // client_id -> { text, element }, sent but not yet confirmed
const online = new Map(); // display name -> number of users online with that name

class SessionGone extends Error {}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
}

function connect() {
  setStatus("connecting", "Connecting…");
  socket = new WebSocket(socketUrl());
  socket.addEventListener("open", onOpen);
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", onClose);
}

function onOpen() {
  setStatus("connected", "Connected");
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
      renderMessage(frame);
      break;
    case "join":
      changePresence(frame.user, +1);
      break;
    case "leave":
      changePresence(frame.user, -1);
      break;
    case "error":
      onError(frame);
      break;
    default:
      console.warn("ignoring a frame of unknown type", frame.type);
  }
}

function onClose() {
  socket = null;
  setStatus("reconnecting", "Reconnecting…");
  scheduleReconnect();
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
      location.assign(`${root.dataset.loginUrl}?next=${encodeURIComponent(location.pathname)}`);
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

function onHello(frame) {
  attempt = 0; // Only a greeting proves the server is healthy: a socket that opens and closes is not.
  online.clear();
  for (const name of frame.online) changePresence(name, +1, false);
  renderOnline();
  for (const message of frame.history) renderMessage(message);
  // Re-send what was never confirmed; the server answers a known client_id with the original.
  for (const [clientId, item] of pending) sendFrame(item.text, clientId);
}

function onError(frame) {
  showNotice(frame.message);
  const item = pending.get(frame.client_id);
  if (item) {
    pending.delete(frame.client_id);
    item.element.classList.add("failed");
    item.element.title = frame.message;
  }
}

function sendFrame(text, clientId) {
  socket.send(JSON.stringify({ type: "message", text, client_id: clientId }));
}

function send(text) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    showNotice("Not connected yet: your message is still in the box.");
    return false;
  }
  const clientId = newClientId();
  const element = messageElement({ user: me.name, text, ts: null }, true);
  element.classList.add("pending");
  ui.messages.append(element);
  scrollToEnd();
  pending.set(clientId, { text, element });
  sendFrame(text, clientId);
  return true;
}

function newClientId() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function renderMessage(frame) {
  if (seenIds.has(frame.id)) return;
  seenIds.add(frame.id);
  const own = frame.user_id === me.id;
  const stuck = isNearEnd();
  const confirmed = pending.get(frame.client_id);
  if (own && confirmed) {
    confirmed.element.remove();
    pending.delete(frame.client_id);
  }
  // Confirmed messages go in server order, above anything still pending.
  const firstPending = ui.messages.querySelector(".pending");
  ui.messages.insertBefore(messageElement(frame, own), firstPending);
  if (stuck || own) scrollToEnd();
}

function messageElement(frame, own) {
  const item = document.createElement("li");
  item.className = own ? "message own" : "message";
  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = frame.user;
  meta.append(author);
  if (frame.ts) meta.append(" ", timeElement(frame.ts));
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = frame.text;
  item.append(meta, text);
  return item;
}

function timeElement(ts) {
  const moment = new Date(ts);
  const time = document.createElement("time");
  time.dateTime = ts;
  time.textContent = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  time.title = moment.toLocaleString();
  return time;
}

function isNearEnd() {
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function changePresence(name, delta, render = true) {
  const count = (online.get(name) || 0) + delta;
  if (count > 0) online.set(name, count);
  else online.delete(name);
  if (render) renderOnline();
}

function renderOnline() {
  const names = [...online.keys()].sort((a, b) => a.localeCompare(b));
  const items = [];
  for (const name of names) {
    for (let i = 0; i < online.get(name); i += 1) {
      const item = document.createElement("li");
      item.textContent = name;
      if (name === me.name) item.className = "me";
      items.push(item);
    }
  }
  ui.online.replaceChildren(...items);
  ui.onlineCount.textContent = `(${items.length})`;
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
}

function onSubmit(event) {
  event.preventDefault();
  const text = ui.input.value.trim();
  if (!text) return;
  if (send(text)) {
    ui.input.value = "";
    ui.notice.hidden = true;
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

ui.composer.addEventListener("submit", onSubmit);
ui.input.addEventListener("keydown", onKeyDown);
connect();
