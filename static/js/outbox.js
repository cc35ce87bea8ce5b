// Messages typed here and not yet confirmed by the server: shown as pending, kept under their
// client_id, and re-sent after a reconnect. The server stores a client_id once, so a re-send
// never posts twice.

import { sendFrame } from "./connection.js";
import { ClientFrame } from "./protocol.js";
import { appendPending, scrollToEnd, showFailed } from "./render.js";
import { state } from "./state.js";

const RETRY_UNAVAILABLE_MS = 3000;

function newClientId() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// False if there is no room to show it in yet (before the first hello).
export function queueMessage(text) {
  const room = state.rooms.get(state.current);
  if (!room) return false;
  const clientId = newClientId();
  const element = appendPending(room, text);
  scrollToEnd();
  // Kept until the server confirms it, and re-sent after a reconnect if need be.
  state.outbox.set(clientId, { room: room.key, text, element });
  sendFrame({ type: ClientFrame.MESSAGE, room: room.key, text, client_id: clientId });
  return true;
}

function resend(clientId) {
  const item = state.outbox.get(clientId);
  if (!item) return;
  sendFrame({ type: ClientFrame.MESSAGE, room: item.room, text: item.text, client_id: clientId });
}

// In order, everything never confirmed; a known client_id gets the original message back.
export function resendAll() {
  for (const clientId of state.outbox.keys()) resend(clientId);
}

export function isQueued(clientId) {
  return state.outbox.has(clientId);
}

// Our own message came back saved: its pending copy gives way to the real one.
export function confirmQueued(clientId) {
  const item = state.outbox.get(clientId);
  if (!item) return;
  item.element.remove();
  state.outbox.delete(clientId);
}

// Not saved; the server recovers by itself. Same client_id, so a retry never posts twice.
export function retryLater(clientId) {
  setTimeout(() => resend(clientId), RETRY_UNAVAILABLE_MS);
}

// Refused for good: it stays on screen, marked, with the reason as its tooltip.
export function markFailed(clientId, reason) {
  const item = state.outbox.get(clientId);
  if (!item) return;
  state.outbox.delete(clientId);
  showFailed(item.element, reason);
}
