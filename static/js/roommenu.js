// The current room's menu in the header: a menu button (arrows, Home, End, Escape) whose items
// open a dialog each: notifications, set the topic, rename, invite people, make an invitation
// link, list the members (and remove one), or archive and unarchive. A direct room's menu has
// its notifications only. What the
// server answers (invited, invite_link, member_removed, room_updated, error) comes back here
// from dispatch.js, matched by client_id. The server checks every permission again: the menu
// only leaves out what it would refuse.

import { sendFrame } from "./connection.js";
import { ui } from "./dom.js";
import { formats, t, tCount } from "./i18n.js";
import { nameOf } from "./people.js";
import { ClientFrame, GENERAL, Kind } from "./protocol.js";
import { roomLabel, showNotice } from "./render.js";
import { state } from "./state.js";

const byId = (id) => document.getElementById(id);

const dialogs = {
  topic: byId("topic-dialog"),
  rename: byId("rename-dialog"),
  invite: byId("invite-dialog"),
  link: byId("link-dialog"),
  members: byId("members-dialog"),
  notify: byId("notify-dialog"),
};

const pending = new Map(); // client_id -> { kind, room, userId, name }: asked, not answered
let sent = 0; // For client ids: unique in this tab.
let opened = null; // { kind, room }: the dialog open and the room it is about

// ---- Who may do what ----------------------------------------------------------------------

// The room's creator or an administrator: rename, archive, remove people.
function mayManage(room) {
  return room.createdBy === state.me.id || state.me.admin;
}

// The items the menu offers in a room, as the server would allow them.
function offered(room) {
  if (room.kind === Kind.DIRECT) return { notify: true };
  const writable = !room.archived;
  const managed = mayManage(room) && room.key !== GENERAL;
  return {
    topic: writable,
    rename: writable && managed,
    invite: writable && room.key !== GENERAL, // Everyone is in general.
    link: writable && room.key !== GENERAL,
    members: true,
    archive: writable && managed,
    unarchive: room.archived && managed,
    notify: true,
  };
}

function currentRoom() {
  return state.rooms.get(state.current) ?? null;
}

// ---- The menu -----------------------------------------------------------------------------

function items() {
  return [...ui.roomMenu.querySelectorAll('[role="menuitem"]')].filter((item) => !item.hidden);
}

function isMenuOpen() {
  return !ui.roomMenu.hidden;
}

function openMenu(focusLast = false) {
  const room = currentRoom();
  if (!room) return;
  const allowed = offered(room);
  for (const item of ui.roomMenu.querySelectorAll('[role="menuitem"]')) {
    item.hidden = !allowed[item.dataset.action];
    item.parentElement.hidden = item.hidden;
  }
  ui.roomMenu.hidden = false;
  ui.roomMenuButton.setAttribute("aria-expanded", "true");
  const shown = items();
  shown[focusLast ? shown.length - 1 : 0]?.focus();
}

export function closeMenu(returnFocus = true) {
  if (!isMenuOpen()) return;
  ui.roomMenu.hidden = true;
  ui.roomMenuButton.setAttribute("aria-expanded", "false");
  if (returnFocus) ui.roomMenuButton.focus();
}

export function onMenuButtonClick() {
  if (isMenuOpen()) closeMenu();
  else openMenu();
}

export function onMenuButtonKeyDown(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  openMenu(event.key === "ArrowUp");
}

export function onMenuKeyDown(event) {
  const shown = items();
  const at = shown.indexOf(document.activeElement);
  const moves = {
    ArrowDown: (at + 1) % shown.length,
    ArrowUp: (at - 1 + shown.length) % shown.length,
    Home: 0,
    End: shown.length - 1,
  };
  if (event.key in moves) {
    event.preventDefault();
    shown[moves[event.key]]?.focus();
  } else if (event.key === "Escape") {
    event.preventDefault();
    event.stopPropagation(); // Not also the panels' Escape (input.js).
    closeMenu();
  } else if (event.key === "Tab") {
    closeMenu(false); // Focus moves on, out of the menu.
  }
}

export function onMenuClick(event) {
  const item = event.target.closest('[role="menuitem"]');
  if (!item) return;
  closeMenu(false);
  const room = currentRoom();
  if (room) act(item.dataset.action, room);
}

// A click anywhere else closes the menu.
export function onDocumentClick(event) {
  if (!isMenuOpen()) return;
  if (ui.roomMenu.contains(event.target) || ui.roomMenuButton.contains(event.target)) return;
  closeMenu(false);
}

