// The operator's console. Every value that comes from the service (and so from events) is put
// into the page with textContent, never parsed as HTML.
"use strict";

const api = (path, options = {}) =>
  fetch("/admin/v1" + path, { credentials: "same-origin", ...options }).then(async (r) => {
    if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    return body;
  });

const post = (path, body) =>
  api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}) });

const $ = (id) => document.getElementById(id);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function button(label, onClick) {
  const td = document.createElement("td");
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  td.appendChild(b);
  return td;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}

function rate(r) {
  return r.rate === null ? "— (no attempts)" : Math.round(r.rate * 1000) / 10 + " % of " + r.attempts;
}

function showLogin() {
  $("console").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("denied").hidden = !location.search.includes("denied");
  $("throttled").hidden = !location.search.includes("throttled");
  $("token").focus();
}

function renderEndpoints(list) {
  const body = $("endpoints").tBodies[0];
  body.replaceChildren();
  for (const e of list) {
    const tr = document.createElement("tr");
    tr.dataset.endpoint = e.id;
    const healthy = !e.paused && e.backlog === 0;
    tr.append(
      cell(e.id),
      cell(e.url, "wrap"),
      cell(e.paused ? "paused" : "delivering", e.paused ? "warn" : "ok"),
      cell(e.backlog, healthy ? "ok" : e.backlog > 0 ? "warn" : ""),
      cell(age(e.oldest_pending_age_s)),
      cell(rate(e.success_5m)),
      cell(rate(e.success_60m)),
      cell(e.oldest_last_error || "", "wrap bad"),
    );
    const actions = button(e.paused ? "Resume" : "Pause", () =>
      post("/endpoints/" + encodeURIComponent(e.id) + (e.paused ? "/resume" : "/pause")).then(refresh));
    const test = document.createElement("button");
    test.type = "button";
    test.textContent = "Send test event";
    test.addEventListener("click", () => post("/endpoints/" + encodeURIComponent(e.id) + "/test-event", {}).then(refresh));
    actions.append(" ", test);
    tr.appendChild(actions);
    body.appendChild(tr);
  }
}

function renderDeadLetters(letters) {
  const body = $("dead-letters").tBodies[0];
  body.replaceChildren();
  $("dead-count").textContent = "(" + letters.length + ")";
  for (const d of letters) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(d.id);
    tr.append(
      cell(d.id),
      cell(when(d.dead_at_ms)),
      cell(d.endpoint || d.source),
      cell(d.label || "malformed input"),
      cell(d.sandbox_id || d.position || ""),
      cell(d.attempts),
      cell(d.reason, "wrap"),
    );
    if (d.endpoint && d.event) {
      tr.appendChild(button("Replay", () => replay({ ids: [d.id] })));
    } else {
      tr.appendChild(cell("not an event", "muted"));
    }
    body.appendChild(tr);
  }
}

function renderReconciliation(r) {
  const box = $("reconciliation");
  box.replaceChildren();
  const line = (text, className) => {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) p.className = className;
    box.appendChild(p);
  };
  if (!r.enabled) { line("Not configured on this instance (no NOMAD_ADDR)."); return; }
  line("Orchestrators known: " + r.orchestrators.length + (r.orchestrators.length ? " — " + r.orchestrators.join(", ") : ""));
  line("Last run: " + (r.last_run_at_ms ? when(r.last_run_at_ms) + " (" + r.last_outcome + ")" : "not yet"));
  if (r.skip_reason) line("Paused: " + r.skip_reason, "warn");
  line("Last findings: " + (r.last_findings.length ? "" : "none"));
  for (const f of r.last_findings) line("  " + f.label + " " + f.sandbox_id + " (" + f.reason + ")");
}

const FEED_ROWS = 200;
function addDelivery(d, fresh) {
  const body = $("feed").tBodies[0];
  const tr = document.createElement("tr");
  tr.dataset.sandbox = d.sandbox_id;
  tr.dataset.outcome = d.outcome;
  if (fresh) tr.className = "fresh";
  tr.append(
    cell(when(d.at_ms)),
    cell(d.endpoint),
    cell(d.label + (d.test ? " (test)" : "")),
    cell(d.sandbox_id, "wrap"),
    cell(d.outcome, "outcome-" + d.outcome),
    cell(d.status ?? "—"),
    cell(d.attempt),
    cell(d.latency_ms + " ms"),
    cell(d.error || "", "wrap"),
  );
  body.insertBefore(tr, body.firstChild);
  while (body.rows.length > FEED_ROWS) body.deleteRow(body.rows.length - 1);
}

async function replay(selection) {
  const r = await post("/dead-letters/replay", selection);
  $("replay-result").textContent = "replayed " + r.replayed.length + (r.skipped.length ? ", skipped " + r.skipped.length : "");
  refresh();
}

async function refresh() {
  const [status, dead, reconciliation] = await Promise.all([
    api("/status"), api("/dead-letters"), api("/reconciliation"),
  ]);
  const lease = status.lease;
  $("instance").textContent = "v" + status.version + " · " + lease.mode + (lease.holder ? " · lease held by " + lease.holder : "");
  renderEndpoints(status.endpoints);
  renderDeadLetters(dead.dead_letters);
  renderReconciliation(reconciliation);
}

function connectFeed() {
  const source = new EventSource("/admin/v1/events/stream");
  source.addEventListener("ready", () => { $("feed-state").textContent = "live"; });
  source.addEventListener("delivery", (e) => { addDelivery(JSON.parse(e.data), true); });
  source.addEventListener("lagged", (e) => {
    $("feed-state").textContent = "live (skipped " + e.data + " while this page was behind)";
  });
  source.onerror = () => { $("feed-state").textContent = "reconnecting…"; };
}

async function start() {
  try {
    await refresh();
  } catch (e) {
    return; // the login form is showing
  }
  $("login").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = false;
  const recent = await api("/deliveries?limit=50");
  for (const d of recent.items.slice().reverse()) addDelivery(d, false);
  connectFeed();
  $("replay-all").addEventListener("click", () => replay({ all: true }));
  setInterval(() => refresh().catch(() => {}), 3000);
}

start();
