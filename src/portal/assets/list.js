// The webhooks list: name, URL (query secrets masked), events, state, success rate and
// deliveries over the last 24 h, last failure — from /events/webhooks and each webhook's stats
// and newest failed delivery.
import { call, query, webhookPath } from "./api.js";
import { $, badge, el, maskUrl, show, shortType, when } from "./dom.js";

let lastShown = "";

export async function loadWebhooks() {
  const webhooks = await call("GET", "/portal/events/webhooks");
  const day = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  const rows = await Promise.all(webhooks.map(async (webhook) => {
    const [stats, failed] = await Promise.all([
      call("GET", webhookPath(webhook.id, "/stats") + query({ start: day })).catch(() => null),
      call("GET", webhookPath(webhook.id, "/deliveries") + query({ deliveryStatus: "failed", limit: 1 })).catch(() => null),
    ]);
    const lastFailure = failed && failed.data.length ? failed.data[0].attempts.at(-1) : null;
    return { webhook, stats, lastFailure };
  }));
  return rows;
}

export async function renderList() {
  const rows = await loadWebhooks();
  const shown = JSON.stringify(rows);
  if (shown === lastShown) return;
  lastShown = shown;
  const body = $("webhooks").tBodies[0];
  const focused = document.activeElement && document.activeElement.dataset.key;
  body.replaceChildren(...rows.map(row));
  show("list-empty", rows.length === 0);
  show("webhooks", rows.length > 0);
  if (focused) { const again = body.querySelector(`[data-key="${CSS.escape(focused)}"]`); if (again) again.focus(); }
}

export function forgetList() { lastShown = ""; }

function row({ webhook, stats, lastFailure }) {
  const total = stats ? stats.total : 0;
  const rate = stats && total ? Math.round((100 * (total - stats.failed)) / total) + " %" : "—";
  return el("tr", { "data-webhook": webhook.id },
    el("td", {}, el("a", { href: "#/webhooks/" + encodeURIComponent(webhook.id), "data-key": "wh-" + webhook.id, text: webhook.name })),
    el("td", { class: "url", text: maskUrl(webhook.url) }),
    el("td", {}, webhook.events.map((type) => badge(shortType(type)))),
    el("td", {}, webhook.enabled ? badge("enabled", "ok") : badge("disabled", "off")),
    el("td", { class: "rate", text: rate }),
    el("td", { class: "total", text: stats ? String(total) : "—" }),
    el("td", {}, lastFailure
      ? [when(lastFailure.timestamp), el("br"), el("span", { class: "muted", text: failureText(lastFailure) })]
      : "—"),
  );
}

export function failureText(attempt) {
  if (attempt.responseHttpStatusCode) return "HTTP " + attempt.responseHttpStatusCode;
  return [attempt.errorClass, attempt.errorMessage].filter(Boolean).join(": ") || "failed";
}
