// Where this page is in the chat's one sequence of changes (edits, deletions, reactions): the
// resume frame names it, so that a reconnecting page is sent every change it missed.

let lastChange = null; // null until the first hello: nothing to resume from yet
let resuming = false; // This socket's resume frame named a change to catch up from.

export function lastChangeSeen() {
  return lastChange;
}

// Called as the resume frame goes out: until the catch-up ends, hello.changes is not ours yet.
export function setResumingChanges(value) {
  resuming = value;
}

// A plain hello starts us at its number; a resuming one waits for the replay and `resumed`.
export function noteHello(changes) {
  if (!resuming && typeof changes === "number") lastChange = changes;
}

// A live or replayed message_changed frame; null numbers (nothing changed) say nothing.
export function noteChange(change) {
  if (typeof change === "number") lastChange = Math.max(lastChange ?? 0, change);
}

// The catch-up is over: live changes start after this one.
export function noteResumed(changes) {
  resuming = false;
  if (typeof changes === "number") lastChange = changes;
}
