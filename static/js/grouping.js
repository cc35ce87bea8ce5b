// Grouped messages: a message from the same person as the one above it in the list, within
// GROUP_MS of it, continues that group (class "continued"): no avatar, no author line. The class
// is worked out from the list's order and each element's data-user-id and data-ts alone, so it is
// right however messages arrive (older pages above, live ones below, replaced, removed).
//
// A continued message still names its author to screen readers: its author and time are only
// visually hidden (style.css), because a list item is often read alone (by list item navigation,
// or after jumping to a reply's parent) and must not become an anonymous text.
// Replies group like any message: their quote says what they answer. A deleted message (a
// tombstone) groups like any message too: deleting one must not move the others around it.

const GROUP_MS = 5 * 60 * 1000;

// After a message was put in the list or replaced: it and the one after it may have changed.
export function regroupAround(item) {
  setContinued(item);
  if (item.nextElementSibling) setContinued(item.nextElementSibling);
}

// A message leaves the list: the one after it now follows another one.
export function removeGrouped(item) {
  const next = item.nextElementSibling;
  item.remove();
  if (next) setContinued(next);
}

// The whole list at once, after a batch (a room cleared but for its pending messages).
export function regroup(list) {
  for (const item of list.children) setContinued(item);
}

function setContinued(item) {
  item.classList.toggle("continued", continues(item, item.previousElementSibling));
}

function continues(item, previous) {
  const author = item.dataset.userId;
  if (!previous || !author || previous.dataset.userId !== author) return false;
  return Math.abs(timeOf(item) - timeOf(previous)) <= GROUP_MS;
}

// A pending message has no ts yet: it is being sent now (the server stamps it when it stores it).
function timeOf(item) {
  const ts = Date.parse(item.dataset.ts ?? "");
  return Number.isNaN(ts) ? Date.now() : ts;
}
