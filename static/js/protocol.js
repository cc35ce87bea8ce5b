// The wire protocol as the page sees it: every frame type it sends or receives, the error code it
// acts on, and every close code, named in one place. The server names the same in Python
// (hub.py, backplane.py, protocol.py); the README's protocol reference lists them all.

// Frames the page sends.
export const ClientFrame = Object.freeze({
  RESUME: "resume", // The first frame of a socket opened with resume=1.
  MESSAGE: "message",
  SWITCH: "switch",
  CREATE_ROOM: "create_room",
  JOIN_ROOM: "join_room",
  LEAVE_ROOM: "leave_room",
  OPEN_DM: "open_dm",
  HISTORY: "history",
  TYPING: "typing",
  READ: "read",
  EDIT: "edit",
  DELETE: "delete",
  REACT: "react",
  UNREACT: "unreact",
  UNPREVIEW: "unpreview", // Take the link preview off one's own message.
  MEMBERS: "members",
  WHO: "who", // Everyone online in a room (a room entry lists the first of them).
  INVITE: "invite",
  INVITE_LINK: "invite_link",
  UPDATE_ROOM: "update_room",
  ARCHIVE_ROOM: "archive_room",
  REMOVE_MEMBER: "remove_member",
  NOTIFY: "notify",
  VISIBILITY: "visibility", // Whether this tab is visible (Web Push skips people who look).
});

// Frames the server sends.
export const ServerFrame = Object.freeze({
  HELLO: "hello",
  MESSAGE: "message",
  HISTORY: "history",
  ROOM: "room",
  ROOM_LEFT: "room_left",
  ROOM_CREATED: "room_created",
  PRESENCE: "presence",
  TYPING: "typing",
  READ: "read",
  ERROR: "error",
  SWITCHED: "switched",
  MESSAGE_CHANGED: "message_changed",
  MEMBERS: "members",
  ONLINE: "online", // The answer to "who".
  RESUMED: "resumed",
  ROOM_UPDATED: "room_updated",
  ROOM_DELETED: "room_deleted",
  INVITED: "invited",
  INVITE_LINK: "invite_link",
  MEMBER_REMOVED: "member_removed",
  NOTIFY: "notify",
});

// What tells a person about new messages in a room (room frames' "notify", the notify frame).
export const Notify = Object.freeze({ ALL: "all", MENTIONS: "mentions", NOTHING: "nothing" });

// The one error code the page treats specially: nothing was saved, the same frame may be re-sent.
export const ERROR_UNAVAILABLE = "unavailable";

// Room kinds, as room frames name them. A private room's key is "p:" and random characters.
export const Kind = Object.freeze({ PUBLIC: "public", PRIVATE: "private", DIRECT: "direct" });

// Close codes. Only 4001 and 4029 change what the page does (connection.js); on any other it
// reconnects with backoff and resumes. The rest are named so that the list is complete.
export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001; // The server is shutting down (SIGTERM).
export const CLOSE_ABNORMAL = 1006; // No close frame (a dropped connection): set by the browser.
export const CLOSE_BAD_DATA = 1007; // A text frame that is not valid UTF-8.
export const CLOSE_POLICY = 1008; // No pong within a ping interval.
export const CLOSE_TOO_BIG = 1009; // A frame over CHAT_MAX_FRAME_BYTES.
export const CLOSE_RESTART = 1012; // The worker lost the backplane and may have missed events.
export const CLOSE_TRY_AGAIN = 1013; // The greeting failed (the database is down, say).
export const CLOSE_REVOKED = 4001; // Signed out or password changed: go to the login page.
export const CLOSE_FLOOD = 4029; // Kept flooding after rate_limited errors: wait longer.

export const GENERAL = "general"; // The room everyone is in, from the start.
export const MAX_RESUME_ROOMS = 200; // The most rooms one resume frame may name.
export const HISTORY_PAGE = 50; // Messages asked for per history frame.
export const EXCERPT_CHARS = 100; // A reply's quote of its parent, as the server cuts it.

// The key of the direct room between two people: "dm:<lower id>:<higher id>".
export function directRoomKey(userId, otherId) {
  return `dm:${Math.min(userId, otherId)}:${Math.max(userId, otherId)}`;
}
