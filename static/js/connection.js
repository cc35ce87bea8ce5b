// One WebSocket to /ws for every room. It reconnects with capped, jittered backoff, fetching a
// fresh token first, resumes each room from the last message id seen, and goes to the login page
// when the session is gone.

import { lastChangeSeen, setResumingChanges } from "./changes.js";
import { root } from "./dom.js";
import { t } from "./i18n.js";
import { ClientFrame, CLOSE_FLOOD, CLOSE_REVOKED, MAX_RESUME_ROOMS } from "./protocol.js";
import { setStatus, showNotice } from "./render.js";
import { state } from "./state.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const FLOOD_MIN_ATTEMPT = 4; // After a flood close, wait at least 4 to 8 s (backoffDelay(4)).

class SessionGone extends Error {}

// Set once by startConnection: dispatch imports this module, so this module cannot import it.
let handleFrame = null;

export function startConnection(onFrame) {
  handleFrame = onFrame;
  connect();
}

// False when there is no greeted, open socket: the caller decides whether that matters.
export function sendFrame(frame) {
  const { socket } = state;
  if (!socket || !state.greeted || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

// The server's hello arrived. Only a greeting proves the server is healthy: a socket that opens
// and closes is not, so the backoff starts over here and not on open.
export function markGreeted() {
  state.attempt = 0;
  state.greeted = true;
  setStatus("connected", t("connected"));
}

// The rooms this page has loaded, with the last id seen in each: the current room first, so
// that it is always among the MAX_RESUME_ROOMS the server accepts.
function resumeMarks() {
  const loaded = [...state.rooms.values()].filter((room) => room.loaded);
  loaded.sort((a, b) => (b.key === state.current) - (a.key === state.current));
  return Object.fromEntries(loaded.slice(0, MAX_RESUME_ROOMS).map((r) => [r.key, r.lastId]));
}

function socketUrl(resume) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ token: state.token, resume: resume ? "1" : "0" });
  return `${scheme}//${location.host}/ws?${query}`;
}

function connect() {
  setStatus("connecting", t("connecting"));
  const marks = resumeMarks();
  state.resumed = new Set(Object.keys(marks));
  const socket = new WebSocket(socketUrl(state.resumed.size > 0));
  state.socket = socket;
  socket.addEventListener("open", () => {
    // Must be the first frame: the server replays what we missed before anything live.
    setResumingChanges(false);
    if (state.resumed.size) socket.send(JSON.stringify(resumeFrame(marks)));
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", onClose);
}

// With the last change seen, the server also replays the edits, deletions and reactions missed.
function resumeFrame(marks) {
  const frame = { type: ClientFrame.RESUME, rooms: marks };
  const changes = lastChangeSeen();
  if (changes !== null) frame.changes = changes;
  setResumingChanges(changes !== null);
  return frame;
}

function onMessage(event) {
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch {
    console.warn("ignoring a frame that is not JSON");
    return;
  }
  handleFrame(frame);
}

function onClose(event) {
  state.socket = null;
  state.greeted = false;
  if (event.code === CLOSE_REVOKED) {
    // Signed out (here or elsewhere): the login page sends a still-valid session straight back.
    goToLogin();
    return;
  }
  if (event.code === CLOSE_FLOOD) {
    showNotice(t("too_fast"));
    state.attempt = Math.max(state.attempt, FLOOD_MIN_ATTEMPT);
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
  setTimeout(reconnect, backoffDelay(state.attempt));
  state.attempt += 1;
}

// A fresh token first: the one in the page may have expired while the server was away.
async function reconnect() {
  try {
    state.token = await fetchToken();
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
