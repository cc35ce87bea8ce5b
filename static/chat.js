// The chat page's entry module: it attaches the handlers and opens the connection. The work is
// in static/js/, one module per concern, each importing only modules below it:
//   protocol, dom, i18n   frame types and close codes; the page's elements; strings and formats
//   state                 all mutable state, in one object
//   render                drawing from state (user text only ever as textContent)
//   connection            the socket: backoff, fresh token, resume, sendFrame
//   outbox, rooms         unconfirmed messages; room records and moving between rooms
//   notify                title count, screen reader announcements, notifications
//   dispatch, input       frames from the server; what the user does

import { startConnection } from "./js/connection.js";
import { dispatch } from "./js/dispatch.js";
import { root, ui } from "./js/dom.js";
import {
  onCreateRoom,
  onDirectClick,
  onInput,
  onJoinClick,
  onKeyDown,
  onLeaveRoomClick,
  onLoadOlderClick,
  onPanelsKeyDown,
  onPanelsToggleClick,
  onRoomButtonClick,
  onScroll,
  onSubmit,
  onVisibilityChange,
} from "./js/input.js";
import { onNotifyClick, setUpNotifyButton } from "./js/notify.js";

const FLASH_MS = 6000;

// A welcome or logout flash has been read by now; it floats over the conversation.
setTimeout(() => document.querySelector(".flashes")?.remove(), FLASH_MS);

ui.composer.addEventListener("submit", onSubmit);
ui.input.addEventListener("keydown", onKeyDown);
ui.input.addEventListener("input", onInput);
ui.createRoom.addEventListener("submit", onCreateRoom);
ui.roomList.addEventListener("click", onRoomButtonClick);
ui.dmList.addEventListener("click", onRoomButtonClick);
ui.publicList.addEventListener("click", onJoinClick);
ui.online.addEventListener("click", onDirectClick);
ui.loadOlder.addEventListener("click", onLoadOlderClick);
ui.leaveRoom.addEventListener("click", onLeaveRoomClick);
ui.scroller.addEventListener("scroll", onScroll);
document.addEventListener("visibilitychange", onVisibilityChange);
ui.panelsToggle.addEventListener("click", onPanelsToggleClick);
root.addEventListener("keydown", onPanelsKeyDown);
ui.notify.addEventListener("click", onNotifyClick);
setUpNotifyButton();
startConnection(dispatch);
