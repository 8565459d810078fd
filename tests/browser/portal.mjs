// Drives the team portal in Debian's Chromium for tests/portal_browser.rs, step by step: sign in
// (a wrong key first), add a webhook with the keyboard only, see a delivery and expand its
// attempt, rotate the secret, filter deliveries, re-send a dead letter, see the chart, send a
// test event, the sandbox timeline, sign out; then team B sees nothing of team A.
// Talks to the Rust test over stdout (one line per step) and stdin (it answers "go").
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const env = process.env;
const url = env.PORTAL_URL;
const shots = env.PORTAL_SHOTS;
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
const say = (line) => console.log(line);
const waitForGo = async () => { const { value } = await lines.next(); if (value !== "go") throw new Error("test said " + value); };
const check = (ok, what) => { if (!ok) throw new Error("check failed: " + what); };

const profile = mkdtempSync(join(tmpdir(), "portal-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1360, height: 900 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(20000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const offsite = [];
  page.on("request", (r) => { if (!r.url().startsWith(url.replace(/\/portal\/$/, ""))) offsite.push(r.url()); });
  const active = () => page.evaluate(() => { const a = document.activeElement; return a ? a.id || a.dataset.key || a.textContent.trim() : ""; });
  // Presses Tab until `selector` has the focus (keyboard only, as a reader without a mouse).
  const tabTo = async (selector) => {
    for (let i = 0; i < 100; i++) {
      if (await page.evaluate((s) => document.activeElement && document.activeElement.matches(s), selector)) return;
      await page.keyboard.press("Tab");
    }
    throw new Error("Tab never reached " + selector + " (at " + (await active()) + ")");
  };
  const pwned = () => page.evaluate(() => window.__pwned);

  // Sign in: a wrong key is refused, then the team's key.
  await page.goto(url);
  await page.locator("#signin").waitFor({ state: "visible" });
  await page.fill("#api-key", "e2b_" + "00".repeat(20));
  await page.keyboard.press("Enter");
  await page.locator("#signin-error", { hasText: "not accepted" }).waitFor();
  check(await page.locator("#view-list").isHidden(), "a wrong key shows nothing");
  await page.fill("#api-key", env.KEY_A);
  await page.keyboard.press("Enter");
  await page.locator("#view-list").waitFor({ state: "visible" });
  await page.locator("#list-empty").waitFor({ state: "visible" });
  const cookie = (await context.cookies()).find((c) => c.name === "e2b_portal");
  check(cookie && cookie.httpOnly && cookie.sameSite === "Strict", "HttpOnly SameSite=Strict cookie: " + JSON.stringify(cookie));
  check(!cookie.value.includes(env.KEY_A.slice(4)), "the cookie is a session, not the key");
  check(await page.evaluate(() => document.cookie === "" && localStorage.length === 0 && sessionStorage.length === 0),
    "nothing the scripts can read holds a credential");
  check((await page.inputValue("#api-key")) === "", "the key is not left in the form");
  const outside = await page.evaluate(async () => (await fetch("/events/webhooks")).status);
  check(outside === 401, "the cookie is sent under /portal only: /events answered " + outside);
  say("signed-in");

  // Add a webhook in the step dialog, with the keyboard only.
  await page.locator("body").focus();
  await tabTo("#add-webhook");
  await page.keyboard.press("Enter");
  await page.locator("#editor[open]").waitFor();
  check((await active()) === "wh-url", "the dialog focuses its first field");
  await page.keyboard.type("http://169.254.169.254/latest/meta-data");
  await page.keyboard.press("Enter");
  await page.locator("#editor-error", { hasText: "url" }).waitFor();
  check(await page.locator('fieldset[data-step="1"]').isVisible(), "a refused URL keeps step 1 with the reason");
  await page.keyboard.press("Escape");
  await page.locator("#editor[open]").waitFor({ state: "detached" });
  check((await active()) === "add-webhook", "Escape closes the dialog and focus goes back");
  await page.keyboard.press("Enter");
  await page.locator("#editor[open]").waitFor();
  await page.keyboard.type(env.RECEIVER_URL);
  await page.keyboard.press("Enter");
  await page.locator('fieldset[data-step="2"]').waitFor({ state: "visible" });
  await page.screenshot({ path: join(shots, "portal-add-webhook.png") });
  await tabTo('input[value="sandbox.lifecycle.updated"]');
  await page.keyboard.press("Space");
  await tabTo("#editor-next");
  await page.keyboard.press("Enter");
  await page.locator('fieldset[data-step="3"]').waitFor({ state: "visible" });
  await page.keyboard.type(env.HOSTILE_NAME);
  await page.keyboard.press("Enter");
  await page.locator('fieldset[data-step="4"]').waitFor({ state: "visible" });
  await tabTo("#editor-next");
  await page.keyboard.press("Enter");
  await page.locator("#secret-dialog[open]").waitFor();
  const secret = await page.textContent("#secret-value");
  check(secret.length >= 32, "a secret of at least 32 characters: " + secret.length);
  check((await active()) === "copy-secret", "the secret dialog focuses Copy");
  await page.keyboard.press("Escape");
  await page.locator("#secret-dialog[open]").waitFor({ state: "detached" });
  await page.waitForFunction(() => document.getElementById("secret-value").textContent === "");
  await page.locator("#view-detail").waitFor({ state: "visible" });
  const webhookId = decodeURIComponent(page.url().split("#/webhooks/")[1].split("/")[0]);
  check((await page.textContent("#detail-name")) === env.HOSTILE_NAME, "the name is shown as text");
  check(await pwned() === undefined, "the name never runs as script");
  say("added " + webhookId + " " + secret);

  // The test delivers an event; it arrives without a reload, and its attempt expands.
  await waitForGo();
  await tabTo("#tab-deliveries");
  await page.keyboard.press("Enter");
  const first = page.locator(`#delivery-groups li[data-event="${env.EVENT_1}"][data-status="success"]`);
  await first.waitFor();
  await tabTo(`#delivery-groups li[data-event="${env.EVENT_1}"] .attempts button`);
  await page.keyboard.press("Enter");
  const detail = first.locator(".attempt-detail");
  await detail.waitFor({ state: "visible" });
  check((await detail.locator("pre").nth(1).textContent()).includes(env.SANDBOX_1), "the request body is shown");
  const headers = await detail.locator("pre").first().textContent();
  check(headers.includes("e2b-signature") && !headers.includes(secret), "headers shown, signature redacted: " + headers);
  say("delivery-seen");

  // Rotate the secret; the test sends the next event, which the receiver refuses until later.
  // (keyboard only: the confirmation focuses Cancel, the safe answer)
  await tabTo("#rotate-secret");
  await page.keyboard.press("Enter");
  await page.locator("#confirm-dialog[open]").waitFor();
  check((await page.textContent("#confirm-title")).includes(env.HOSTILE_NAME), "the confirmation names the webhook");
  check((await active()) === "confirm-cancel", "the confirmation focuses Cancel");
  await tabTo("#confirm-ok");
  await page.keyboard.press("Enter");
  await page.locator("#secret-dialog[open]").waitFor();
  const rotated = await page.textContent("#secret-value");
  check(rotated !== secret && rotated.length >= 32, "a new secret");
  await tabTo("#secret-done");
  await page.keyboard.press("Enter");
  await page.locator("#secret-dialog[open]").waitFor({ state: "detached" });
  check((await active()) === "rotate-secret", "focus returns to Rotate secret");
  say("rotated " + rotated);

  // Failed deliveries: filter them, see the hostile answer as text, re-send the dead letter.
  await waitForGo();
  await page.selectOption("#filter-status", "failed");
  await page.click("#filters button[type=submit]");
  const failed = page.locator(`#delivery-groups li[data-event="${env.EVENT_2}"]`);
  await failed.waitFor();
  await page.locator(`#delivery-groups li[data-event="${env.EVENT_1}"]`).waitFor({ state: "detached" });
  await failed.locator(".attempts button").first().click();
  await failed.locator(".response-body").first().waitFor();
  check((await failed.locator(".response-body").first().textContent()).includes("<script>"), "the answer is shown as text");
  check((await page.locator("#delivery-groups img, #delivery-groups script").count()) === 0, "an answer never becomes elements");
  check(await pwned() === undefined, "an answer never runs as script");
  const dead = page.locator(`#dead-letters tr[data-event="${env.EVENT_2}"]`);
  await dead.waitFor();
  await page.screenshot({ path: join(shots, "portal-deliveries.png"), fullPage: true });
  say("dead-letter-seen");
  await waitForGo();
  await dead.getByRole("button", { name: /Re-send/ }).click();
  await page.locator("#resend-result", { hasText: "Re-sent 1" }).waitFor();
  await dead.waitFor({ state: "detached" });
  await page.selectOption("#filter-status", "");
  await page.click("#filters button[type=submit]");
  await page.locator(`#delivery-groups li[data-event="${env.EVENT_2}"][data-status="success"]`).waitFor();
  say("re-sent");

  // The overview chart, and a test event with its answer.
  await page.click("#tab-overview");
  await tabTo('.ranges button[data-range="12h"]');
  await page.keyboard.press("Enter");
  await page.locator('.ranges button[data-range="12h"][aria-pressed="true"]').waitFor();
  await page.locator("#chart svg g[data-total]:not([data-total='0'])").first().waitFor();
  await page.locator("#chart-summary", { hasText: "deliveries" }).waitFor();
  check(!(await page.textContent("#durations")).includes("—"), "durations are shown");
  await tabTo("#send-test");
  await page.keyboard.press("Enter");
  await page.locator("#test-result", { hasText: "Test event delivered" }).waitFor();
  check((await page.textContent("#test-result")).includes("HTTP 200"), "the test answer's status");
  await page.screenshot({ path: join(shots, "portal-overview.png"), fullPage: true });

  // Disable and enable again; edit the name in the step dialog, keeping the secret.
  await tabTo("#toggle-enabled");
  await page.keyboard.press("Enter");
  await page.locator("#detail-state", { hasText: "disabled" }).waitFor();
  check((await active()) === "toggle-enabled", "focus stays on the switch");
  await page.keyboard.press("Enter");
  await page.locator("#detail-state", { hasText: "enabled" }).waitFor();
  await tabTo("#edit-webhook");
  await page.keyboard.press("Enter");
  await page.locator("#editor[open]").waitFor();
  check((await page.inputValue("#wh-url")) === env.RECEIVER_URL, "the form holds the webhook");
  await page.keyboard.press("Enter");
  await tabTo("#editor-next");
  await page.keyboard.press("Enter");
  await page.locator('fieldset[data-step="3"]').waitFor({ state: "visible" });
  await page.keyboard.press("End");
  await page.keyboard.type(" (edited)");
  await page.keyboard.press("Enter");
  await page.locator('fieldset[data-step="4"]').waitFor({ state: "visible" });
  check(await page.locator('input[name="secret-mode"][value="keep"]').isChecked(), "editing keeps the secret unless asked");
  await tabTo("#editor-next");
  await page.keyboard.press("Enter");
  await page.locator("#editor[open]").waitFor({ state: "detached" });
  check((await page.locator("#secret-dialog[open]").count()) === 0, "no secret shown when it was kept");
  await page.locator("#detail-name", { hasText: "(edited)" }).waitFor();
  const editedName = env.HOSTILE_NAME + " (edited)";

  // The list, with the hostile name as text and the last 24 h counted.
  await tabTo("#nav-webhooks");
  await page.keyboard.press("Enter");
  const row = page.locator(`#webhooks tr[data-webhook="${webhookId}"]`);
  await row.waitFor();
  check((await row.locator("td").first().textContent()) === editedName, "the name in the list is text");
  await row.locator("td.total", { hasText: /^[1-9]/ }).waitFor();
  const shownUrl = await row.locator("td.url").textContent();
  check(shownUrl.includes("token=•••") && !shownUrl.includes("receiver-query-secret"), "the query secret is masked: " + shownUrl);
  check(!(await page.textContent("body")).includes("receiver-query-secret"), "no query secret anywhere on the page");
  await page.screenshot({ path: join(shots, "portal-list.png"), fullPage: true });

  // The sandbox timeline.
  await tabTo("#nav-timeline");
  await page.keyboard.press("Enter");
  await page.locator("#view-timeline").waitFor({ state: "visible" });
  await page.keyboard.press("Tab");
  check((await active()) === "sandbox-id", "the timeline's field follows its heading");
  await page.keyboard.type(env.SANDBOX_1);
  await page.keyboard.press("Enter");
  await page.locator(`#timeline li[data-event="${env.EVENT_1}"]`, { hasText: "delivered" }).waitFor();
  for (const width of [1024, 800]) {
    await page.setViewportSize({ width, height: 900 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `the portal fits ${width} px (it overflows by ${overflow} px)`);
  }
  await page.setViewportSize({ width: 1360, height: 900 });

  // Sign out: the session ends on the server too.
  await tabTo("#sign-out");
  await page.keyboard.press("Enter");
  await page.locator("#signin").waitFor({ state: "visible" });
  check(!(await context.cookies()).some((c) => c.name === "e2b_portal"), "the cookie is gone");
  const after = await page.evaluate(async () => (await fetch("/portal/events/webhooks")).status);
  check(after === 401, "signed out, the API refuses the browser: " + after);

  // Team B in the same browser sees none of team A's webhooks or events.
  await page.fill("#api-key", env.KEY_B);
  await page.keyboard.press("Enter");
  await page.locator(`#webhooks tr[data-webhook="${env.WEBHOOK_B}"]`).waitFor();
  check((await page.locator(`#webhooks tr[data-webhook="${webhookId}"]`).count()) === 0, "team B does not see A's webhook");
  const probes = await page.evaluate(async ({ a, sandbox }) => {
    const status = async (path) => (await fetch(path)).status;
    return [await status("/portal/events/webhooks/" + a), await status("/portal/events/webhooks/" + a + "/deliveries"),
      await status("/portal/events/webhooks/" + a + "/stats"), await status("/portal/api/webhooks/" + a + "/dead-letters"),
      (await (await fetch("/portal/events/sandboxes/" + sandbox)).json()).length];
  }, { a: webhookId, sandbox: env.SANDBOX_1 });
  check(JSON.stringify(probes) === "[404,404,404,404,0]", "team B reads nothing of A: " + JSON.stringify(probes));
  // From the page itself: a change without the CSRF token is refused; with it, A's webhook is
  // still not found for B.
  const writes = await page.evaluate(async ({ a, b }) => {
    const { csrfToken } = await (await fetch("/portal/api/session")).json();
    const patch = async (id, headers) => (await fetch("/portal/events/webhooks/" + id, {
      method: "PATCH", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify({ enabled: false }),
    })).status;
    return [await patch(b, {}), await patch(b, { "X-CSRF-Token": "0".repeat(64) }), await patch(a, { "X-CSRF-Token": csrfToken }),
      (await fetch("/portal/api/webhooks/" + a + "/test", { method: "POST", headers: { "X-CSRF-Token": csrfToken } })).status];
  }, { a: webhookId, b: env.WEBHOOK_B });
  check(JSON.stringify(writes) === "[403,403,404,404]", "forged and cross-team changes refused: " + JSON.stringify(writes));

  // Team B deletes its webhook, after a confirmation that names it.
  await page.locator(`#webhooks tr[data-webhook="${env.WEBHOOK_B}"] a`).click();
  await page.locator("#view-detail").waitFor({ state: "visible" });
  await page.click("#delete-webhook");
  await page.locator("#confirm-dialog[open]").waitFor();
  check((await page.textContent("#confirm-title")).includes("team B's hook"), "the confirmation names the webhook");
  await page.click("#confirm-ok");
  await page.locator("#list-empty").waitFor({ state: "visible" });
  check(errors.length === 0, "no script errors: " + errors.join("; "));
  check(offsite.length === 0, "no request to another host: " + offsite.join(", "));
  say("team-b-checked");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  stdin.close();
}
