// What the user does to a message: reply, react (picker.js), edit, delete, remove its link
// preview, toggle a reaction, open an image full size, and follow a reply's quote to its parent,
// loading older pages until it is there.

import { openLightbox } from "./attachments.js";
import { root, ui } from "./dom.js";
import { startEdit, startReply } from "./compose.js";
import { t } from "./i18n.js";
import { queueChange } from "./outbox.js";
import { togglePicker } from "./picker.js";
import { ClientFrame } from "./protocol.js";
import { showNotice } from "./render.js";
import { requestHistory } from "./rooms.js";
import { state } from "./state.js";

const HIGHLIGHT_MS = 2000;

let jump = null; // { room, id }: a reply's parent being looked for in older pages
let deleting = null; // { id, button }: the message the open confirmation is about
let dialog = null; // The delete confirmation, made on first use.

// One listener per room's list (rooms.js): what was clicked says what to do.
export function onMessageClick(event) {
  if (event.target.closest(".picker")) return; // The picker has its own listeners.
  const image = event.target.closest(".attachment-image");
  if (image) {
    openLightbox(image); // Pending messages too: the button carries what the lightbox needs.
    return;
  }
  const room = state.rooms.get(event.currentTarget.dataset.room);
  const item = event.target.closest(".message[data-id]");
  if (!room || !item) return;
  const message = room.messages.get(Number(item.dataset.id));
  const control = event.target.closest("button");
  if (!message || !control) return;
  if (room.archived && !control.classList.contains("reply-quote")) return; // Read-only.
  if (control.classList.contains("reply-quote")) jumpTo(room, Number(control.dataset.replyId));
  else if (control.classList.contains("reaction")) toggleReaction(message, control);
  else if (control.dataset.action) act(control.dataset.action, room, message, control);
}

function act(action, room, message, button) {
  if (action === "reply") startReply(room, message);
  else if (action === "react") togglePicker(button, message.id);
  else if (action === "edit") startEdit(room, message);
  else if (action === "delete") confirmDelete(message.id, button);
  else if (action === "unpreview") queueChange({ type: ClientFrame.UNPREVIEW, id: message.id });
}

function toggleReaction(message, button) {
  const mine = button.getAttribute("aria-pressed") === "true";
  const type = mine ? ClientFrame.UNREACT : ClientFrame.REACT;
  queueChange({ type, id: message.id, emoji: button.dataset.emoji });
}

// ---- Deleting -----------------------------------------------------------------------------

function confirmDelete(id, button) {
  deleting = { id, button };
  const box = deleteDialog();
  box.returnValue = "";
  box.showModal();
}

// A real <dialog>: modal, Escape cancels, focus comes back to the Delete button.
function deleteDialog() {
  if (dialog) return dialog;
  dialog = document.createElement("dialog");
  dialog.className = "confirm";
  dialog.setAttribute("aria-labelledby", "delete-question");
  const question = document.createElement("p");
  question.id = "delete-question";
  question.textContent = t("delete_question");
  const form = document.createElement("form");
  form.method = "dialog";
  form.className = "confirm-buttons";
  const cancel = dialogButton("cancel", t("cancel"), "");
  form.append(cancel, dialogButton("delete", t("delete"), "danger"));
  dialog.append(question, form);
  dialog.addEventListener("close", onDeleteClosed);
  root.append(dialog);
  return dialog;
}

function dialogButton(value, label, className) {
  const button = document.createElement("button");
  button.value = value;
  button.textContent = label;
  if (className) button.className = className;
  return button;
}

function onDeleteClosed() {
  const asked = deleting;
  deleting = null;
  if (!asked) return;
  if (dialog.returnValue === "delete") queueChange({ type: ClientFrame.DELETE, id: asked.id });
  (asked.button.isConnected ? asked.button : ui.input).focus();
}

// ---- Following a reply to its parent ------------------------------------------------------

export function jumpTo(room, id) {
  if (showMessage(room, id)) return;
  if (!room.hasMore) {
    showNotice(t("reply_parent_gone"));
    return;
  }
  jump = { room: room.key, id };
  requestHistory(room);
}

// After each history page (dispatch.js): there yet, or one more page, or no more pages.
export function continueJump(room) {
  if (!jump || jump.room !== room.key) return;
  if (showMessage(room, jump.id)) jump = null;
  else if (room.hasMore) requestHistory(room);
  else {
    jump = null;
    showNotice(t("reply_parent_gone"));
  }
}

function showMessage(room, id) {
  const item = room.list.querySelector(`.message[data-id="${id}"]`);
  if (!item) return false;
  item.scrollIntoView({ block: "center" });
  item.tabIndex = -1; // Focus follows, so that a keyboard user goes on from there.
  item.focus({ preventScroll: true });
  item.classList.remove("highlight");
  void item.offsetWidth; // Restart the animation when the same parent is shown twice.
  item.classList.add("highlight");
  setTimeout(() => item.classList.remove("highlight"), HIGHLIGHT_MS);
  return true;
}
