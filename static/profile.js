// The profile page's picture: the current one (or the initials, as the chat draws them), a
// preview of the file chosen, and the upload, sent as a script so that an error is told beside
// its input. Without this script the forms still post, and the answer is a flash.

import { avatarElement } from "./js/avatars.js";

const form = document.getElementById("avatar-form");
const input = document.getElementById("avatar-input");
const error = document.getElementById("avatar-error");
const status = document.getElementById("avatar-status");
const current = document.getElementById("avatar-current");
const preview = document.getElementById("avatar-preview");
const previewImage = document.getElementById("avatar-preview-image");
const removeForm = document.getElementById("avatar-remove");
const texts = form.dataset;
const ACCEPTED = new Set(input.accept.split(","));

function showCurrent(url) {
  const userId = Number(current.dataset.userId);
  current.replaceChildren(avatarElement(userId, current.dataset.name, url || null));
  removeForm.hidden = !url;
}

function showError(message) {
  error.textContent = message;
  error.hidden = !message;
  if (message) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "avatar-hint avatar-error");
  } else {
    input.removeAttribute("aria-invalid");
    input.setAttribute("aria-describedby", "avatar-hint");
  }
}

// What the page can tell before sending: no file, not a picture, too large.
function problemWith(file) {
  if (!file) return texts.noFile;
  if (!ACCEPTED.has(file.type)) return texts.notAnImage;
  if (file.size > Number(texts.maxBytes)) return texts.tooLarge;
  return "";
}

// A data: address (the CSP allows data: images, not blob:); the circle crops it as the server
// does, to its centre square.
function showPreview() {
  const file = input.files[0];
  status.textContent = "";
  const problem = file ? problemWith(file) : "";
  showError(problem);
  if (!file || problem) {
    preview.hidden = true;
    return;
  }
  const reader = new FileReader();
  reader.addEventListener("load", () => {
    if (input.files[0] !== file) return; // Another file was chosen meanwhile.
    previewImage.src = reader.result;
    preview.hidden = false;
  });
  reader.readAsDataURL(file);
}

async function upload(event) {
  event.preventDefault();
  const problem = problemWith(input.files[0]);
  showError(problem);
  if (problem) {
    input.focus();
    return;
  }
  let answer;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    answer = { ok: response.ok, body: await response.json() };
  } catch {
    answer = { ok: false, body: { message: texts.failed } };
  }
  if (!answer.ok) {
    showError(answer.body.message || texts.failed);
    input.focus();
    return;
  }
  showCurrent(answer.body.avatar_url);
  form.reset();
  preview.hidden = true;
  status.textContent = texts.saved;
}

showCurrent(current.dataset.avatarUrl);
input.addEventListener("change", showPreview);
form.addEventListener("submit", upload);
