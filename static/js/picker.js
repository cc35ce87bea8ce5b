// The reaction picker: a non-modal popover under a message's React button, with frequent emoji
// and a box for any other (the server says whether it is one emoji). Escape, a pick or a click
// elsewhere closes it; focus goes back to the React button.

import { t } from "./i18n.js";
import { queueChange } from "./outbox.js";
import { ClientFrame } from "./protocol.js";

const FREQUENT = [
  "👍", "👎", "😀", "😂", "😍", "🎉", "❤️", "🔥", "👀", "🙏", "😮", "😢", "😡", "✅", "🚀", "💯",
];

let picker = null; // Made on first use, then moved from message to message.
let target = null; // The id of the message it reacts to.

export function togglePicker(button, id) {
  if (picker && !picker.hidden && target === id) closePicker();
  else openPicker(button, id);
}

function openPicker(button, id) {
  if (picker && !picker.hidden) closePicker(false);
  const element = pickerElement();
  target = id;
  button.closest(".message").append(element); // Inside the message: it scrolls with it.
  element.hidden = false;
  button.setAttribute("aria-expanded", "true");
  element.querySelector("input").value = "";
  element.querySelector("button").focus();
  element.scrollIntoView({ block: "nearest" });
  document.addEventListener("click", onClickElsewhere);
}

// Focus goes back to the React button, found again: the message may have been redrawn since.
export function closePicker(returnFocus = true) {
  if (!picker || picker.hidden) return;
  const message = picker.closest(".message");
  picker.hidden = true;
  document.removeEventListener("click", onClickElsewhere);
  const button = message?.querySelector('[data-action="react"]');
  button?.setAttribute("aria-expanded", "false");
  picker.remove();
  if (returnFocus) button?.focus();
}

function pickerElement() {
  if (picker) return picker;
  picker = document.createElement("div");
  picker.className = "picker keep-on-replace";
  picker.setAttribute("role", "dialog");
  picker.setAttribute("aria-label", t("picker_label"));
  picker.hidden = true;
  const grid = document.createElement("div");
  grid.className = "picker-grid";
  grid.append(...FREQUENT.map(emojiButton));
  picker.append(grid, otherEmojiForm());
  picker.addEventListener("click", onPickerClick);
  picker.addEventListener("keydown", onPickerKeyDown);
  return picker;
}

function emojiButton(emoji) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "picker-emoji";
  button.dataset.emoji = emoji;
  button.textContent = emoji;
  return button;
}

function otherEmojiForm() {
  const form = document.createElement("form");
  form.className = "picker-other";
  const label = document.createElement("label");
  label.htmlFor = "picker-input";
  label.textContent = t("picker_other");
  const input = document.createElement("input");
  input.id = "picker-input";
  input.autocomplete = "off";
  input.maxLength = 64;
  const add = document.createElement("button");
  add.type = "submit";
  add.textContent = t("picker_add");
  form.append(label, input, add);
  form.addEventListener("submit", onOtherSubmit);
  return form;
}

function react(emoji) {
  const id = target;
  closePicker();
  queueChange({ type: ClientFrame.REACT, id, emoji });
}

function onPickerClick(event) {
  const button = event.target.closest(".picker-emoji");
  if (button) react(button.dataset.emoji);
}

function onOtherSubmit(event) {
  event.preventDefault();
  const emoji = event.currentTarget.querySelector("input").value.trim();
  if (emoji) react(emoji);
}

function onPickerKeyDown(event) {
  if (event.key !== "Escape") return;
  event.preventDefault();
  event.stopPropagation();
  closePicker();
}

// After the click did what it does: closing first would move what is under the pointer.
function onClickElsewhere(event) {
  if (picker.contains(event.target) || event.target.closest?.('[data-action="react"]')) return;
  closePicker(false);
}