function act(action, room) {
  if (action === "topic") openTopic(room);
  else if (action === "rename") openRename(room);
  else if (action === "invite") openInvite(room);
  else if (action === "link") openLink(room);
  else if (action === "members") openMembers(room);
  else if (action === "notify") openNotify(room);
  else if (action === "archive" || action === "unarchive") archive(room, action === "archive");
}

// ---- Sending ------------------------------------------------------------------------------

// Sends a frame with a client_id and remembers what it asked; false when not connected.
function ask(frame, entry) {
  sent += 1;
  const clientId = `room-${Date.now().toString(36)}-${sent}`;
  if (!sendFrame({ ...frame, client_id: clientId })) return false;
  pending.set(clientId, entry);
  return true;
}

function archive(room, archived) {
  const frame = { type: ClientFrame.ARCHIVE_ROOM, room: room.key, archived };
  if (!ask(frame, { kind: "archive", room: room.key })) showNotice(t("not_connected"));
  ui.roomMenuButton.focus();
}

// ---- Dialogs ------------------------------------------------------------------------------

function openDialog(kind, room) {
  opened = { kind, room: room.key };
  setStatus(kind, "");
  dialogs[kind].showModal();
}

function clearLoading(kind) {
  if (byId(`${kind}-status`).textContent === t("loading")) setStatus(kind, "");
}

