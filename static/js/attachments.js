// A message's files as elements, and the lightbox that shows an image full size.
//
// An image is a button holding its thumbnail, its box sized from the image's own width and
// height before a byte of it loads, so the conversation never jumps. Any other file is a
// download link with its name, size and type. The descriptions come from the server (the
// upload's answer, or a message object); their urls are same-origin paths or presigned ones.

import { ui } from "./dom.js";
import { locale, t } from "./i18n.js";

// The server's thumbnails are at most this big (files/images.py); the inline box matches.
const THUMB_WIDTH = 480;
const THUMB_HEIGHT = 360;
const UNITS = ["byte", "kilobyte", "megabyte", "gigabyte"];

let opener = null; // The image button the lightbox was opened from: focus goes back there.

export function attachmentList(attachments) {
  const list = document.createElement("ul");
  list.className = "attachments";
  list.setAttribute("aria-label", t("attachments_label"));
  for (const attachment of attachments) {
    const item = document.createElement("li");
    item.append(isImage(attachment) ? imageButton(attachment) : fileLink(attachment));
    list.append(item);
  }
  return list;
}

function isImage(attachment) {
  return Boolean(attachment.thumbnail_url && attachment.width && attachment.height);
}

// The thumbnail's box: the image scaled down (never up) to fit THUMB_WIDTH by THUMB_HEIGHT.
function thumbnailBox(width, height) {
  const scale = Math.min(1, THUMB_WIDTH / width, THUMB_HEIGHT / height);
  const side = (length) => Math.max(1, Math.round(length * scale));
  return { width: side(width), height: side(height) };
}

function imageButton(attachment) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "attachment-image";
  // What the lightbox needs, on the element: a pending message has no record to look it up in.
  button.dataset.url = attachment.url;
  button.dataset.name = attachment.name;
  button.dataset.width = String(attachment.width);
  button.dataset.height = String(attachment.height);
  button.setAttribute("aria-label", t("open_image", { name: attachment.name }));
  const image = document.createElement("img");
  const box = thumbnailBox(attachment.width, attachment.height);
  image.width = box.width;
  image.height = box.height;
  image.alt = attachment.name;
  image.loading = "lazy";
  image.decoding = "async";
  image.src = attachment.thumbnail_url;
  button.append(image);
  return button;
}

function fileLink(attachment) {
  const link = document.createElement("a");
  link.className = "attachment-file";
  link.href = attachment.url;
  link.download = attachment.name; // Same origin: saved under its name, never opened here.
  const name = document.createElement("span");
  name.className = "attachment-name";
  name.dir = "auto";
  name.textContent = attachment.name;
  const details = document.createElement("span");
  details.className = "attachment-details";
  details.textContent = `${humanSize(attachment.size)} · ${attachment.content_type}`;
  link.append(name, details);
  return link;
}

// 48213 as "48.2 kB" in the page's language (decimal steps, as "kB" means).
export function humanSize(size) {
  let amount = size;
  let unit = 0;
  while (amount >= 1000 && unit < UNITS.length - 1) {
    amount /= 1000;
    unit += 1;
  }
  const format = new Intl.NumberFormat(locale, {
    style: "unit",
    unit: UNITS[unit],
    unitDisplay: unit === 0 ? "long" : "short",
    maximumFractionDigits: unit === 0 ? 0 : 1,
  });
  return format.format(amount);
}

// ---- The lightbox -------------------------------------------------------------------------

// A real modal <dialog>: Escape closes it, focus stays inside, then goes back to the image.
export function openLightbox(button) {
  opener = button;
  const { url, name, width, height } = button.dataset;
  ui.lightboxTitle.textContent = name;
  ui.lightboxImage.alt = name;
  ui.lightboxImage.width = Number(width);
  ui.lightboxImage.height = Number(height);
  ui.lightboxImage.src = url;
  ui.lightboxOpen.href = url;
  ui.lightbox.showModal();
  ui.lightboxClose.focus();
}

export function onLightboxClose() {
  ui.lightboxImage.removeAttribute("src"); // A closed lightbox holds no full-size image.
  if (opener?.isConnected) opener.focus();
  opener = null;
}

// A click on the backdrop (outside the dialog's box) closes it, as Escape does.
export function onLightboxClick(event) {
  if (event.target === ui.lightbox) ui.lightbox.close();
}
