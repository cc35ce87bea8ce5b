// Web Push on the page. The chat page registers the service worker (/sw.js, scope /); the
// profile page's section (templates/profile/_push.html) subscribes this browser or
// unsubscribes it, and says plainly when the browser or the server cannot. Its strings are the
// section's data attributes, rendered in the user's language.

const WORKER_URL = "/sw.js";

export function pushSupported() {
  return (
    window.isSecureContext &&
    "serviceWorker" in navigator &&
    "PushManager" in window &&
    "Notification" in window
  );
}

// The chat page's worker: notification clicks reach its tabs through it.
export async function registerWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register(WORKER_URL, { scope: "/" });
  } catch (error) {
    console.warn("the service worker could not be registered", error);
    return null;
  }
}

// What the worker tells this tab (a notification was clicked): handler(data).
export function onWorkerMessage(handler) {
  navigator.serviceWorker?.addEventListener("message", (event) => handler(event.data ?? {}));
}

// ---- The profile page's section -----------------------------------------------------------

function setUpSection(section) {
  const view = {
    section,
    enable: section.querySelector("#push-enable"),
    disable: section.querySelector("#push-disable"),
    status: section.querySelector("#push-status"),
    registration: null,
  };
  view.enable.addEventListener("click", () => enable(view));
  view.disable.addEventListener("click", () => disable(view));
  showState(view);
}

async function showState(view) {
  if (!pushSupported()) {
    say(view, "unsupported");
    return;
  }
  view.registration = await registerWorker();
  if (!view.registration) {
    say(view, "unsupported");
    return;
  }
  const subscription = await currentSubscription(view);
  markThisBrowser(view, subscription);
  const known = subscription && listed(view, subscription.endpoint);
  view.enable.hidden = Boolean(known);
  view.disable.hidden = !known;
  if (known) say(view, "enabled");
  else say(view, Notification.permission === "denied" ? "denied" : "disabled");
  view.section.dataset.state = known ? "enabled" : "disabled";
}

async function currentSubscription(view) {
  try {
    return await view.registration.pushManager.getSubscription();
  } catch {
    return null;
  }
}

function listed(view, endpoint) {
  return [...view.section.querySelectorAll(".push-browsers li")].some(
    (item) => item.dataset.endpoint === endpoint,
  );
}

function markThisBrowser(view, subscription) {
  for (const item of view.section.querySelectorAll(".push-browsers li")) {
    const mine = Boolean(subscription) && item.dataset.endpoint === subscription.endpoint;
    item.querySelector(".push-this").hidden = !mine;
  }
}

function say(view, key) {
  view.status.textContent = view.section.dataset[key] ?? "";
}

async function enable(view) {
  if ((await Notification.requestPermission()) !== "granted") {
    say(view, "denied");
    return;
  }
  const key = await fetchKey(view);
  if (!key) {
    say(view, "serverFailed");
    return;
  }
  let subscription;
  try {
    subscription = await view.registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: decodeKey(key),
    });
  } catch (error) {
    console.warn("the browser could not subscribe", error);
    say(view, "failed");
    return;
  }
  if (await send(view, "POST", subscription.toJSON())) location.reload();
  else say(view, "serverFailed");
}

async function disable(view) {
  const subscription = await currentSubscription(view);
  if (!subscription) {
    location.reload();
    return;
  }
  const { endpoint } = subscription;
  await subscription.unsubscribe().catch(() => false);
  // Gone from the browser either way; the server forgets it now (or on its next push, 410).
  await send(view, "DELETE", { endpoint });
  location.reload();
}

async function fetchKey(view) {
  try {
    const response = await fetch(view.section.dataset.keyUrl, { headers: jsonHeaders(view) });
    return response.ok ? (await response.json()).public_key : null;
  } catch {
    return null;
  }
}

async function send(view, method, body) {
  try {
    const response = await fetch(view.section.dataset.subscriptionsUrl, {
      method,
      headers: { ...jsonHeaders(view), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return response.ok;
  } catch {
    return false;
  }
}

function jsonHeaders(view) {
  return { Accept: "application/json", "X-CSRFToken": view.section.dataset.csrf };
}

// The server's key, base64url, as the bytes PushManager.subscribe takes.
function decodeKey(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (char) => char.charCodeAt(0));
}

const section = document.getElementById("push-section");
if (section) setUpSection(section);
