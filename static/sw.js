// The service worker (served at /sw.js, scope /): it shows the server's Web Push notifications
// and, on a click, brings the chat to the message: an open chat tab is focused and told which
// room and message to show; without one, a new tab opens at the notification's address.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("push", onPush);
self.addEventListener("notificationclick", onNotificationClick);

// The payload: { title, body, url, tag, room, message_id } (push/audience.py), encrypted for
// this browser alone. A push that is not JSON still shows something: browsers require it.
function onPush(event) {
  let data = {};
  try {
    data = event.data?.json() ?? {};
  } catch {
    console.warn("a push that is not JSON");
  }
  event.waitUntil(showPush(data));
}

// One notification per room (its tag): a burst replaces it, and renotify makes it heard again.
function showPush(data) {
  const tag = typeof data.tag === "string" ? data.tag : "";
  return self.registration.showNotification(String(data.title ?? ""), {
    body: String(data.body ?? ""),
    tag,
    renotify: tag !== "",
    icon: "/static/favicon.svg",
    data: { url: sameOrigin(data.url), room: data.room ?? null, id: data.message_id ?? null },
  });
}

// Only an address on this site is ever opened.
function sameOrigin(url) {
  try {
    const parsed = new URL(String(url ?? "/"), self.location.origin);
    return parsed.origin === self.location.origin ? parsed.href : "/";
  } catch {
    return "/";
  }
}

function onNotificationClick(event) {
  event.notification.close();
  event.waitUntil(openChat(event.notification.data ?? {}));
}

async function openChat(data) {
  const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const chat = tabs.find((tab) => new URL(tab.url).pathname === "/");
  if (chat && data.room) {
    chat.postMessage({ type: "open_message", room: data.room, id: data.id });
    return chat.focus();
  }
  return self.clients.openWindow(data.url ?? "/");
}
