// Files to go with the next message, from the Attach button, a drop on the conversation or a
// paste into the composer. Each uploads as soon as it is picked (XMLHttpRequest: fetch reports
// no upload progress), into the tray above the composer: a progress bar, then a thumbnail or
// its name and size, or the server's reason for refusing it. The message, when sent, carries
// the ids of the files that are in; the tray empties.

import { humanSize } from "./attachments.js";
import { root, ui } from "./dom.js";
import { t } from "./i18n.js";
import { showNotice } from "./render.js";
import { state } from "./state.js";

const UPLOAD_URL = root.dataset.uploadUrl;
const CSRF_TOKEN = root.dataset.csrfToken;
const MAX_BYTES = Number(root.dataset.maxUploadBytes);
const MAX_FILES = Number(root.dataset.maxAttachments);
const UPLOADING = "uploading";
const DONE = "done";
const FAILED = "failed";
// Browsers name a pasted screenshot "image.png": every paste would share one name.
const GENERIC_PASTE = /^image\.(\w+)$/;

let nextKey = 0;

// ---- Adding files -------------------------------------------------------------------------

export function addFiles(files) {
  for (const file of files) {
    if (state.tray.length >= MAX_FILES) {
      showNotice(t("too_many_files", { count: MAX_FILES }));
      break;
    }
    const item = {
      key: nextKey,
      name: file.name || "file",
      size: file.size,
      status: UPLOADING,
      description: null,
      error: "",
      request: null,
      element: null,
    };
    nextKey += 1;
    state.tray.push(item);
    item.element = trayItem(item);
    ui.tray.append(item.element);
    // Refused here when the answer is known: no point sending 25 MiB to hear it.
    if (file.size > MAX_BYTES) fail(item, t("file_too_large", { size: humanSize(MAX_BYTES) }));
    else if (file.size === 0) fail(item, t("file_empty"));
    else upload(item, file);
  }
  ui.tray.hidden = state.tray.length === 0;
}

export function onAttachClick() {
  ui.fileInput.click();
}

export function onFilesPicked() {
  addFiles([...ui.fileInput.files]);
  ui.fileInput.value = ""; // Picking the same file again is a change too.
  ui.input.focus();
}

// A screenshot pasted from the clipboard; text pastes as text.
export function onPaste(event) {
  const files = [...(event.clipboardData?.files ?? [])];
  if (!files.length) return;
  event.preventDefault();
  addFiles(files.map(pastedFile));
}

function pastedFile(file) {
  const generic = GENERIC_PASTE.exec(file.name);
  if (!generic) return file;
  const stamp = new Date().toISOString().slice(0, 19).replace("T", " ").replaceAll(":", ".");
  const name = t("pasted_name", { time: stamp, ext: generic[1] });
  return new File([file], name, { type: file.type, lastModified: file.lastModified });
}

// ---- Dropping files on the conversation ---------------------------------------------------

function carriesFiles(event) {
  return Boolean(event.dataTransfer?.types.includes("Files"));
}

export function onDragOver(event) {
  if (!carriesFiles(event)) return;
  event.preventDefault(); // This is what makes the conversation a drop target.
  event.dataTransfer.dropEffect = "copy";
  ui.dropHint.hidden = false;
}

export function onDragLeave(event) {
  if (!event.currentTarget.contains(event.relatedTarget)) ui.dropHint.hidden = true;
}

export function onDrop(event) {
  ui.dropHint.hidden = true;
  if (!carriesFiles(event)) return;
  event.preventDefault();
  addFiles([...event.dataTransfer.files]);
  ui.input.focus();
}

// A file dropped anywhere else on the page must not make the browser leave it to show the file.
export function onPageDrop(event) {
  if (carriesFiles(event)) event.preventDefault();
}

// ---- Uploading ----------------------------------------------------------------------------

function upload(item, file) {
  const body = new FormData();
  body.append("file", file, item.name);
  const request = new XMLHttpRequest();
  item.request = request;
  request.open("POST", UPLOAD_URL);
  request.setRequestHeader("X-CSRFToken", CSRF_TOKEN);
  request.setRequestHeader("Accept", "application/json");
  request.responseType = "json";
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) showProgress(item, event.loaded / event.total);
  });
  request.addEventListener("load", () => onAnswer(item, request));
  request.addEventListener("error", () => fail(item, t("upload_failed")));
  request.send(body);
}

function onAnswer(item, request) {
  item.request = null;
  const body = request.response;
  if (request.status === 201 && Number.isInteger(body?.id)) {
    item.status = DONE;
    item.description = body;
    redraw(item);
  } else if (request.status === 401) {
    location.assign(`${root.dataset.loginUrl}?next=${encodeURIComponent(location.pathname)}`);
  } else {
    fail(item, typeof body?.message === "string" ? body.message : t("upload_failed"));
  }
}

function fail(item, reason) {
  item.request = null;
  item.status = FAILED;
  item.error = reason;
  redraw(item);
}

function removeItem(item) {
  item.request?.abort(); // An upload that never finishes is never posted: the server sweeps it.
  state.tray.splice(state.tray.indexOf(item), 1);
  item.element.remove();
  ui.tray.hidden = state.tray.length === 0;
}

// ---- What the composer sends --------------------------------------------------------------

// { uploading, failed, ready }: the tray as the composer needs it to send or to wait.
export function trayState() {
  const count = (status) => state.tray.filter((item) => item.status === status).length;
  const ready = state.tray.filter((item) => item.status === DONE).map((item) => item.description);
  return { uploading: count(UPLOADING), failed: count(FAILED), ready };
}

// Sent: the files are the message's now.
export function clearTray() {
  for (const item of state.tray) item.element.remove();
  state.tray.length = 0;
  ui.tray.hidden = true;
}

// ---- The tray -----------------------------------------------------------------------------

function trayItem(item) {
  const element = document.createElement("li");
  element.className = "upload";
  element.dataset.status = item.status;
  const name = document.createElement("span");
  name.className = "upload-name";
  name.dir = "auto";
  name.textContent = item.name;
  const size = document.createElement("span");
  size.className = "upload-size";
  size.textContent = humanSize(item.size);
  const status = document.createElement("span");
  status.className = "upload-status";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "link-button upload-remove";
  remove.textContent = t("remove");
  remove.setAttribute("aria-label", t("remove_file", { name: item.name }));
  remove.addEventListener("click", () => {
    removeItem(item);
    ui.input.focus();
  });
  element.append(name, size, progressBar(item), status, remove);
  status.textContent = t("uploading");
  return element;
}

function progressBar(item) {
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", t("upload_progress", { name: item.name }));
  return bar;
}

function showProgress(item, fraction) {
  const bar = item.element.querySelector("progress");
  if (bar) bar.value = fraction;
}

function redraw(item) {
  const { element } = item;
  element.dataset.status = item.status;
  element.querySelector("progress")?.remove();
  const status = element.querySelector(".upload-status");
  if (item.status === FAILED) {
    status.textContent = item.error;
    status.classList.add("error");
  } else if (item.status === DONE) {
    status.textContent = t("uploaded");
    const thumbnail = item.description.thumbnail_url;
    if (thumbnail) element.prepend(trayThumbnail(thumbnail));
  }
}

// Decorative: the name beside it says which file it is.
function trayThumbnail(url) {
  const image = document.createElement("img");
  image.className = "upload-thumbnail";
  image.alt = "";
  image.src = url;
  return image;
}
