// The overview tab: deliveries and failures per bucket over 4 h, 12 h, today or 7 days (the
// stats endpoint picks the buckets), drawn as inline SVG by this script — a few rectangles need
// no chart library, and nothing is fetched from elsewhere — and the durations.
import { call, query, webhookPath } from "./api.js";
import { $, el, ms } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const HOUR = 3600 * 1000;
let range = "4h";

export function setUpOverview(refresh) {
  for (const button of document.querySelectorAll(".ranges button")) {
    button.addEventListener("click", () => { range = button.dataset.range; refresh(); });
  }
}

function start() {
  if (range === "today") { const midnight = new Date(); midnight.setHours(0, 0, 0, 0); return midnight; }
  return new Date(Date.now() - { "4h": 4, "12h": 12, "7d": 168 }[range] * HOUR);
}

export async function renderOverview(webhook) {
  for (const button of document.querySelectorAll(".ranges button")) {
    button.setAttribute("aria-pressed", String(button.dataset.range === range));
  }
  const stats = await call("GET", webhookPath(webhook.id, "/stats") + query({ start: start().toISOString(), end: new Date().toISOString() }));
  $("chart").replaceChildren(chart(stats.buckets));
  $("chart-summary").replaceChildren(
    el("span", { class: "legend ok", text: `${stats.total - stats.failed} delivered` }),
    el("span", { class: "legend bad", text: `${stats.failed} failed` }),
    `${stats.total} deliveries in ${stats.buckets.length} buckets`,
  );
  const d = stats.durationMs;
  $("durations").replaceChildren(
    el("div", {}, el("dt", { text: "Fastest" }), el("dd", { text: ms(d.minimum) })),
    el("div", {}, el("dt", { text: "Average" }), el("dd", { text: ms(d.average) })),
    el("div", {}, el("dt", { text: "Slowest" }), el("dd", { text: ms(d.maximum) })),
  );
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(buckets) {
  const [width, height, left, bottom, top] = [800, 220, 40, 24, 10];
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title", preserveAspectRatio: "none" });
  root.append(svg("title", { id: "chart-title" }, "Deliveries (blue) and failures (red) per bucket"));
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const plot = height - bottom - top;
  const step = (width - left) / Math.max(1, buckets.length);
  root.append(svg("line", { x1: left, y1: top + plot, x2: width, y2: top + plot }));
  root.append(svg("text", { x: 2, y: top + 10 }, String(max)), svg("text", { x: 2, y: top + plot }, "0"));
  buckets.forEach((bucket, i) => {
    const x = left + i * step + step * 0.1;
    const w = Math.max(1, step * 0.8);
    const okHeight = ((bucket.total - bucket.failed) / max) * plot;
    const badHeight = (bucket.failed / max) * plot;
    const label = `${new Date(bucket.timestamp).toLocaleString()}: ${bucket.total} deliveries, ${bucket.failed} failed`;
    const group = svg("g", { "data-total": bucket.total, "data-failed": bucket.failed });
    group.append(svg("title", {}, label));
    group.append(svg("rect", { class: "ok", x, y: top + plot - okHeight - badHeight, width: w, height: okHeight }));
    group.append(svg("rect", { class: "bad", x, y: top + plot - badHeight, width: w, height: badHeight }));
    root.append(group);
  });
  if (buckets.length) {
    const first = new Date(buckets[0].timestamp), last = new Date(buckets.at(-1).timestamp);
    root.append(svg("text", { x: left, y: height - 6 }, first.toLocaleString()));
    root.append(svg("text", { x: width - 4, y: height - 6, "text-anchor": "end" }, last.toLocaleString()));
  }
  return root;
}
