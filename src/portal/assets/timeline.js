// The sandbox timeline: a sandbox's lifecycle events (/events/sandboxes/{id}), oldest first,
// each with what became of it at every webhook of the team.
import { call, query, webhookPath } from "./api.js";
import { $, badge, el, say, shortType, when } from "./dom.js";

export function setUpTimeline() {
  $("timeline-form").addEventListener("submit", (e) => { e.preventDefault(); renderTimeline(); });
}

export async function renderTimeline() {
  const sandbox = $("sandbox-id").value.trim();
  if (!sandbox) return;
  say("timeline-error", "");
  try {
    const events = await call("GET", "/portal/events/sandboxes/" + encodeURIComponent(sandbox) + query({ limit: 100, orderAsc: true }));
    const outcomes = await deliveryOutcomes(events);
    $("timeline").replaceChildren(...events.map((event) => el("li", { "data-event": event.id },
      el("div", { class: "group-head" }, badge(shortType(event.type)),
        el("span", { text: when(event.timestamp) }), el("span", { class: "muted mono", text: "event " + event.id })),
      el("ul", {}, outcomes.map(({ webhook, byEvent }) => {
        const status = byEvent.get(event.id);
        return el("li", {}, el("span", { text: webhook.name + ": " }),
          status ? badge(status === "success" ? "delivered" : "failed", status === "success" ? "ok" : "bad") : badge("not sent", "off"));
      })))));
    if (!events.length) say("timeline-error", "No events of this sandbox are kept for your team.");
  } catch (error) {
    say("timeline-error", error.message);
  }
}

// For each webhook, the final status of each of these events (from its newest deliveries in
// the events' time span).
async function deliveryOutcomes(events) {
  if (!events.length) return [];
  const start = new Date(new Date(events[0].timestamp).getTime() - 60 * 1000).toISOString();
  const webhooks = await call("GET", "/portal/events/webhooks");
  return Promise.all(webhooks.map(async (webhook) => {
    const byEvent = new Map();
    const page = await call("GET", webhookPath(webhook.id, "/deliveries") + query({ start, limit: 100, orderAsc: true })).catch(() => ({ data: [] }));
    for (const group of page.data) {
      const last = group.attempts.reduce((a, b) => (String(a.timestamp) > String(b.timestamp) ? a : b));
      byEvent.set(group.eventId, last.status);
    }
    return { webhook, byEvent };
  }));
}
