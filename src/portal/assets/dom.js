// Building the page: every value from the API goes in as text (textContent or a text node),
// never as markup.
export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

export function show(node, visible) { (typeof node === "string" ? $(node) : node).hidden = !visible; }

export function say(id, text) { const node = $(id); node.textContent = text || ""; node.hidden = !text; }

// A URL as it may be shown: query values and a password replaced, so a token in the query
// string is never on screen.
export function maskUrl(raw) {
  let url;
  try { url = new URL(raw); } catch { return raw; }
  if (url.password) url.password = "•••";
  const params = [...url.searchParams.keys()];
  if (!params.length) return url.toString();
  const query = params.map((key) => encodeURIComponent(key) + "=•••").join("&");
  return url.origin + url.pathname + "?" + query + url.hash;
}

export const EVENT_TYPES = [
  ["sandbox.lifecycle.created", "Created"],
  ["sandbox.lifecycle.killed", "Killed"],
  ["sandbox.lifecycle.paused", "Paused"],
  ["sandbox.lifecycle.resumed", "Resumed"],
  ["sandbox.lifecycle.updated", "Updated (timeout or network changes)"],
  ["sandbox.lifecycle.checkpointed", "Checkpointed (sent by this emitter only, not by E2B Cloud)"],
];

export const shortType = (type) => String(type || "").replace("sandbox.lifecycle.", "");

export function badge(text, kind) { return el("span", { class: "badge" + (kind ? " " + kind : ""), text }); }

export function when(timestamp) {
  if (!timestamp) return "—";
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? String(timestamp) : date.toLocaleString();
}

export const ms = (value) => (value === undefined || value === null ? "—" : Math.round(value) + " ms");

// Opens a modal dialog: the browser keeps focus inside it and closes it on Escape; focus goes
// back to what opened it.
export function openDialog(dialog, focus, opener = document.activeElement) {
  dialog.addEventListener("close", () => {
    if (opener && opener.isConnected && !document.querySelector("dialog[open]")) opener.focus();
  }, { once: true });
  dialog.showModal();
  if (focus) focus.focus();
}

// Asks before something that cannot be undone; resolves true when confirmed.
export function confirmAction(title, text, action) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    const done = (answer) => () => { dialog.close(); resolve(answer); };
    $("confirm-ok").onclick = done(true);
    $("confirm-cancel").onclick = done(false);
    dialog.oncancel = () => resolve(false);
    openDialog(dialog, $("confirm-cancel"));
  });
}

// Shows a new secret once, with a copy button; forgets it when the dialog closes.
export function showSecretOnce(secret, opener) {
  const dialog = $("secret-dialog");
  $("secret-value").textContent = secret;
  $("copied").textContent = "";
  $("copy-secret").onclick = async () => {
    try { await navigator.clipboard.writeText(secret); $("copied").textContent = "Copied"; }
    catch { getSelection().selectAllChildren($("secret-value")); $("copied").textContent = "Selected: press Ctrl+C"; }
  };
  $("secret-done").onclick = () => dialog.close();
  dialog.addEventListener("close", () => { $("secret-value").textContent = ""; }, { once: true });
  openDialog(dialog, $("copy-secret"), opener);
}

// 32 random bytes from the browser's CSPRNG, base64url: 43 characters.
export function generateSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
