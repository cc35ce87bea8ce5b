// The page's fixed elements, looked up once. Module scripts run after the document is parsed.

export const root = document.getElementById("chat");

export const ui = {
  status: document.getElementById("status"),
  roomTitle: document.getElementById("room-title"),
  leaveRoom: document.getElementById("leave-room"),
  roomList: document.getElementById("room-list"),
  dmList: document.getElementById("dm-list"),
  dmHint: document.getElementById("dm-hint"),
  publicList: document.getElementById("public-list"),
  publicHint: document.getElementById("public-hint"),
  createRoom: document.getElementById("create-room"),
  roomName: document.getElementById("room-name"),
  scroller: document.getElementById("scroller"),
  loadOlder: document.getElementById("load-older"),
  lists: document.getElementById("message-lists"),
  windowControls: document.getElementById("window-controls"),
  loadNewer: document.getElementById("load-newer"),
  jumpLatest: document.getElementById("jump-latest"),
  newerCount: document.getElementById("newer-count"),
  search: document.getElementById("search"),
  searchInput: document.getElementById("search-input"),
  searchPanel: document.getElementById("search-panel"),
  searchStatus: document.getElementById("search-status"),
  searchResults: document.getElementById("search-results"),
  searchMore: document.getElementById("search-more"),
  searchClose: document.getElementById("search-close"),
  typing: document.getElementById("typing"),
  notice: document.getElementById("notice"),
  conversation: document.getElementById("conversation"),
  dropHint: document.getElementById("drop-hint"),
  tray: document.getElementById("upload-tray"),
  attach: document.getElementById("attach"),
  fileInput: document.getElementById("file-input"),
  lightbox: document.getElementById("lightbox"),
  lightboxTitle: document.getElementById("lightbox-title"),
  lightboxImage: document.getElementById("lightbox-image"),
  lightboxOpen: document.getElementById("lightbox-open"),
  lightboxClose: document.getElementById("lightbox-close"),
  composer: document.getElementById("composer"),
  input: document.getElementById("message-input"),
  online: document.getElementById("online"),
  onlineCount: document.getElementById("online-count"),
  panelsToggle: document.getElementById("panels-toggle"),
  notify: document.getElementById("notify"),
  announcer: document.getElementById("announcer"),
};

export function isVisible() {
  return document.visibilityState === "visible";
}
