// One webhook: its header and actions (test event, edit, rotate secret, enable/disable,
// delete), and its two tabs, overview (chart) and deliveries.
import { call, webhookPath } from "./api.js";
import { $, badge, confirmAction, el, generateSecret, maskUrl, ms, say, shortType, showSecretOnce } from "./dom.js";
import { openEditor } from "./editor.js";
import { renderOverview } from "./overview.js";
import { renderDeliveries } from "./deliveries.js";

let current = null;

export function setUpDetail(navigate) {
  $("send-test").addEventListener("click", sendTest);
  $("edit-webhook").addEventListener("click", () => openEditor(current, (saved) => { current = saved; header(); }));
  $("rotate-secret").addEventListener("click", rotate);
  $("toggle-enabled").addEventListener("click", toggle);
  $("delete-webhook").addEventListener("click", async () => {
    if (!(await confirmAction(`Delete “${current.name}”?`,
      `Deliveries to ${maskUrl(current.url)} stop at once and the webhook cannot be restored.`, `Delete ${current.name}`))) return;
    await call("DELETE", webhookPath(current.id));
    navigate("#/webhooks");
  });
}

// Shows webhook `id` with tab `tab` ("overview" or "deliveries"); `fresh` on navigation, not on
// a live refresh.
export async function renderDetail(id, tab, fresh) {
  const webhook = await call("GET", webhookPath(id));
  const changed = !current || current.id !== id || JSON.stringify(current) !== JSON.stringify(webhook);
  current = webhook;
  if (changed) header();
  if (fresh) say("test-result", "");
  for (const name of ["overview", "deliveries"]) {
    const link = $("tab-" + name);
    link.href = `#/webhooks/${encodeURIComponent(id)}/${name}`;
    if (name === tab) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    $(name).hidden = name !== tab;
  }
  if (tab === "overview") await renderOverview(webhook, fresh);
  else await renderDeliveries(webhook, fresh);
}

function header() {
  $("detail-name").textContent = current.name;
  const state = $("detail-state");
  state.textContent = current.enabled ? "enabled" : "disabled";
  state.className = "badge " + (current.enabled ? "ok" : "off");
  $("detail-url").textContent = maskUrl(current.url);
  $("detail-events").replaceChildren(...current.events.map((type) => badge(shortType(type))));
  $("toggle-enabled").textContent = current.enabled ? "Disable" : "Enable";
}

async function sendTest() {
  const result = $("test-result");
  result.hidden = false;
  result.replaceChildren("Sending a test event…");
  try {
    const answer = await call("POST", `/portal/api/webhooks/${encodeURIComponent(current.id)}/test`);
    result.replaceChildren(
      el("strong", { text: answer.delivered ? "Test event delivered" : "Test event not accepted" }), " · ",
      answer.status ? "HTTP " + answer.status : answer.errorClass || "", " · ", ms(answer.durationMs), " · ",
      el("span", { class: "mono", text: shortType(answer.eventType) }),
      el("pre", { class: "mono", "aria-label": "Response body", text: answer.body || answer.result || "" }),
    );
  } catch (error) {
    result.replaceChildren(el("span", { class: "error", text: error.message }));
  }
}

async function rotate() {
  if (!(await confirmAction(`Rotate the secret of “${current.name}”?`,
    "A new secret is generated in this browser; deliveries are signed with it from now on, so update your receiver.",
    "Rotate secret"))) return;
  const secret = generateSecret();
  current = await call("PATCH", webhookPath(current.id), { signatureSecret: secret });
  showSecretOnce(secret, $("rotate-secret"));
}

async function toggle() {
  current = await call("PATCH", webhookPath(current.id), { enabled: !current.enabled });
  header();
  $("toggle-enabled").focus();
}