function setStatus(kind, text, isError = false) {
  const status = byId(`${kind}-status`);
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// Each dialog's Close and Cancel buttons, and Escape; focus goes back to the menu button.
export function setUpDialogs() {
  for (const [kind, dialog] of Object.entries(dialogs)) {
    dialog.addEventListener("click", (event) => {
      if (event.target.closest("[data-close]")) dialog.close();
    });
    dialog.addEventListener("close", () => onDialogClosed(kind));
  }
  byId("topic-form").addEventListener("submit", onTopicSubmit);
  byId("rename-form").addEventListener("submit", onRenameSubmit);
  byId("link-form").addEventListener("submit", onLinkSubmit);
  byId("link-copy").addEventListener("click", onCopyClick);
  byId("invite-filter").addEventListener("input", renderInvite);
  byId("invite-people").addEventListener("click", onInviteClick);
  byId("members-people").addEventListener("click", onRemoveClick);
  byId("notify-form").addEventListener("submit", onNotifySubmit);
}

function onDialogClosed(kind) {
  if (opened?.kind === kind) opened = null;
  if (kind === "link") {
    byId("link-url").value = ""; // Shown once: gone with the dialog.
    byId("link-result").hidden = true;
  }
  (ui.roomMenuButton.hidden ? ui.input : ui.roomMenuButton).focus();
}

function isOpen(kind, key) {
  return opened !== null && opened.kind === kind && opened.room === key;
}

// The room is gone from this page (left, removed, deleted): its dialog closes.
export function forgetRoomDialogs(key) {
  if (opened?.room === key) dialogs[opened.kind].close();
  if (isMenuOpen() && state.current === key) closeMenu(false);
}

// ---- Topic and name -------------------------------------------------------------------------

function openTopic(room) {
  byId("topic-input").value = room.topic ?? "";
  openDialog("topic", room);
}

function openRename(room) {
  byId("rename-input").value = room.title;
  openDialog("rename", room);
}

function onTopicSubmit(event) {
  event.preventDefault();
  update("topic", { topic: byId("topic-input").value.trim() });
}

function onRenameSubmit(event) {
  event.preventDefault();
  const title = byId("rename-input").value.trim();
  if (title) update("rename", { title });
}

function update(kind, change) {
  const key = opened?.room;
  if (!key) return;
  const frame = { type: ClientFrame.UPDATE_ROOM, room: key, ...change };
  if (ask(frame, { kind, room: key })) setStatus(kind, t("saving"));
  else setStatus(kind, t("not_connected"), true);
}

// A room_updated frame: the answer to a topic or a name asked from here (the server sends it
// to the asking socket too, even when nothing changed).
export function onRoomUpdated(frame) {
  for (const [clientId, entry] of pending) {
    if (entry.room !== frame.room) continue;
    if (entry.kind !== "topic" && entry.kind !== "rename" && entry.kind !== "archive") continue;
    pending.delete(clientId);
    if (isOpen(entry.kind, frame.room)) dialogs[entry.kind].close();
  }
}

// ---- Inviting people ------------------------------------------------------------------------

// The people of general (everyone) not in the room yet: both lists are asked for afresh.
function openInvite(room) {
  byId("invite-heading").textContent = t("invite_heading", { room: roomLabel(room) });
  byId("invite-filter").value = "";
  openDialog("invite", room);
  askMembers(GENERAL);
  askMembers(room.key);
  renderInvite();
}

function askMembers(key) {
  const room = state.rooms.get(key);
  if (room && sendFrame({ type: ClientFrame.MEMBERS, room: key })) room.membersStale = false;
}

// A members frame arrived (dispatch.js): the open list follows.
export function onMembersArrived(room) {
  if (!opened) return;
  if (opened.kind === "invite" && (room.key === GENERAL || room.key === opened.room)) {
    renderInvite();
  } else if (opened.kind === "members" && room.key === opened.room) {
    renderMembers();
  }
}

function inviteCandidates(room) {
  const everyone = state.rooms.get(GENERAL)?.members;
  if (!everyone || !room.members) return null;
  const filter = byId("invite-filter").value.trim().toLocaleLowerCase();
  return [...everyone].filter(
    ([id, name]) =>
      id !== state.me.id && !room.members.has(id) && name.toLocaleLowerCase().includes(filter),
  );
}

function renderInvite() {
  const room = opened && state.rooms.get(opened.room);
  if (!room || opened.kind !== "invite") return;
  const list = byId("invite-people");
  const focusedId = document.activeElement?.closest?.("#invite-people button")?.dataset.userId;
  const people = inviteCandidates(room);
  const asked = new Set([...pending.values()].map((entry) => entry.userId));
  list.replaceChildren(...(people ?? []).map(([id, name]) => inviteItem(id, name, asked.has(id))));
  const empty = byId("invite-empty");
  empty.hidden = people === null || people.length > 0;
  empty.textContent = byId("invite-filter").value.trim() ? t("nobody_matches") : t("nobody_left");
  if (people === null) setStatus("invite", t("loading"));
  else clearLoading("invite");
  if (focusedId) list.querySelector(`button[data-user-id="${focusedId}"]`)?.focus();
}

function inviteItem(id, name, asked) {
  const button = personButton(id, t("invite"), t("invite_label", { name }));
  button.disabled = asked;
  return personItem(id, name, button);
}

function personItem(id, name, button = null) {
  const item = document.createElement("li");
  const label = document.createElement("span");
  label.className = "person-name";
  label.dir = "auto";
  label.textContent = id === state.me.id ? t("you_name", { name }) : name;
  item.append(label);
  if (button) item.append(" ", button);
  return item;
}

function personButton(id, text, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.userId = id;
  button.textContent = text;
  button.setAttribute("aria-label", label);
  return button;
}

function onInviteClick(event) {
  const button = event.target.closest("button[data-user-id]");
  if (!button || !opened) return;
  const userId = Number(button.dataset.userId);
  const name = nameOf(userId) ?? "";
  const frame = { type: ClientFrame.INVITE, room: opened.room, user_id: userId };
  if (ask(frame, { kind: "invite", room: opened.room, userId, name })) {
    button.disabled = true;
    setStatus("invite", t("inviting", { name }));
  } else {
    setStatus("invite", t("not_connected"), true);
  }
}

// An invited frame: they are in the room now, or were already.
export function onInvited(frame) {
  const entry = pending.get(frame.client_id);
  pending.delete(frame.client_id);
  const room = state.rooms.get(frame.room);
  const name = entry?.name || nameOf(frame.user_id) || "";
  if (room?.members) room.members.set(frame.user_id, name);
  if (!isOpen("invite", frame.room)) return;
  setStatus("invite", t(frame.added ? "invited_added" : "invited_already", { name }));
  if (document.activeElement?.closest?.("#invite-people")) byId("invite-filter").focus();
  renderInvite();
}

// ---- Invitation links -----------------------------------------------------------------------

function openLink(room) {
  byId("link-form").reset();
  byId("link-result").hidden = true;
  openDialog("link", room);
}

function onLinkSubmit(event) {
  event.preventDefault();
  if (!opened) return;
  const frame = { type: ClientFrame.INVITE_LINK, room: opened.room };
  const days = byId("link-days").valueAsNumber;
  const uses = byId("link-uses").valueAsNumber;
  if (Number.isInteger(days)) frame.days = days; // Empty: no expiry.
  if (Number.isInteger(uses)) frame.uses = uses; // Empty: any number.
  if (ask(frame, { kind: "link", room: opened.room })) setStatus("link", t("saving"));
  else setStatus("link", t("not_connected"), true);
}

// An invite_link frame: the link, as an absolute URL to hand over; shown once.
export function onInviteLink(frame) {
  pending.delete(frame.client_id);
  if (!isOpen("link", frame.room)) return;
  const url = new URL(frame.url, location.href).href;
  const field = byId("link-url");
  field.value = url;
  byId("link-result").hidden = false;
  setStatus("link", linkTerms(frame));
  field.focus();
  field.select();
}

function linkTerms(frame) {
  const until = frame.expires_at
    ? t("link_expires", { date: formats.dateTime.format(new Date(frame.expires_at)) })
    : t("link_no_expiry");
  const uses = frame.max_uses ? tCount("link_uses", frame.max_uses) : t("link_any_uses");
  return t("link_made", { until, uses });
}

async function onCopyClick() {
  const field = byId("link-url");
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    field.select(); // The clipboard is refused here: selected, for Ctrl+C.
    setStatus("link", t("copy_failed"), true);
    return;
  }
  setStatus("link", t("copied"));
}

