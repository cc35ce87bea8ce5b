// What the composer is writing besides a new message: a reply (a bar above it says to whom,
// with a cancel button) or an edit of one of my messages (its text in the box; Enter saves).

import { ui } from "./dom.js";
import { t } from "./i18n.js";
import { toDisplay } from "./mentions.js";
import { mentionsAsNames } from "./people.js";
import { EXCERPT_CHARS } from "./protocol.js";
import { state } from "./state.js";

const HINT_ID = "composer-hint";

let composing = null; // { kind: "reply" | "edit", room, id }
let bar = null; // Made on first use, above the composer.

export function startReply(room, message) {
  endComposing();
  composing = { kind: "reply", room: room.key, id: message.id };
  const excerpt = Array.from(mentionsAsNames(message.text)).slice(0, EXCERPT_CHARS).join("");
  showBar(t("replying_to", { name: message.user, text: excerpt }), t("cancel_reply"));
  ui.input.focus();
}

export function startEdit(room, message) {
  endComposing();
  composing = { kind: "edit", room: room.key, id: message.id };
  ui.input.value = toDisplay(message.text);
  showBar(t("editing"), t("cancel_edit"));
  ui.input.focus();
  ui.input.setSelectionRange(ui.input.value.length, ui.input.value.length);
}

// Cancelled, sent, or another room shown. An edit's text goes with it; a reply's draft stays.
export function endComposing() {
  if (!composing) return;
  if (composing.kind === "edit") ui.input.value = "";
  composing = null;
  if (bar) bar.hidden = true;
  ui.input.setAttribute("aria-describedby", HINT_ID);
}

export function isComposing() {
  return composing !== null && composing.room === state.current;
}

// The id of the message being edited, or null.
export function editingId() {
  return isComposing() && composing.kind === "edit" ? composing.id : null;
}

// The id of the message being replied to, or null.
export function replyingTo() {
  return isComposing() && composing.kind === "reply" ? composing.id : null;
}

// The message being edited or replied to was deleted meanwhile (here or in another tab): a
// reply's draft stays, to send as a message of its own.
export function onMessageGone(id) {
  if (composing?.id === id) endComposing();
}

function showBar(text, cancelLabel) {
  const element = contextBar();
  element.querySelector(".compose-context-text").textContent = text;
  const cancel = element.querySelector("button");
  cancel.setAttribute("aria-label", cancelLabel);
  cancel.title = cancelLabel;
  element.hidden = false;
  ui.input.setAttribute("aria-describedby", `compose-context-text ${HINT_ID}`);
}

function contextBar() {
  if (bar) return bar;
  bar = document.createElement("div");
  bar.className = "compose-context";
  bar.hidden = true;
  const text = document.createElement("p");
  text.id = "compose-context-text";
  text.className = "compose-context-text";
  text.dir = "auto";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "link-button";
  cancel.textContent = t("cancel");
  cancel.addEventListener("click", () => {
    endComposing();
    ui.input.focus();
  });
  bar.append(text, cancel);
  ui.composer.before(bar);
  return bar;
}
