// Names by user id, learnt from every frame that names someone (messages, members, presence,
// rooms): for reaction tooltips, mentions shown as @name in the composer, and replies. Names
// are not unique and people rename themselves: the id is what counts, the latest name is shown.
// Pictures too, for the online list: the avatar_url of messages and of hello's user.

const names = new Map(); // user id -> latest name seen
const avatars = new Map(); // user id -> latest avatar_url seen
const avatarWatchers = []; // Called with a user id whose picture changed (render.js: the list).

// Absent says nothing (an older server); null means no picture (any more).
export function learnAvatar(id, url) {
  const before = avatars.get(id);
  if (typeof url === "string") avatars.set(id, url);
  else if (url === null) avatars.delete(id);
  if (avatars.get(id) !== before) for (const watcher of avatarWatchers) watcher(id);
}

export function onAvatarChange(watcher) {
  avatarWatchers.push(watcher);
}

export function avatarOf(id) {
  return avatars.get(id);
}

export function learnName(id, name) {
  if (typeof id === "number" && typeof name === "string") names.set(id, name);
}

export function nameOf(id) {
  return names.get(id);
}

// Everyone named in a message as it is now: its author, its parent's author.
export function learnFromMessage(message) {
  learnName(message.user_id, message.user);
  learnAvatar(message.user_id, message.avatar_url);
  if (message.reply_to) learnName(message.reply_to.user_id, message.reply_to.user);
}

// "<@42>" as "@alice", as the server writes excerpts: for quotes, notifications, the composer.
export function mentionsAsNames(text, onName = () => {}) {
  return text.replace(/<@(\d{1,18})>/g, (whole, digits) => {
    const id = Number(digits);
    const name = nameOf(id);
    if (name === undefined) return whole;
    onName(name, id);
    return `@${name}`;
  });
}
