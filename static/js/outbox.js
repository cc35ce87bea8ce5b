// Messages and changes (edits, deletions, reactions) sent from this page and not confirmed by
// the server yet, kept under their client_id and re-sent after every hello. The server stores a
// client_id once, so a re-send never posts or changes anything twice.
//
// Each item is also kept in localStorage, one key per item under the account's prefix, so that
// it survives a reload or a closed tab. restoreOutbox() reads them back at load, without
// elements: rooms exist only once hello came, so resendAll() (after every hello) draws a
// restored message as pending in its room, then re-sends. Another account's keys are never
// read: they are removed at load (one browser holds one session at a time).
// Several tabs of one account may re-send the same item (the server answers a retry with the
// original); whichever tab sees it confirmed removes its key, and the other tabs hear of it
// through the storage event. A tab does not adopt items another tab queues: they are re-sent
// by it, or by whichever page of the account loads next.
//
// When storage is refused (quota, disabled, private mode), items live in memory only: sending
// never depends on it.

import { sendFrame } from "./connection.js";
import { ClientFrame } from "./protocol.js";
import { appendPending, removeMessageElement, scrollToEnd, showFailed } from "./render.js";
import { state } from "./state.js";

const RETRY_UNAVAILABLE_MS = 3000;
const MAX_AGE_MS = 7 * 24 * 60 * 60 * 1000; // Older items are dropped at load.
const KEY_ROOT = "chat.outbox.";
const KIND_MESSAGE = "message";
const KIND_CHANGE = "change";

// "chat.outbox.<user id>.": the trailing dot keeps user 1 from reading user 12's items.
const keyPrefix = `${KEY_ROOT}${state.me.id}.`;
let lastQueuedAt = 0; // queued_at strictly increases in a tab, so the order survives a reload.
let storageWarned = false;
let sessionEnded = false; // After forgetOutbox: nothing more is written for this account.

function newClientId() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- Storage ------------------------------------------------------------------------------

// Runs action(localStorage); on any failure (even reaching localStorage can throw) the outbox
// goes on in memory, and says so once.
function withStorage(action) {
  try {
    return action(window.localStorage);
  } catch (error) {
    if (!storageWarned) console.warn("the outbox is kept in memory only:", error);
    storageWarned = true;
    return undefined;
  }
}

function storeItem(item) {
  if (sessionEnded) return;
  const { client_id, kind, frame, room, queued_at, attachments } = item;
  const value = JSON.stringify({ client_id, kind, frame, room, queued_at, attachments });
  withStorage((storage) => storage.setItem(keyPrefix + client_id, value));
}

function unstoreItem(clientId) {
  withStorage((storage) => storage.removeItem(keyPrefix + clientId));
}

// Every key, listed before any is removed (removing shifts the indexes).
function storageKeys(storage) {
  const keys = [];
  for (let i = 0; i < storage.length; i += 1) keys.push(storage.key(i));
  return keys;
}

// An item as stored, or null if it is damaged, not this key's or too old.
function parseItem(key, value, now) {
  let item;
  try {
    item = JSON.parse(value);
  } catch {
    return null;
  }
  const valid =
    item !== null &&
    typeof item === "object" &&
    key === keyPrefix + item.client_id &&
    (item.kind === KIND_MESSAGE || item.kind === KIND_CHANGE) &&
    typeof item.frame === "object" &&
    item.frame?.client_id === item.client_id &&
    Number.isFinite(item.queued_at) &&
    (item.attachments === undefined || Array.isArray(item.attachments));
  return valid && now - item.queued_at <= MAX_AGE_MS ? item : null;
}

// This account's items, oldest first. Another account's keys are removed unread: one browser
// holds one session, so theirs has ended, and what it had not sent ended with it.
function readStoredItems(storage) {
  const items = [];
  const now = Date.now();
  for (const key of storageKeys(storage)) {
    if (!key?.startsWith(KEY_ROOT)) continue;
    const item = key.startsWith(keyPrefix) ? parseItem(key, storage.getItem(key), now) : null;
    if (item) items.push(item);
    else storage.removeItem(key);
  }
  return items.sort((a, b) => a.queued_at - b.queued_at);
}

// ---- The outbox ---------------------------------------------------------------------------

// At load, before the first hello: what this account left unconfirmed, in memory again.
export function restoreOutbox() {
  const items = withStorage(readStoredItems) ?? [];
  for (const item of items) {
    if (state.outbox.has(item.client_id)) continue;
    state.outbox.set(item.client_id, { ...item, element: null });
    lastQueuedAt = Math.max(lastQueuedAt, item.queued_at);
  }
}

