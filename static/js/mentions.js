// @ completion in the composer: typing "@" lists the current room's members (a listbox the
// textarea points into with aria-activedescendant), filtered by what follows. Picking one
// inserts "@Name " and remembers who that is, so that the text sent says "<@id>".

import { ui } from "./dom.js";
import { t } from "./i18n.js";
import { mentionsAsNames } from "./people.js";
import { requestMembers } from "./rooms.js";
import { state } from "./state.js";

const SHOWN = 8;
const QUERY = /(?:^|\s)@([^\s@<>]{0,32})$/u;

const picked = new Map(); // name -> user id: "@name" in the composer is "<@id>" on the wire
let list = null; // The listbox, made on first use.
let query = null; // { start, text }: the "@…" being completed, from its "@" to the caret
let matches = []; // [id, name] shown
let active = 0;

// ---- Text on the wire and in the composer -------------------------------------------------

// "@alice" back to "<@1>" for each name picked or shown here; longer names first.
export function toWire(text) {
  const names = [...picked.keys()].sort((a, b) => b.length - a.length);
  let wire = text;
  for (const name of names) {
    const pattern = new RegExp(`@${escapeRegExp(name)}(?![\\p{L}\\p{N}_])`, "gu");
    wire = wire.replace(pattern, `<@${picked.get(name)}>`);
  }
  return wire;
}

// "<@1>" as "@alice" for editing, remembered so that it goes back as it came.
export function toDisplay(text) {
  return mentionsAsNames(text, (name, id) => picked.set(name, id));
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// ---- The list -----------------------------------------------------------------------------

export function isListOpen() {
  return list !== null && !list.hidden;
}

// On every input in the composer: open, filter or close the list.
export function onMentionInput() {
  const before = ui.input.value.slice(0, ui.input.selectionStart);
  const match = QUERY.exec(before);
  if (!match || ui.input.selectionStart !== ui.input.selectionEnd) {
    closeList();
    return;
  }
  query = { start: before.length - match[1].length - 1, text: match[1] };
  const room = state.rooms.get(state.current);
  if (room) requestMembers(room);
  renderList();
}

// A members frame, or presence, changed who can be mentioned in a room.
export function onMembersChanged(room) {
  if (query === null || room.key !== state.current) return; // Open, or waiting for names.
  requestMembers(room);
  renderList();
}

// True if the key was the list's: the composer must not act on it too.
export function onMentionKeyDown(event) {
  if (!isListOpen() || event.isComposing) return false;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    const step = event.key === "ArrowDown" ? 1 : -1;
    active = (active + step + matches.length) % matches.length;
    renderList();
  } else if (event.key === "Enter" || event.key === "Tab") {
    pick(active);
  } else if (event.key === "Escape") {
    closeList();
  } else {
    return false;
  }
  event.preventDefault();
  return true;
}

function candidates() {
  const room = state.rooms.get(state.current);
  if (!room) return [];
  const people = room.members ?? room.online; // Who is online until the members arrive.
  const wanted = query.text.toLocaleLowerCase();
  return [...people]
    .filter(([id, name]) => id !== state.me.id && name.toLocaleLowerCase().startsWith(wanted))
    .sort((a, b) => a[1].localeCompare(b[1]))
    .slice(0, SHOWN);
}

// No match: the list hides, but the query stays until the caret leaves it (members may come).
function renderList() {
  matches = query ? candidates() : [];
  if (!matches.length) {
    hideList();
    return;
  }
  active = Math.min(active, matches.length - 1);
  const element = listElement();
  element.replaceChildren(...matches.map(([id, name], index) => option(id, name, index)));
  element.hidden = false;
  ui.input.setAttribute("aria-activedescendant", `mention-option-${active}`);
}

function option(id, name, index) {
  const item = document.createElement("li");
  item.id = `mention-option-${index}`;
  item.className = "mention-option";
  item.setAttribute("role", "option");
  item.setAttribute("aria-selected", String(index === active));
  item.dataset.index = index;
  item.textContent = name;
  return item;
}

function closeList() {
  query = null;
  hideList();
}

function hideList() {
  active = 0;
  if (list) list.hidden = true;
  ui.input.removeAttribute("aria-activedescendant");
}

function pick(index) {
  const [id, name] = matches[index];
  const value = ui.input.value;
  const caret = ui.input.selectionStart;
  const inserted = `@${name} `;
  ui.input.value = value.slice(0, query.start) + inserted + value.slice(caret);
  const end = query.start + inserted.length;
  ui.input.setSelectionRange(end, end);
  picked.set(name, id);
  closeList();
}

function listElement() {
  if (list) return list;
  list = document.createElement("ul");
  list.id = "mention-list";
  list.className = "mention-list";
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-label", t("mention_list"));
  list.hidden = true;
  // mousedown, not click: the composer keeps the focus (and its caret).
  list.addEventListener("mousedown", onListMouseDown);
  ui.composer.prepend(list);
  ui.input.addEventListener("blur", closeList);
  ui.input.setAttribute("aria-controls", list.id);
  ui.input.setAttribute("aria-autocomplete", "list");
  return list;
}

function onListMouseDown(event) {
  const item = event.target.closest(".mention-option");
  if (!item) return;
  event.preventDefault();
  pick(Number(item.dataset.index));
}
