// The add / edit dialog, in four steps: URL (checked by the same guard the API applies, with
// its reason), events, name and state, signing secret (generated here or pasted; a new one is
// shown once after saving).
import { call } from "./api.js";
import { $, el, EVENT_TYPES, generateSecret, openDialog, say, showSecretOnce } from "./dom.js";

const STEPS = 4;
const DEFAULT_EVENTS = EVENT_TYPES.slice(0, 4).map(([type]) => type);
let state = null;

export function setUpEditor() {
  const events = $("wh-events");
  for (const [type, label] of EVENT_TYPES) {
    events.append(el("label", { class: "check" },
      el("input", { type: "checkbox", name: "event", value: type }), label + " ", el("code", { text: type })));
  }
  $("editor-form").addEventListener("submit", (e) => { e.preventDefault(); next(); });
  $("editor-back").addEventListener("click", () => go(state.step - 1));
  $("editor-cancel").addEventListener("click", () => $("editor").close());
  for (const radio of document.querySelectorAll('input[name="secret-mode"]')) {
    radio.addEventListener("change", () => { $("wh-secret").hidden = radio.value !== "paste" || !radio.checked; });
  }
}

// Opens the dialog for a new webhook (no argument) or to edit `webhook`; `saved` gets the result.
export function openEditor(webhook, saved) {
  state = { webhook, saved, step: 1, opener: document.activeElement };
  $("editor-title").textContent = webhook ? "Edit webhook" : "Add webhook";
  $("wh-url").value = webhook ? webhook.url : "";
  $("wh-name").value = webhook ? webhook.name : "";
  $("wh-enabled").checked = webhook ? webhook.enabled : true;
  const chosen = webhook ? webhook.events : DEFAULT_EVENTS;
  for (const box of document.querySelectorAll('input[name="event"]')) box.checked = chosen.includes(box.value);
  $("keep-choice").hidden = !webhook;
  const mode = webhook ? "keep" : "generate";
  for (const radio of document.querySelectorAll('input[name="secret-mode"]')) radio.checked = radio.value === mode;
  $("wh-secret").value = "";
  $("wh-secret").hidden = true;
  go(1);
  openDialog($("editor"), $("wh-url"));
}

function go(step) {
  state.step = Math.min(Math.max(step, 1), STEPS);
  for (const set of document.querySelectorAll("#editor fieldset")) set.hidden = Number(set.dataset.step) !== state.step;
  $("editor-step").textContent = `Step ${state.step} of ${STEPS}`;
  $("editor-back").hidden = state.step === 1;
  $("editor-next").textContent = state.step === STEPS ? "Save" : "Next";
  say("editor-error", "");
  const set = document.querySelector(`#editor fieldset[data-step="${state.step}"]`);
  const first = { 1: $("wh-url"), 3: $("wh-name") }[state.step] || set.querySelector("input:checked") || set.querySelector("input");
  first.focus();
}

async function next() {
  try {
    if (state.step === 1) await checkUrl();
    if (state.step === 2 && !chosenEvents().length) throw new Error("Choose at least one event.");
    if (state.step === 3 && !$("wh-name").value.trim()) throw new Error("Give the webhook a name.");
    if (state.step < STEPS) return go(state.step + 1);
    await save();
  } catch (error) {
    say("editor-error", error.message);
  }
}

async function checkUrl() {
  const url = $("wh-url").value.trim();
  if (!url) throw new Error("Enter the URL events are sent to.");
  await call("POST", "/portal/api/check-url", { url });
}

const chosenEvents = () => [...document.querySelectorAll('input[name="event"]:checked')].map((box) => box.value);

function chosenSecret() {
  const mode = document.querySelector('input[name="secret-mode"]:checked').value;
  if (mode === "keep") return null;
  if (mode === "generate") return generateSecret();
  const pasted = $("wh-secret").value;
  if (pasted.length < 32) throw new Error("The secret must be at least 32 characters.");
  return pasted;
}

async function save() {
  const secret = chosenSecret();
  const body = {
    name: $("wh-name").value.trim(), url: $("wh-url").value.trim(),
    enabled: $("wh-enabled").checked, events: chosenEvents(),
  };
  if (secret) body.signatureSecret = secret;
  const saved = state.webhook
    ? await call("PATCH", "/portal/events/webhooks/" + encodeURIComponent(state.webhook.id), body)
    : await call("POST", "/portal/events/webhooks", body);
  const { saved: done, opener } = state;
  $("editor").close();
  state = null;
  done(saved);
  if (secret) showSecretOnce(secret, opener);
}
