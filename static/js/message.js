// One message as an element: its author's avatar, who and when, "edited", the quote of the
// message it replies to, its text (or a tombstone), its files, its reactions and its actions.
// User text only ever goes in as textContent; formatting is copied node by node (markup.js).
// Buttons carry data attributes and no listeners: actions.js listens on each room's list.

import { attachmentList } from "./attachments.js";
import { avatarElement } from "./avatars.js";
import { formats, t, tCount } from "./i18n.js";
import { formatted } from "./markup.js";
import { avatarOf, nameOf } from "./people.js";
import { state } from "./state.js";

export function messageElement(frame, own) {
  const item = document.createElement("li");
  item.className = own ? "message own" : "message";
  if (frame.id) item.dataset.id = frame.id;
  if (frame.deleted) item.classList.add("deleted");
  if (frame.mentions?.includes(state.me.id)) item.classList.add("mentions-me");
  // What grouping.js reads: who wrote it, and when (none yet while it is pending).
  if (Number.isInteger(frame.user_id)) item.dataset.userId = frame.user_id;
  if (frame.ts) item.dataset.ts = frame.ts;
  item.append(avatarElement(frame.user_id, frame.user, pictureOf(frame)));
  if (frame.ts) item.append(gutterTime(frame.ts));
  item.append(metaLine(frame));
  if (frame.reply_to) item.append(replyQuote(frame.reply_to));
  const files = frame.deleted ? [] : (frame.attachments ?? []);
  // A message of files alone has no text: its caption is optional.
  if (frame.deleted || frame.text || !files.length) item.append(textBlock(frame));
  if (files.length) item.append(attachmentList(files));
  if (frame.preview && !frame.deleted) item.append(previewCard(frame.preview));
  if (frame.reactions?.length) item.append(reactionBar(frame));
  if (frame.id && !frame.deleted) item.append(actionBar(frame, own));
  return item;
}

// The picture the message carries; a pending one carries none yet: its author's latest.
function pictureOf(frame) {
  if (frame.avatar_url !== undefined) return frame.avatar_url;
  return avatarOf(frame.user_id) ?? null;
}

function metaLine(frame) {
  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = frame.user;
  meta.append(author);
  if (frame.bot) meta.append(" ", botBadge());
  if (frame.ts) meta.append(" ", timeElement(frame.ts));
  if (frame.edited_at && !frame.deleted) meta.append(" ", editedElement(frame.edited_at));
  if (frame.mentions?.includes(state.me.id)) meta.append(" ", mentionMark());
  return meta;
}

// Today's messages show the time only; older ones the date too. The tooltip has it all.
function timeElement(ts) {
  const moment = new Date(ts);
  const time = document.createElement("time");
  time.className = "sent";
  time.dateTime = ts;
  const today = moment.toDateString() === new Date().toDateString();
  time.textContent = (today ? formats.time : formats.dateTime).format(moment);
  time.title = formats.full.format(moment);
  return time;
}

// A continued message's time, shown in the avatar's place on hover or focus: hours and minutes
// only, to fit there (its group's header has the date and AM/PM). For the eye only: the header's
// own time, visually hidden, is what screen readers read.
function gutterTime(ts) {
  const time = document.createElement("span");
  time.className = "gutter-time";
  time.setAttribute("aria-hidden", "true");
  const parts = formats.time.formatToParts(new Date(ts));
  const kept = parts.filter((part) => part.type !== "dayPeriod");
  time.textContent = kept.map((part) => part.value).join("").trim();
  return time;
}

function editedElement(editedAt) {
  const time = document.createElement("time");
  time.className = "edited";
  time.dateTime = editedAt;
  time.textContent = t("edited");
  time.title = t("edited_at", { time: formats.full.format(new Date(editedAt)) });
  return time;
}

// The author is a bot (an administrator made it; its webhooks post as it).
function botBadge() {
  const badge = document.createElement("span");
  badge.className = "badge bot-badge";
  badge.textContent = t("bot_badge");
  return badge;
}

// The highlight is not the only sign: the words say it too.
function mentionMark() {
  const mark = document.createElement("span");
  mark.className = "mention-mark";
  mark.textContent = t("mentions_you");
  return mark;
}

function textBlock(frame) {
  const text = document.createElement("div");
  text.className = "text";
  text.dir = "auto"; // Right-to-left messages read right to left, in their own isolate.
  if (frame.deleted) {
    text.classList.add("tombstone");
    text.textContent = t("message_deleted");
  } else if (typeof frame.html === "string") {
    text.classList.add("formatted");
    text.append(formatted(frame.html));
  } else {
    text.textContent = frame.text; // Not confirmed yet, or nothing to format: as typed.
  }
  return text;
}

// ---- Replies ------------------------------------------------------------------------------

