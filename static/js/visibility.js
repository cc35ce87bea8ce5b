// What Web Push needs of the chat page: the server hears whether this tab is visible (it pushes
// only to people with no visible tab), right after each hello and on every change; the service
// worker is registered; a notification's click, told by the worker or carried by the address
// (/?room=<key>#m<id>), opens its room at the message.

import { sendFrame } from "./connection.js";
import { ClientFrame } from "./protocol.js";
import { onWorkerMessage, registerWorker } from "./push.js";
import { requestAround, showRoom } from "./rooms.js";
import { state } from "./state.js";

const MESSAGE_ANCHOR = /^#m([1-9][0-9]{0,15})$/;

// The message the address named when the page loaded (hello's handling rewrites the address):
// { room, id }, shown once, after the first hello.
let anchored = readAnchor();

function readAnchor() {
  const match = MESSAGE_ANCHOR.exec(location.hash);
  const room = new URLSearchParams(location.search).get("room");
  return match && room ? { room, id: Number(match[1]) } : null;
}

export function sendVisibility() {
  sendFrame({ type: ClientFrame.VISIBILITY, visible: document.visibilityState === "visible" });
}

// After hello showed the room of /?room= (if this person is still in it): the message in it.
export function openAnchoredMessage() {
  const wanted = anchored;
  anchored = null;
  if (!wanted) return;
  if (location.hash) history.replaceState(history.state, "", `${location.pathname}${location.search}`);
  if (state.current === wanted.room) openMessage(wanted.room, wanted.id);
}

function openMessage(key, id) {
  const room = state.rooms.get(key);
  if (!room) return;
  if (Number.isSafeInteger(id) && id > 0) requestAround(room, id);
  showRoom(key);
}

export function setUpPush() {
  registerWorker();
  onWorkerMessage((data) => {
    if (data.type === "open_message" && typeof data.room === "string") {
      openMessage(data.room, Number(data.id));
    }
  });
  document.addEventListener("visibilitychange", sendVisibility);
}
