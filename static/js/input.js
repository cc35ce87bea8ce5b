// What the user does: write and send, create, pick and join rooms, open direct messages, scroll
// back, come back to the tab, open and close the panels (on a narrow screen, rooms and people
// are behind a button). chat.js attaches these handlers.

import { editingId, endComposing, isComposing, replyingTo, startEdit } from "./compose.js";
import { sendFrame } from "./connection.js";
import { isVisible, root, ui } from "./dom.js";
import { t } from "./i18n.js";
import { onMentionInput, onMentionKeyDown, toWire } from "./mentions.js";
import { resetHiddenUnread } from "./notify.js";
import { queueChange, queueMessage } from "./outbox.js";
import { ClientFrame, Kind } from "./protocol.js";
import { hideNotice, renderRoomLists, roomLabel, showNotice } from "./render.js";
import {
  markRead,
  openDirect,
  requestHistory,
  requestLatest,
  requestNewer,
  showRoom,
} from "./rooms.js";
import { state } from "./state.js";
import { clearTray, trayState } from "./uploads.js";

const TYPING_EVERY_MS = 3000;
const LOAD_OLDER_PX = 40; // Scrolled this close to the top: fetch the page before.

// ---- Writing ------------------------------------------------------------------------------

export function onSubmit(event) {
  event.preventDefault();
  const text = ui.input.value.trim();
  const editing = editingId();
  if (editing !== null) {
    if (!text) return; // An edit changes the text only; the tray waits for the next message.
    queueChange({ type: ClientFrame.EDIT, id: editing, text: toWire(text) });
    endComposing();
    hideNotice();
  } else {
    sendMessage(text);
  }
  ui.input.focus();
}

// The text and the files in the tray, as one message; nothing is lost while a file is not in.
function sendMessage(text) {
  const files = trayState();
  if (files.uploading) showNotice(t("wait_for_uploads"));
  else if (files.failed) showNotice(t("remove_failed_uploads"));
  else if (!text && !files.ready.length) return;
  else if (queueMessage(toWire(text), replyingTo(), files.ready)) {
    ui.input.value = "";
    clearTray();
    endComposing();
    hideNotice();
  } else {
    showNotice(t("still_connecting"));
  }
}

export function onKeyDown(event) {
  if (onMentionKeyDown(event)) return; // Up, Down, Enter, Tab and Escape pick a name first.
  if (event.key === "Escape" && isComposing()) {
    event.preventDefault();
    endComposing();
  } else if (event.key === "ArrowUp" && !ui.input.value && !hasModifier(event)) {
    if (editLastMessage()) event.preventDefault();
  } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    // Enter sends; Shift+Enter is a new line; never interrupt an IME composition.
    event.preventDefault();
    ui.composer.requestSubmit();
  }
}

function hasModifier(event) {
  return event.shiftKey || event.altKey || event.ctrlKey || event.metaKey;
}

// Up in an empty composer: my last message in this room, to edit.
function editLastMessage() {
  const room = state.rooms.get(state.current);
  const mine = room?.list.querySelectorAll(".message.own[data-id]:not(.deleted)");
  if (!mine?.length) return false;
  const message = room.messages.get(Number(mine[mine.length - 1].dataset.id));
  if (!message) return false;
  startEdit(room, message);
  return true;
}

// "Typing" goes out at most every TYPING_EVERY_MS per room, and never for blank input.
export function onInput() {
  onMentionInput();
  const now = Date.now();
  const last = state.lastTypingSent.get(state.current) || 0;
  if (!ui.input.value.trim() || now - last < TYPING_EVERY_MS) return;
  if (sendFrame({ type: ClientFrame.TYPING, room: state.current })) {
    state.lastTypingSent.set(state.current, now);
  }
}

// ---- Rooms --------------------------------------------------------------------------------

// The room shows when its room frame arrives (a public room's key is its name in lower case;
// a private room's is random, so dispatch.js knows it by its name).
export function onCreateRoom(event) {
  event.preventDefault();
  const name = ui.roomName.value.trim();
  if (!name) return;
  const isPrivate = ui.roomPrivate.checked;
  if (isPrivate) state.wantPrivate = name;
  else state.wantRoom = name.toLowerCase();
  const frame = { type: ClientFrame.CREATE_ROOM, name, private: isPrivate };
  if (!sendFrame(frame)) return;
  ui.roomName.value = "";
  ui.roomPrivate.checked = false;
}

// The room and direct-message lists are rebuilt often: one listener on each list, not per button.
export function onRoomButtonClick(event) {
  const button = event.target.closest(".room-button");
  if (!button) return;
  showRoom(button.dataset.room);
  closePanels();
}

export function onJoinClick(event) {
  const button = event.target.closest("button[data-join]");
  if (!button) return;
  state.wantRoom = button.dataset.join;
  sendFrame({ type: ClientFrame.JOIN_ROOM, room: button.dataset.join });
  closePanels();
}

export function onDirectClick(event) {
  const more = event.target.closest(".online-more");
  if (more) {
    // Everyone online in the room: the answer ("online") redraws the list.
    if (sendFrame({ type: ClientFrame.WHO, room: more.dataset.room })) more.disabled = true;
    return;
  }
  const button = event.target.closest(".dm-button");
  if (!button) return;
  openDirect(Number(button.dataset.userId));
  closePanels();
}

// Leaving a private room asks first: only a new invitation brings you back.
export function onLeaveRoomClick() {
  const room = state.rooms.get(state.current);
  if (room?.kind !== Kind.PRIVATE) {
    sendFrame({ type: ClientFrame.LEAVE_ROOM, room: state.current });
    return;
  }
  const dialog = document.getElementById("leave-dialog");
  document.getElementById("leave-question").textContent = t("leave_question", {
    room: roomLabel(room),
  });
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    () => {
      if (dialog.returnValue === "leave") sendFrame({ type: ClientFrame.LEAVE_ROOM, room: room.key });
      else ui.leaveRoom.focus();
    },
    { once: true },
  );
  dialog.showModal();
}

export function onLoadOlderClick() {
  requestHistory(state.rooms.get(state.current));
}

// Under a window around a search result: the next page down, or back to the latest.
export function onLoadNewerClick() {
  requestNewer(state.rooms.get(state.current));
}

export function onJumpLatestClick() {
  requestLatest(state.rooms.get(state.current));
}

export function onScroll() {
  const room = state.rooms.get(state.current);
  if (room && room.loaded && room.hasMore && ui.scroller.scrollTop < LOAD_OLDER_PX) {
    requestHistory(room);
  }
}

// Back to the tab: what is on screen has now been read.
export function onVisibilityChange() {
  if (isVisible()) resetHiddenUnread();
  const room = state.rooms.get(state.current);
  if (room && isVisible()) {
    markRead(room);
    renderRoomLists();
  }
}

// ---- Panels -------------------------------------------------------------------------------

function setPanels(open) {
  root.classList.toggle("show-panels", open);
  ui.panelsToggle.setAttribute("aria-expanded", String(open));
}

function panelsOpen() {
  return root.classList.contains("show-panels");
}

export function onPanelsToggleClick() {
  setPanels(!panelsOpen());
}

// A room was picked from the panels: on a phone they cover the conversation, so get out of the way.
function closePanels() {
  if (!panelsOpen()) return;
  setPanels(false);
  ui.input.focus();
}

export function onPanelsKeyDown(event) {
  if (event.key !== "Escape" || !panelsOpen()) return;
  setPanels(false);
  ui.panelsToggle.focus();
}