// A button: activating it shows the parent (actions.js loads older pages until it is there).
export function replyQuote(quoted) {
  const quote = document.createElement("button");
  quote.type = "button";
  quote.className = "reply-quote";
  quote.dataset.replyId = quoted.id;
  const hidden = document.createElement("span");
  hidden.className = "visually-hidden";
  hidden.textContent = t("in_reply_to");
  const who = document.createElement("span");
  who.className = "reply-author";
  who.textContent = quoted.user;
  const excerpt = document.createElement("span");
  excerpt.className = "reply-excerpt";
  excerpt.dir = "auto";
  excerpt.textContent = quoted.deleted ? t("reply_deleted") : quoted.excerpt;
  if (quoted.deleted) excerpt.classList.add("tombstone");
  quote.append(hidden, " ", who, " ", excerpt);
  return quote;
}

// ---- Reactions ----------------------------------------------------------------------------

function reactionBar(frame) {
  const bar = document.createElement("div");
  bar.className = "reactions";
  bar.setAttribute("role", "group");
  bar.setAttribute("aria-label", t("reactions_label"));
  for (const reaction of frame.reactions) bar.append(reactionButton(reaction));
  return bar;
}

// One toggle per emoji: pressed when I am among those who reacted with it.
function reactionButton(reaction) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "reaction";
  button.dataset.emoji = reaction.emoji;
  const mine = reaction.user_ids.includes(state.me.id);
  button.setAttribute("aria-pressed", String(mine));
  const emoji = document.createElement("span");
  emoji.className = "reaction-emoji";
  emoji.textContent = reaction.emoji;
  const count = document.createElement("span");
  count.className = "reaction-count";
  count.textContent = String(reaction.count);
  button.append(emoji, " ", count);
  const who = reactedBy(reaction);
  button.title = who;
  const label = t("reaction_label", { emoji: reaction.emoji, count: reaction.count, who });
  button.setAttribute("aria-label", label);
  return button;
}

// "alice, bob and 2 others": the names this page knows, the rest counted.
export function reactedBy(reaction) {
  const known = reaction.user_ids.map((id) => nameOf(id)).filter((name) => name !== undefined);
  if (!known.length) return tCount("reacted_count", reaction.count);
  const others = reaction.count - known.length;
  const parts = others > 0 ? [...known, tCount("reacted_others", others)] : known;
  return t("reacted_by", { names: formats.list.format(parts) });
}

// ---- Link previews ------------------------------------------------------------------------

// The card of the message's first link, as the server fetched it: its title links to the page,
// the image is our copy (never the page's), every word goes in as textContent.
function previewCard(preview) {
  const card = document.createElement("div");
  card.className = "preview";
  if (preview.image_url) card.append(previewImage(preview));
  const body = document.createElement("div");
  body.className = "preview-body";
  if (preview.site_name) {
    const site = document.createElement("span");
    site.className = "preview-site";
    site.textContent = preview.site_name;
    body.append(site);
  }
  body.append(previewTitle(preview));
  if (preview.description) {
    const description = document.createElement("p");
    description.className = "preview-description";
    description.dir = "auto";
    description.textContent = preview.description;
    body.append(description);
  }
  card.append(body);
  return card;
}

function previewTitle(preview) {
  const title = document.createElement(isWebAddress(preview.url) ? "a" : "span");
  title.className = "preview-title";
  title.dir = "auto";
  title.textContent = preview.title || preview.url;
  if (title.tagName === "A") {
    title.href = preview.url;
    title.target = "_blank";
    title.rel = "noopener noreferrer nofollow";
  }
  return title;
}

function isWebAddress(url) {
  try {
    return ["http:", "https:"].includes(new URL(url).protocol);
  } catch {
    return false;
  }
}

// Decorative: the title beside it says what the page is.
function previewImage(preview) {
  const image = document.createElement("img");
  image.className = "preview-image";
  image.src = preview.image_url;
  image.alt = "";
  image.loading = "lazy";
  if (preview.image_width && preview.image_height) {
    image.width = preview.image_width;
    image.height = preview.image_height;
  }
  return image;
}

// ---- Actions ------------------------------------------------------------------------------

// Shown on hover and when focus is inside; every control a real button, reachable by Tab.
function actionBar(frame, own) {
  const bar = document.createElement("div");
  bar.className = "actions";
  bar.setAttribute("role", "group");
  bar.setAttribute("aria-label", t("actions_label", { name: frame.user }));
  bar.append(actionButton("reply", t("reply")), actionButton("react", t("react")));
  if (own) bar.append(actionButton("edit", t("edit")));
  if (own && frame.preview) bar.append(actionButton("unpreview", t("remove_preview")));
  // Administrators delete anyone's message (moderation); nobody edits someone else's.
  if (own || state.me.admin) bar.append(actionButton("delete", t("delete")));
  return bar;
}

function actionButton(action, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `action action-${action}`;
  button.dataset.action = action;
  button.textContent = label;
  if (action === "react") {
    button.setAttribute("aria-haspopup", "dialog");
    button.setAttribute("aria-expanded", "false");
  }
  return button;
}
