// A person's avatar: their picture when the server gives one (avatar_url, in messages and
// hello's user; people.js keeps the latest of each), else a circle with their initials on a
// colour picked from their user id. Decorative: the name beside it is the text; screen readers skip it (aria-hidden).

import { locale } from "./i18n.js";

export const PALETTE_SIZE = 8; // style.css defines --avatar-0-bg … --avatar-7-bg and their texts.
const AVATAR_PX = 36; // The message size; the online list shrinks it in CSS.

const graphemes =
  typeof Intl.Segmenter === "function"
    ? new Intl.Segmenter(locale, { granularity: "grapheme" })
    : null; // Array.from below keeps code points whole at least.

export function avatarElement(userId, name, url = null) {
  if (!url) return initialsElement(userId, name);
  const image = document.createElement("img");
  image.className = avatarClass(userId);
  image.src = url;
  image.alt = "";
  image.width = AVATAR_PX;
  image.height = AVATAR_PX;
  image.loading = "lazy";
  image.setAttribute("aria-hidden", "true");
  // A picture that cannot load (gone, refused) gives way to the initials.
  image.addEventListener("error", () => image.replaceWith(initialsElement(userId, name)), {
    once: true,
  });
  return image;
}

function initialsElement(userId, name) {
  const circle = document.createElement("span");
  circle.className = avatarClass(userId);
  circle.setAttribute("aria-hidden", "true");
  circle.textContent = initialsOf(name);
  return circle;
}

// The colour follows the id, not the name: it survives a rename, and two "alex" differ.
function avatarClass(userId) {
  return `avatar avatar-${colourIndex(userId)}`;
}

export function colourIndex(userId) {
  const id = Number.isSafeInteger(userId) ? userId : 0;
  return ((id % PALETTE_SIZE) + PALETTE_SIZE) % PALETTE_SIZE;
}

// "jean.dupont" → "JD", "alice" → "AL", "élodie" → "ÉL". Names are an email's local part, so dots,
// dashes and underscores separate words too. Whole graphemes: an emoji or an accent stays whole.
export function initialsOf(name) {
  const words = String(name ?? "")
    .split(/[\s._\-+]+/u)
    .filter(Boolean);
  if (!words.length) return "?";
  const picked =
    words.length > 1
      ? [firstGraphemes(words[0], 1), firstGraphemes(words[1], 1)]
      : [firstGraphemes(words[0], 2)];
  return picked.join("").toLocaleUpperCase(locale);
}

function firstGraphemes(text, count) {
  const parts = graphemes
    ? Array.from(graphemes.segment(text), (part) => part.segment)
    : Array.from(text);
  return parts.slice(0, count).join("");
}
