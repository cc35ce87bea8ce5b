// Telling about a new message from someone else: in the tab title while hidden, to screen
// readers through #announcer, and as a notification if the user allowed them, as far as the
// room's notification level wants it (all, mentions and direct messages, or nothing). A message
// that mentions me says so.

import { ui } from "./dom.js";
import { formats, t, tCount } from "./i18n.js";
import { mentionsAsNames } from "./people.js";
import { Kind, Notify } from "./protocol.js";
import { showRoom } from "./rooms.js";
import { state } from "./state.js";

const ANNOUNCED_KEPT = 5;
const NOTIFICATION_CHARS = 120;
const pageTitle = document.title;

export function tellAboutMessage(room, frame) {
  const wanted = isWanted(room, frame);
  if (document.hidden && wanted) countHiddenUnread();
  if (state.replaying) return; // Missed while disconnected: shown and counted, not announced as news.
  const onScreen = room.key === state.current;
  const here = onScreen && !mentionsMe(frame);
  const who = here ? frame.user : fromWhere(room, frame);
  if (wanted || onScreen) announce(t("announce", { name: who, text: plainText(frame) }));
  if (document.hidden && wanted) notify(room, frame);
}

// Whether the room's level wants this message told (the server's default: every message of a
// direct room, the mentions elsewhere).
export function isWanted(room, frame) {
  if (room.notify === Notify.NOTHING) return false;
  if (room.notify === Notify.ALL) return true;
  return room.kind === Kind.DIRECT || mentionsMe(frame);
}

// Where a message was written, for a notification or an announcement made from another room.
function fromWhere(room, frame) {
  const mention = mentionsMe(frame);
  const name = frame.user;
  if (room.kind === "direct") return t(mention ? "mention_direct" : "from_direct", { name });
  return t(mention ? "mention_room" : "from_room", { name, room: room.title });
}

function mentionsMe(frame) {
  return Boolean(frame.mentions?.includes(state.me.id));
}

// What was written, as text: mentions read "@alice", not "<@1>"; then the files' names.
function plainText(frame) {
  const text = mentionsAsNames(frame.text);
  const names = (frame.attachments ?? []).map((attachment) => attachment.name);
  if (!names.length) return text;
  const files = tCount("with_files", names.length, { names: formats.list.format(names) });
  return text ? `${text} ${files}` : files;
}

// A role=log region reads what is appended; the last few lines are plenty to keep.
function announce(text) {
  const line = document.createElement("p");
  line.textContent = text;
  ui.announcer.append(line);
  while (ui.announcer.childElementCount > ANNOUNCED_KEPT) ui.announcer.firstElementChild.remove();
}

function countHiddenUnread() {
  state.hiddenUnread += 1;
  document.title = `(${state.hiddenUnread}) ${pageTitle}`;
}

export function resetHiddenUnread() {
  state.hiddenUnread = 0;
  document.title = pageTitle;
}

// Permission is only ever asked for from the button's click, never on page load.
export function setUpNotifyButton() {
  ui.notify.hidden = !("Notification" in window && Notification.permission === "default");
}

export async function onNotifyClick() {
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
  const body = truncate(plainText(frame), NOTIFICATION_CHARS);
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
