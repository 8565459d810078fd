// The portal's start: signing in and out, which view the address (#/...) shows, and live
// updates — the visible view is asked again every few seconds (deliveries are logged in
// Postgres by whichever instance delivers, so asking works behind any instance), and redrawn
// only when something changed.
import { ApiError, currentSession, session, signIn, call } from "./api.js";
import { $, say, show } from "./dom.js";
import { renderList, forgetList } from "./list.js";
import { setUpEditor, openEditor } from "./editor.js";
import { renderDetail, setUpDetail } from "./detail.js";
import { setUpOverview } from "./overview.js";
import { setUpDeliveries } from "./deliveries.js";
import { setUpTimeline } from "./timeline.js";

const REFRESH_MS = 4000;
const VIEWS = ["signin", "view-list", "view-detail", "view-timeline"];
let signedIn = false;
let timer = null;

function showView(id) {
  for (const view of VIEWS) show(view, view === id);
  for (const link of document.querySelectorAll("header nav a")) {
    const current = (id === "view-timeline") === (link.id === "nav-timeline");
    if (current && id !== "signin") link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "webhooks" && parts[1]) return { view: "view-detail", id: parts[1], tab: parts[2] === "deliveries" ? "deliveries" : "overview" };
  if (parts[0] === "timeline") return { view: "view-timeline" };
  return { view: "view-list" };
}

// Draws the view the address names; `fresh` when the reader navigated (focus moves to its
// heading), not on a live refresh.
async function render(fresh) {
  if (!signedIn) return;
  const where = route();
  try {
    if (fresh) showView(where.view);
    if (where.view === "view-list") await renderList();
    if (where.view === "view-detail") await renderDetail(where.id, where.tab, fresh);
    if (fresh) document.querySelector(`#${where.view} h1`).focus();
    say("live", "Live: updated " + new Date().toLocaleTimeString());
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && where.view === "view-detail") { navigate("#/webhooks"); return; }
    say("live", "Not updated: " + error.message);
  }
}

export function navigate(hash) {
  if (location.hash === hash) render(true); else location.hash = hash;
}

function enter(answer) {
  signedIn = true;
  session(answer.csrfToken, signedOut);
  $("team").textContent = "Team " + answer.teamId;
  show("nav", true);
  show("sign-out", true);
  clearInterval(timer);
  timer = setInterval(() => { if (!document.querySelector("dialog[open]")) render(false); }, REFRESH_MS);
  render(true);
}

function signedOut() {
  signedIn = false;
  session(null);
  clearInterval(timer);
  forgetList();
  $("team").textContent = "";
  say("live", "");
  show("nav", false);
  show("sign-out", false);
  showView("signin");
  $("api-key").focus();
}

async function start() {
  setUpEditor();
  setUpDetail(navigate);
  setUpOverview(() => render(false));
  setUpDeliveries(() => render(false));
  setUpTimeline();
  $("add-webhook").addEventListener("click", () => openEditor(null, (saved) => navigate("#/webhooks/" + encodeURIComponent(saved.id))));
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    say("signin-error", "");
    const input = $("api-key");
    try {
      const answer = await signIn(input.value.trim());
      input.value = "";
      enter(answer);
    } catch (error) {
      const message = error.status === 429
        ? "Too many refused keys from this address; wait a minute and try again."
        : error.status === 401 ? "This key was not accepted. Use an API key of your team (e2b_…) from the E2B dashboard." : error.message;
      say("signin-error", message);
      input.select();
    }
  });
  $("sign-out").addEventListener("click", async () => {
    try { await call("DELETE", "/portal/api/session"); } finally { signedOut(); history.replaceState(null, "", "#/webhooks"); }
  });
  window.addEventListener("hashchange", () => render(true));
  const existing = await currentSession();
  if (existing) enter(existing); else signedOut();
}

start();