// ---- Members --------------------------------------------------------------------------------

function openMembers(room) {
  byId("members-heading").textContent = t("members_heading", { room: roomLabel(room) });
  openDialog("members", room);
  askMembers(room.key);
  renderMembers();
}

function renderMembers() {
  const room = opened && state.rooms.get(opened.room);
  if (!room || opened.kind !== "members") return;
  const list = byId("members-people");
  if (!room.members) {
    list.replaceChildren();
    setStatus("members", t("loading"));
    return;
  }
  clearLoading("members");
  const focusedId = document.activeElement?.closest?.("#members-people button")?.dataset.userId;
  const removable = mayManage(room) && room.key !== GENERAL;
  const people = [...room.members].sort((a, b) => a[1].localeCompare(b[1]));
  list.replaceChildren(
    ...people.map(([id, name]) => {
      const mine = id === state.me.id;
      const button = removable && !mine ? removeButton(id, name) : null;
      return personItem(id, name, button);
    }),
  );
  if (focusedId) list.querySelector(`button[data-user-id="${focusedId}"]`)?.focus();
}

function removeButton(id, name) {
  const button = personButton(id, t("remove"), t("remove_member", { name }));
  button.className = "danger";
  button.disabled = [...pending.values()].some((entry) => entry.userId === id);
  return button;
}

function onRemoveClick(event) {
  const button = event.target.closest("button[data-user-id]");
  if (!button || !opened) return;
  const userId = Number(button.dataset.userId);
  const name = nameOf(userId) ?? "";
  const frame = { type: ClientFrame.REMOVE_MEMBER, room: opened.room, user_id: userId };
  if (ask(frame, { kind: "remove", room: opened.room, userId, name })) button.disabled = true;
  else setStatus("members", t("not_connected"), true);
}

// A member_removed frame: they are out of the room.
export function onMemberRemoved(frame) {
  const entry = pending.get(frame.client_id);
  pending.delete(frame.client_id);
  const room = state.rooms.get(frame.room);
  room?.members?.delete(frame.user_id);
  if (!isOpen("members", frame.room)) return;
  const name = entry?.name || nameOf(frame.user_id) || "";
  setStatus("members", t("member_removed", { name }));
  if (document.activeElement?.closest?.("#members-people")) {
    dialogs.members.querySelector("[data-close]").focus(); // Its button is gone.
  }
  renderMembers();
}

// ---- Notifications --------------------------------------------------------------------------

function openNotify(room) {
  for (const input of byId("notify-form").elements.level) input.checked = input.value === room.notify;
  openDialog("notify", room);
}

function onNotifySubmit(event) {
  event.preventDefault();
  if (!opened) return;
  const level = byId("notify-form").elements.level.value;
  const frame = { type: ClientFrame.NOTIFY, room: opened.room, level };
  if (ask(frame, { kind: "notify", room: opened.room })) setStatus("notify", t("saving"));
  else setStatus("notify", t("not_connected"), true);
}

// A notify frame (from any of my tabs): the level is stored; the dialog that asked closes.
export function onNotifyAnswered(frame) {
  const entry = pending.get(frame.client_id);
  pending.delete(frame.client_id);
  if (entry && isOpen("notify", frame.room)) dialogs.notify.close();
}

// ---- Refusals -------------------------------------------------------------------------------

// An error frame answering something asked from here: said in its dialog if it is open (the
// page behind a modal dialog is inert); true when it was ours and shown.
export function claimError(frame) {
  const entry = pending.get(frame.client_id);
  if (!entry) return false;
  pending.delete(frame.client_id);
  const kind = entry.kind === "remove" ? "members" : entry.kind;
  if (!isOpen(kind, entry.room)) return false;
  setStatus(kind, frame.message, true);
  if (kind === "invite") renderInvite();
  if (kind === "members") renderMembers();
  return true;
}
