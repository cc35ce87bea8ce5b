// The chat page's entry module: it attaches the handlers and opens the connection. The work is
// in static/js/, one module per concern, each importing only modules below it:
//   protocol, dom, i18n   frame types and close codes; the page's elements; strings and formats
//   state                 all mutable state, in one object
//   render                drawing from state (user text only ever as textContent)
//   connection            the socket: backoff, fresh token, resume, sendFrame
//   outbox, rooms         unconfirmed messages and changes; room records, moving between rooms
//   people, changes       names by user id; the last change seen (for the resume)
//   message, markup       one message as an element; its formatting, copied node by node
//   avatars, grouping     a person's picture or initials; consecutive messages under one header
//   compose, picker,      replying or editing in the composer; the reaction picker; @ completion
//   mentions, actions     and what the user does to a message
//   notify                title count, screen reader announcements, notifications
//   dispatch, input       frames from the server; what the user does
//   search                the search box, its results, and opening one in its room
//   roommenu              the room's menu: topic, rename, invite, links, members, archive
//   attachments, uploads  a message's files and the lightbox; the tray of files to send
//   push, visibility      Web Push: the service worker, and telling the server this tab is seen

import { onLightboxClick, onLightboxClose } from "./js/attachments.js";
import { startConnection } from "./js/connection.js";
import { dispatch } from "./js/dispatch.js";
import { root, ui } from "./js/dom.js";
import {
  onCreateRoom,
  onDirectClick,
  onInput,
  onJoinClick,
  onJumpLatestClick,
  onKeyDown,
  onLeaveRoomClick,
  onLoadNewerClick,
  onLoadOlderClick,
  onPanelsKeyDown,
  onPanelsToggleClick,
  onRoomButtonClick,
  onScroll,
  onSubmit,
  onVisibilityChange,
} from "./js/input.js";
import { onNotifyClick, setUpNotifyButton } from "./js/notify.js";
import { confirmChanged, forgetOutbox, onStorage, restoreOutbox } from "./js/outbox.js";
import { CLOSE_REVOKED, ServerFrame } from "./js/protocol.js";
import {
  closePanel,
  onMoreClick,
  onResultClick,
  onSearchKeyDown,
  onSearchSubmit,
} from "./js/search.js";
import {
  onDocumentClick,
  onMenuButtonClick,
  onMenuButtonKeyDown,
  onMenuClick,
  onMenuKeyDown,
  setUpDialogs,
} from "./js/roommenu.js";
import { state } from "./js/state.js";
import { openAnchoredMessage, sendVisibility, setUpPush } from "./js/visibility.js";
import {
  onAttachClick,
  onDragLeave,
  onDragOver,
  onDrop,
  onFilesPicked,
  onPageDrop,
  onPaste,
} from "./js/uploads.js";

const FLASH_MS = 6000;

// A welcome or logout flash has been read by now; it floats over the conversation.
setTimeout(() => document.querySelector(".flashes")?.remove(), FLASH_MS);

ui.composer.addEventListener("submit", onSubmit);
ui.input.addEventListener("keydown", onKeyDown);
ui.input.addEventListener("input", onInput);
ui.input.addEventListener("paste", onPaste);
ui.attach.addEventListener("click", onAttachClick);
ui.fileInput.addEventListener("change", onFilesPicked);
ui.conversation.addEventListener("dragover", onConversationDragOver);
ui.conversation.addEventListener("dragleave", onDragLeave);
ui.conversation.addEventListener("drop", onConversationDrop);
window.addEventListener("dragover", onPageDrop);
window.addEventListener("drop", onPageDrop);
ui.lightbox.addEventListener("close", onLightboxClose);
ui.lightbox.addEventListener("click", onLightboxClick);
ui.lightboxClose.addEventListener("click", () => ui.lightbox.close());
ui.createRoom.addEventListener("submit", onCreateRoom);
ui.roomList.addEventListener("click", onRoomButtonClick);
ui.dmList.addEventListener("click", onRoomButtonClick);
ui.publicList.addEventListener("click", onJoinClick);
ui.online.addEventListener("click", onDirectClick);
ui.loadOlder.addEventListener("click", onLoadOlderClick);
ui.loadNewer.addEventListener("click", onLoadNewerClick);
ui.jumpLatest.addEventListener("click", onJumpLatestClick);
ui.search.addEventListener("submit", onSearchSubmit);
ui.search.addEventListener("keydown", onSearchKeyDown);
ui.searchPanel.addEventListener("keydown", onSearchKeyDown);
ui.searchResults.addEventListener("click", onResultClick);
ui.searchMore.addEventListener("click", onMoreClick);
ui.searchClose.addEventListener("click", closePanel);
ui.leaveRoom.addEventListener("click", onLeaveRoomClick);
ui.scroller.addEventListener("scroll", onScroll);
document.addEventListener("visibilitychange", onVisibilityChange);
ui.panelsToggle.addEventListener("click", onPanelsToggleClick);
root.addEventListener("keydown", onPanelsKeyDown);
ui.notify.addEventListener("click", onNotifyClick);
setUpNotifyButton();
ui.roomMenuButton.addEventListener("click", onMenuButtonClick);
ui.roomMenuButton.addEventListener("keydown", onMenuButtonKeyDown);
ui.roomMenu.addEventListener("keydown", onMenuKeyDown);
ui.roomMenu.addEventListener("click", onMenuClick);
document.addEventListener("click", onDocumentClick);
setUpDialogs();

// An archived room takes no files: no drop hint, and nothing put in the hidden tray.
function isArchivedHere() {
  return Boolean(state.rooms.get(state.current)?.archived);
}

function onConversationDragOver(event) {
  if (!isArchivedHere()) onDragOver(event);
}

function onConversationDrop(event) {
  if (isArchivedHere()) event.preventDefault();
  else onDrop(event);
}

// ---- The outbox's hooks on the connection -------------------------------------------------
// What outbox.js must hear of and connection.js and dispatch.js do not tell it: kept here, on
// the way from the socket to dispatch, so that neither module has to know.

// A hello for another account: while this tab was away, this browser was signed out and in
// as someone else. Its outbox belonged to the session that ended: discarded, never sent as
// the new account, and the page starts over as that account.
function startOverAsAnotherAccount() {
  forgetOutbox();
  location.reload();
}

// 4001: signed out (here, elsewhere, or everywhere) or the password changed. connection.js
// goes to the login page; what was not sent ends with the session.
function onSocketClose(event) {
  if (event.code === CLOSE_REVOKED) forgetOutbox();
}

function onFrame(frame) {
  if (frame.type === ServerFrame.HELLO) {
    if (frame.user.id !== state.me.id) {
      startOverAsAnotherAccount(); // Before dispatch, whose resendAll would send as them.
      return;
    }
    state.socket?.addEventListener("close", onSocketClose); // The socket that said hello.
  }
  dispatch(frame);
  if (frame.type === ServerFrame.MESSAGE_CHANGED) confirmChanged(frame);
  if (frame.type === ServerFrame.HELLO) {
    sendVisibility(); // Every socket starts as not visible to the server.
    openAnchoredMessage(); // A notification's address: /?room=<key>#m<id>.
  }
}

// Logging out from this page discards what it had not sent (see forgetOutbox).
document.querySelector("form.logout")?.addEventListener("submit", () => forgetOutbox());
window.addEventListener("storage", onStorage);
restoreOutbox();
setUpPush();
startConnection(onFrame);
