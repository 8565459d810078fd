// Drives the console in Debian's Chromium for tests/console_browser.rs, step by step:
// log in (a wrong token first), see a delivery arrive live, check that event text is not HTML,
// replay a dead letter and watch it delivered, keep a screenshot.
// Talks to the Rust test over stdout (one word per line) and stdin (it answers "go").
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const url = process.env.CONSOLE_URL;
const token = process.env.CONSOLE_TOKEN;
const screenshot = process.env.CONSOLE_SCREENSHOT;
const liveSandbox = process.env.LIVE_SANDBOX;
const deadSandbox = process.env.DEAD_SANDBOX;
const hostileSandbox = process.env.HOSTILE_SANDBOX;
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
const say = (word) => console.log(word);
const waitForGo = async () => { const { value } = await lines.next(); if (value !== "go") throw new Error("test said " + value); };
const check = (ok, what) => { if (!ok) throw new Error("check failed: " + what); };

const profile = mkdtempSync(join(tmpdir(), "console-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
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

  await page.goto(url);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#token", token + "-wrong");
  await page.click("#login-button");
  await page.locator("#denied").waitFor({ state: "visible" });
  check(await page.locator("#console").isHidden(), "a wrong token shows no console");

  await page.fill("#token", token);
  await page.click("#login-button");
  await page.locator("#console").waitFor({ state: "visible" });
  const cookie = (await context.cookies()).find((c) => c.name === "e2b_admin");
  check(cookie && cookie.httpOnly && cookie.sameSite === "Strict", "HttpOnly SameSite=Strict cookie: " + JSON.stringify(cookie));
  check(!cookie.value.includes(token), "the cookie is a session, not the token");
  check(await page.evaluate(() => !document.cookie.includes("e2b_admin")), "the page's scripts cannot read the token");
  await page.locator("#feed-state", { hasText: "live" }).waitFor();
  await page.locator(`#endpoints tr[data-endpoint="default"]`).waitFor();
  await page.locator(`#dead-letters tbody tr`, { hasText: deadSandbox }).waitFor();
  say("logged-in");

  // The test appends events to Redis now; the delivery shows up without a reload.
  await waitForGo();
  await page.locator(`#feed tr[data-sandbox="${liveSandbox}"][data-outcome="delivered"]`).waitFor();
  const hostile = page.locator("#feed tr", { hasText: hostileSandbox });
  await hostile.first().waitFor();
  check(await page.evaluate(() => window.__pwned === undefined), "event text never runs as script");
  check((await page.locator("#feed img").count()) === 0, "event text never becomes elements");
  say("live-seen");

  // Replay the dead letter from the console and watch it delivered.
  await waitForGo();
  await page.locator("#dead-letters tbody tr", { hasText: deadSandbox }).getByRole("button", { name: "Replay" }).click();
  await page.locator(`#feed tr[data-sandbox="${deadSandbox}"][data-outcome="delivered"]`).waitFor();
  await page.locator("#dead-letters tbody tr", { hasText: deadSandbox }).waitFor({ state: "detached" });
  await page.locator("#replay-result", { hasText: "replayed 1" }).waitFor();
  await page.locator(`#endpoints tr[data-endpoint="default"] td:nth-child(4)`, { hasText: /^0$/ }).waitFor();
  check(errors.length === 0, "no script errors: " + errors.join("; "));
  await page.screenshot({ path: screenshot, fullPage: true });
  // Readable on a small laptop window too: nothing wider than the window.
  for (const width of [1024, 800]) {
    await page.setViewportSize({ width, height: 900 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `the console fits ${width} px (it overflows by ${overflow} px)`);
  }
  say("replayed");
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  stdin.close();
}
