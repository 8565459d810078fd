// The deliveries tab: attempts grouped by event, newest first, filtered by status, event type
// and time, paged with the API's cursor; each attempt expands to its request, its answer or
// error, and its duration. Events the webhook gave up on can be re-sent from here.
import { call, query, webhookPath } from "./api.js";
import { $, badge, el, EVENT_TYPES, maskUrl, ms, shortType, show, when } from "./dom.js";
import { failureText } from "./list.js";

const PAGE = 25;
let view = { id: null, cursor: null, pages: 0, shown: "", open: new Set() };

export function setUpDeliveries(refresh) {
  const type = $("filter-type");
  for (const [value, label] of EVENT_TYPES) type.append(el("option", { value, text: label.split(" (")[0] }));
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); view.shown = ""; view.pages = 0; refresh(); });
  $("more").addEventListener("click", () => page(true));
}

function filters() {
  const hours = Number($("filter-range").value);
  return {
    deliveryStatus: $("filter-status").value, eventType: $("filter-type").value,
    start: new Date(Date.now() - hours * 3600 * 1000).toISOString(), limit: PAGE,
  };
}

// Shows the newest page (again), unless older pages were loaded: a live refresh then leaves
// the list as it is, so nothing moves under the reader.
export async function renderDeliveries(webhook, fresh) {
  if (fresh || view.id !== webhook.id) view = { id: webhook.id, cursor: null, pages: 0, shown: "", open: new Set() };
  await deadLetters(webhook);
  if (view.pages <= 1) await page(false);
}

async function page(more) {
  const params = filters();
  if (more) params.cursor = view.cursor;
  const answer = await call("GET", webhookPath(view.id, "/deliveries") + query(params));
  const text = JSON.stringify(answer);
  if (!more && text === view.shown) return;
  const list = $("delivery-groups");
  const focused = document.activeElement && document.activeElement.dataset.key;
  if (!more) { view.shown = text; view.pages = 1; list.replaceChildren(); } else view.pages += 1;
  list.append(...answer.data.map(group));
  view.cursor = answer.nextCursor;
  show("more", Boolean(answer.nextCursor));
  show("deliveries-empty", list.children.length === 0);
  if (focused) { const again = list.querySelector(`[data-key="${CSS.escape(focused)}"]`); if (again) again.focus(); }
}

function group(g) {
  const attempts = [...g.attempts].sort((a, b) => String(a.timestamp).localeCompare(String(b.timestamp)));
  const last = attempts.at(-1);
  const ok = last && last.status === "success";
  return el("li", { "data-event": g.eventId, "data-status": ok ? "success" : "failed" },
    el("div", { class: "group-head" },
      badge(shortType(g.eventType)), ok ? badge("delivered", "ok") : badge("failed", "bad"),
      el("span", { class: "mono", text: g.sandboxId }),
      el("span", { class: "muted mono", text: "event " + g.eventId }),
      el("span", { class: "muted", text: `${attempts.length} attempt${attempts.length === 1 ? "" : "s"} · ${when(last && last.timestamp)}` })),
    el("ol", { class: "attempts" }, attempts.map((a, i) => attempt(a, i + 1))));
}

function attempt(a, number) {
  const id = "attempt-" + a.id;
  const open = view.open.has(a.id);
  const detail = el("div", { id, class: "attempt-detail", hidden: !open }, open ? details(a) : []);
  const outcome = a.status === "success" ? "HTTP " + a.responseHttpStatusCode : failureText(a);
  const button = el("button", {
    type: "button", "aria-expanded": String(open), "aria-controls": id, "data-key": "a-" + a.id,
    text: `Attempt ${number} · ${outcome} · ${ms(a.durationMs)} · ${when(a.timestamp)}`,
  });
  button.addEventListener("click", () => {
    const opening = detail.hidden;
    detail.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    if (opening) { view.open.add(a.id); detail.replaceChildren(...details(a)); } else view.open.delete(a.id);
  });
  return el("li", { "data-attempt": a.id }, button, detail);
}

function pretty(text) {
  if (text === undefined || text === null || text === "") return "(none)";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return String(text); }
}

function details(a) {
  const request = el("div", { class: "request" },
    el("h4", { text: "Request" }), el("p", { class: "url", text: "POST " + maskUrl(a.requestUrl) }),
    el("pre", { "aria-label": "Request headers", text: pretty(a.requestHeaders) }),
    el("pre", { "aria-label": "Request body", text: pretty(a.requestBody) }));
  const answer = a.responseHttpStatusCode
    ? el("div", { class: "response" },
      el("h4", { text: `Response · HTTP ${a.responseHttpStatusCode} · ${ms(a.durationMs)}` }),
      el("pre", { "aria-label": "Response headers", text: pretty(a.responseHeaders) }),
      el("pre", { class: "response-body", "aria-label": "Response body", text: a.responseBody || "(empty)" }))
    : el("div", { class: "response" },
      el("h4", { text: `Error · ${a.errorClass || "failed"} · ${ms(a.durationMs)}` }),
      el("pre", { class: "response-body", text: a.errorMessage || "" }));
  return [request, answer];
}

async function deadLetters(webhook) {
  const answer = await call("GET", `/portal/api/webhooks/${encodeURIComponent(webhook.id)}/dead-letters`).catch(() => ({ data: [] }));
  const body = $("dead-letters").tBodies[0];
  const focused = document.activeElement && document.activeElement.dataset.key;
  body.replaceChildren(...answer.data.map((letter) => el("tr", { "data-dead-letter": letter.id, "data-event": letter.eventId || "" },
    el("td", {}, badge(shortType(letter.eventType)), el("span", { class: "mono", text: letter.eventId || "" })),
    el("td", { class: "mono", text: letter.sandboxId || "" }),
    el("td", { text: String(letter.attempts) }),
    el("td", { class: "mono", text: letter.reason }),
    el("td", {}, el("button", {
      type: "button", "data-key": "dl-" + letter.id, text: "Re-send",
      "aria-label": "Re-send event " + (letter.eventId || letter.id), onclick: () => resend(webhook, letter.id),
    })))));
  show("dead-letters-box", answer.data.length > 0 || $("resend-result").textContent !== "");
  if (focused) { const again = body.querySelector(`[data-key="${CSS.escape(focused)}"]`); if (again) again.focus(); }
}

async function resend(webhook, id) {
  try {
    const answer = await call("POST", `/portal/api/webhooks/${encodeURIComponent(webhook.id)}/dead-letters/replay`, { ids: [id] });
    const skipped = answer.skipped.map((s) => s.reason).join("; ");
    $("resend-result").textContent = `Re-sent ${answer.replayed.length}` + (skipped ? ` · not re-sent: ${skipped}` : "");
  } catch (error) {
    $("resend-result").textContent = error.message;
  }
  await deadLetters(webhook);
  $("resend-result").focus();
}
