// A message's formatting, as DOM nodes. The server renders the Markdown subset and sanitizes it
// (core/formatting.py); this copies only the same few tags again, element by element, from an
// inert parsed document: nothing reaches innerHTML, and nothing the server let through by
// mistake (a script, a handler attribute, a javascript: link) survives the copy.

const TAGS = new Set([
  "P", "BR", "EM", "STRONG", "S", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI", "A", "SPAN",
]);
const SCHEMES = new Set(["http:", "https:", "mailto:"]);
// Where markdown-it's line breaks between blocks are only layout, not text.
const BLOCK_PARENTS = new Set(["BODY", "UL", "OL", "BLOCKQUOTE"]);

export function formatted(html) {
  const source = new DOMParser().parseFromString(html, "text/html").body;
  const fragment = document.createDocumentFragment();
  copyChildren(source, fragment);
  return fragment;
}

function copyChildren(from, to) {
  for (const node of from.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      if (!(BLOCK_PARENTS.has(from.tagName) && !node.data.trim())) to.append(node.data);
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      const copy = copyElement(node);
      if (copy) {
        copyChildren(node, copy);
        to.append(copy);
      } else {
        copyChildren(node, to); // Not ours to draw: keep its text only.
      }
    }
  }
}

function copyElement(node) {
  if (!TAGS.has(node.tagName)) return null;
  const copy = document.createElement(node.tagName.toLowerCase());
  if (node.tagName === "A") return link(copy, node.getAttribute("href"));
  if (node.tagName === "SPAN") return mention(copy, node);
  if (node.tagName === "OL" && /^\d{1,9}$/.test(node.getAttribute("start") || "")) {
    copy.start = Number(node.getAttribute("start"));
  }
  return copy;
}

// The one span there is: <span class="mention" data-user-id="42">@name</span>, nothing more.
function mention(copy, node) {
  const id = node.getAttribute("data-user-id") || "";
  if (node.getAttribute("class") !== "mention" || !/^\d{1,18}$/.test(id)) return null;
  copy.className = "mention";
  copy.dataset.userId = id;
  return copy;
}

function link(copy, href) {
  let url;
  try {
    url = new URL(href);
  } catch {
    return null;
  }
  if (!SCHEMES.has(url.protocol)) return null;
  copy.href = url.href;
  copy.target = "_blank";
  copy.rel = "noopener noreferrer nofollow";
  return copy;
}