function addItem(kind, frame, room, attachments = undefined) {
  lastQueuedAt = Math.max(Date.now(), lastQueuedAt + 1);
  const item = { client_id: frame.client_id, kind, frame, room, queued_at: lastQueuedAt };
  if (attachments?.length) item.attachments = attachments; // Descriptions, to draw it pending.
  state.outbox.set(item.client_id, { ...item, element: null });
  storeItem(item);
  return state.outbox.get(item.client_id);
}

// False if there is no room to show it in yet (before the first hello). attachments: the
// uploads' descriptions; the frame carries their ids.
export function queueMessage(text, replyTo = null, attachments = []) {
  const room = state.rooms.get(state.current);
  if (!room) return false;
  const frame = { type: ClientFrame.MESSAGE, room: room.key, text, client_id: newClientId() };
  if (replyTo !== null) frame.reply_to = replyTo;
  if (attachments.length) frame.attachments = attachments.map((attachment) => attachment.id);
  const item = addItem(KIND_MESSAGE, frame, room.key, attachments);
  item.element = appendPending(room, text, replyTo, attachments);
  scrollToEnd();
  sendFrame(frame); // Not sent if the socket is down: resendAll sends it after the next hello.
  return true;
}

// An edit, delete, react or unreact frame: kept and sent like a message, shown nowhere as
// pending (the message_changed that confirms it shows the change). Its client_id.
export function queueChange(frame) {
  const change = { ...frame, client_id: newClientId() };
  addItem(KIND_CHANGE, change, roomOfMessage(frame.id));
  sendFrame(change);
  return change.client_id;
}

function roomOfMessage(id) {
  for (const room of state.rooms.values()) if (room.ids.has(id)) return room.key;
  return null;
}

// A restored message gets its pending element once its room exists.
function drawPending(item) {
  const room = state.rooms.get(item.room);
  if (!room) return false;
  const { text, reply_to: replyTo } = item.frame;
  item.element = appendPending(room, text, replyTo ?? null, item.attachments ?? []);
  return true;
}

function resend(clientId) {
  const item = state.outbox.get(clientId);
  if (item) sendFrame(item.frame);
}

// After every hello, in order (oldest first), everything not confirmed yet; a known client_id
// gets the original back. Restored messages are drawn here, since rooms come with hello.
export function resendAll() {
  let drawn = false;
  for (const item of state.outbox.values()) {
    if (item.kind === KIND_MESSAGE && !item.element) drawn = drawPending(item) || drawn;
    sendFrame(item.frame);
  }
  if (drawn) scrollToEnd();
}

export function isQueued(clientId) {
  return state.outbox.has(clientId);
}

function dropItem(clientId) {
  const item = state.outbox.get(clientId);
  if (!item) return;
  if (item.element) removeMessageElement(item.element);
  state.outbox.delete(clientId);
}

// Saved: the pending copy gives way to the real message. Seen in any tab, it is confirmed for
// all of them: the key goes even if this tab did not queue the item.
export function confirmQueued(clientId) {
  if (!clientId) return;
  dropItem(clientId);
  unstoreItem(clientId);
}

// A message_changed frame confirms the change that carries its client_id: one made by us, or
// a no-op (change: null), which comes to the sender only.
export function confirmChanged(frame) {
  if (frame.change === null || frame.user_id === state.me.id) confirmQueued(frame.client_id);
}

// Not saved; the server recovers by itself. Same client_id, so a retry never posts twice.
export function retryLater(clientId) {
  setTimeout(() => resend(clientId), RETRY_UNAVAILABLE_MS);
}

// Refused for good: a message stays on screen, marked, with the reason as its tooltip; a change
// (or a message never drawn) is just dropped.
export function markFailed(clientId, reason) {
  const item = state.outbox.get(clientId);
  if (!item) return;
  state.outbox.delete(clientId);
  unstoreItem(clientId);
  if (item.element) showFailed(item.element, reason);
}

// The session ended (logged out from this page, or the socket closed with 4001): what it had
// not sent is discarded, here and in storage, so that the next account never meets it.
export function forgetOutbox() {
  sessionEnded = true;
  for (const clientId of [...state.outbox.keys()]) dropItem(clientId);
  withStorage((storage) => {
    for (const key of storageKeys(storage)) if (key?.startsWith(keyPrefix)) storage.removeItem(key);
  });
}

// Another tab removed an item's key: it saw it confirmed (or the session ended there).
// A clear() (key null) drops nothing: what is not confirmed is still re-sent from memory.
export function onStorage(event) {
  if (event.key === null || event.newValue !== null || !event.key.startsWith(keyPrefix)) return;
  if (!withStorage((storage) => event.storageArea === storage)) return;
  dropItem(event.key.slice(keyPrefix.length));
}
