// Searching messages: the box in the header asks /api/search, the panel under it lists what
// matched (newest first, 20 at a time), and opening a result shows its room around it.
// A snippet is escaped text with <mark> round the matched words: copied node by node from an
// inert parsed document, marks only, never through innerHTML (as markup.js does).

import { root, ui } from "./dom.js";
import { formats, t, tCount } from "./i18n.js";
import { showNotice } from "./render.js";
import { requestAround, showRoom } from "./rooms.js";
import { state } from "./state.js";

const SEARCH_URL = "/api/search";

let query = null; // { q, before }: the search the panel shows, and where its next page starts
let busy = false; // A request is on its way: Enter or "More results" wait for it.

export function onSearchSubmit(event) {
  event.preventDefault();
  const q = ui.searchInput.value.trim();
  if (!q) return;
  query = { q, before: null };
  ui.searchResults.replaceChildren();
  openPanel();
  fetchPage();
}

export function onMoreClick() {
  if (query?.before) fetchPage();
}

// Escape anywhere in the box or the panel closes it; arrows move between results.
export function onSearchKeyDown(event) {
  if (event.key === "Escape" && !ui.searchPanel.hidden) {
    event.preventDefault();
    event.stopPropagation(); // Not also the panels' Escape (input.js).
    closePanel();
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    if (moveFocus(event.key === "ArrowDown" ? 1 : -1)) event.preventDefault();
  }
}

export function onResultClick(event) {
  const button = event.target.closest(".search-result");
  if (!button) return;
  openResult(button.dataset.room, Number(button.dataset.id));
}

export function closePanel() {
  ui.searchPanel.hidden = true;
  ui.searchInput.focus();
}

function openPanel() {
  ui.searchPanel.hidden = false;
}

// From the box, Down goes to the first result; between results, Up and Down; Up from the
// first goes back to the box.
function moveFocus(step) {
  const buttons = [...ui.searchResults.querySelectorAll(".search-result")];
  if (ui.searchPanel.hidden || !buttons.length) return false;
  const at = buttons.indexOf(document.activeElement);
  if (at === -1 && document.activeElement !== ui.searchInput) return false;
  const next = at === -1 ? (step > 0 ? 0 : -1) : at + step;
  if (next < 0) ui.searchInput.focus();
  else buttons[Math.min(next, buttons.length - 1)].focus();
  return true;
}

// ---- Asking the server ----------------------------------------------------------------------

async function fetchPage() {
  if (busy) return;
  busy = true;
  const asked = query;
  setStatus(t("search_busy"), false);
  ui.searchMore.hidden = true;
  let outcome;
  try {
    outcome = await requestPage(asked);
  } catch {
    outcome = { error: t("search_failed") };
  } finally {
    busy = false;
  }
  if (asked !== query) return; // Another search started meanwhile: this page is stale.
  if (outcome.error) setStatus(outcome.error, true);
  else showPage(outcome.results, outcome.has_more);
}

async function requestPage({ q, before }) {
  const params = new URLSearchParams({ q });
  if (before) params.set("before", String(before));
  const response = await fetch(`${SEARCH_URL}?${params}`, {
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  });
  if (response.status === 401) {
    goToLogin();
    return { error: t("search_failed") };
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return { error: body.message || t("search_failed") };
  return body;
}

// The session is gone: the login page, as connection.js goes there, back here afterwards.
function goToLogin() {
  location.assign(`${root.dataset.loginUrl}?next=${encodeURIComponent(location.pathname)}`);
}

// ---- The panel ------------------------------------------------------------------------------

function setStatus(text, isError) {
  ui.searchStatus.textContent = text;
  ui.searchStatus.classList.toggle("error", isError);
}

function showPage(results, hasMore) {
  const first = ui.searchResults.children.length === 0;
  const items = results.map(resultItem);
  ui.searchResults.append(...items);
  const count = ui.searchResults.children.length;
  if (!count) setStatus(t("search_none"), false);
  else setStatus(tCount(hasMore ? "search_count_more" : "search_count", count), false);
  query.before = hasMore && results.length ? results[results.length - 1].message.id : null;
  ui.searchMore.hidden = !query.before;
  // After "More results" (which may now be hidden), on to the first new result.
  if (!first && items.length) items[0].querySelector("button").focus();
}

function resultItem({ message, snippet }) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "search-result";
  button.dataset.room = message.room;
  button.dataset.id = message.id;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.append(part("result-room", roomLabel(message.room)), " ");
  meta.append(part("author", message.user), " ", timeOf(message.ts));
  const text = part("snippet", "");
  text.append(snippetNodes(snippet));
  button.append(meta, text);
  item.append(button);
  return item;
}

function part(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

// A room was renamed: the results already shown name it anew.
export function retitleResults(room) {
  const selector = `.search-result[data-room="${CSS.escape(room.key)}"] .result-room`;
  for (const label of ui.searchResults.querySelectorAll(selector)) {
    label.textContent = roomLabel(room.key);
  }
}

function roomLabel(key) {
  const room = state.rooms.get(key);
  if (!room) return `#${key}`;
  return room.kind === "direct" ? `@${room.title}` : `#${room.title}`;
}

function timeOf(ts) {
  const time = document.createElement("time");
  time.dateTime = ts;
  time.textContent = formats.dateTime.format(new Date(ts));
  return time;
}

// Text, and <mark> elements holding text: nothing else of the snippet's markup is kept.
export function snippetNodes(html) {
  const source = new DOMParser().parseFromString(html, "text/html").body;
  const fragment = document.createDocumentFragment();
  copyMarks(source, fragment);
  return fragment;
}

function copyMarks(from, to) {
  for (const node of from.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      to.append(node.data);
    } else if (node.nodeType === Node.ELEMENT_NODE && node.tagName === "MARK") {
      const mark = document.createElement("mark");
      copyMarks(node, mark);
      to.append(mark);
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      copyMarks(node, to); // Not a mark: its text only.
    }
  }
}

// ---- Opening a result -----------------------------------------------------------------------

// Its room, showing the messages around it (rooms.js asks; dispatch.js scrolls to it when the
// window arrives). The panel closes; its results stay for the next Enter in the box.
function openResult(key, id) {
  const room = state.rooms.get(key);
  if (!room) {
    showNotice(t("search_room_gone"));
    return;
  }
  ui.searchPanel.hidden = true;
  requestAround(room, id); // First: showRoom asks for the latest page only if nothing is asked.
  showRoom(key);
}
