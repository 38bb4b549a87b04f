// Drives the coordinator's status page in Debian's headless Chromium with playwright-core.
// Run by tests/status_page.rs, which starts a coordinator (with --http) and workers:
//
//   AGENCY_PAGE_TOKEN=... node status_page.mjs BASE_URL AGENCY_BIN SLOW.json LONG.json HOSTILE.json SCREENSHOT_DIR
//
// It opens the page once with the token (which the browser keeps as a cookie).
// It submits SLOW (a fan-out of a few seconds) and watches its page until the rendered
// progress has changed and the status reads `completed`; it submits LONG, presses Cancel on
// its page and waits for `cancelled`; it submits HOSTILE (markup in its description and its
// failure) and checks the page shows it as text, with no dialog opened; then it shoots the list and the session page. Each thing
// it saw is printed as a line of JSON; any failure exits 1 with what was expected.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, agency, slowFile, longFile, hostileFile, shots] = process.argv.slice(2);
const token = process.env.AGENCY_PAGE_TOKEN;
if (!shots || !token) {
  console.error("usage: AGENCY_PAGE_TOKEN=... node status_page.mjs BASE_URL AGENCY_BIN SLOW.json LONG.json HOSTILE.json SCREENSHOT_DIR");
  process.exit(2);
}
const saw = (what, detail) => console.log(JSON.stringify({ saw: what, ...detail }));
const submit = (file) => execFileSync(agency, ["submit", file], { encoding: "utf8" }).trim();

// The flags that work on these machines, and a profile of its own.
const profile = mkdtempSync(join(tmpdir(), "agency-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
let failed = false;
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(90_000);
  // Nothing may be loaded from anywhere but the coordinator.
  const elsewhere = [];
  page.on("request", (request) => { if (!request.url().startsWith(base)) elsewhere.push(request.url()); });
  page.on("pageerror", (error) => { console.error("page error:", error.message); failed = true; });
  // A script a session's fields smuggled in would open one.
  const dialogs = [];
  page.on("dialog", async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss(); });

  // Without the token the page is refused; with it once, the browser keeps it.
  const refused = await page.goto(base + "/");
  if (refused.status() !== 401) throw new Error(`the page answered ${refused.status()} without a token`);
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  if (page.url().includes("token=")) throw new Error(`the token stayed in the address: ${page.url()}`);

  // The slow session: its progress changes as it runs, then it completes.
  const slow = submit(slowFile);
  await page.goto(`${base}/sessions/${encodeURIComponent(slow)}`);
  const progress = () => page.locator("#main .facts .bar").getAttribute("data-progress");
  await page.locator("#main .facts .bar").waitFor();
  const first = Number(await progress());
  saw("progress", { session: slow, percent: first });
  if (first >= 100) throw new Error(`the slow session was already done when first shown (${first}%)`);
  await page.waitForFunction(
    (before) => Number(document.querySelector("#main .facts .bar")?.dataset.progress) !== before, first);
  const second = Number(await progress());
  saw("progress changed", { session: slow, from: first, to: second });
  await page.locator("#status", { hasText: "completed" }).waitFor();
  saw("status", { session: slow, status: "completed", percent: Number(await progress()) });
  await page.screenshot({ path: join(shots, "status-session.png"), fullPage: true });

  // The long session: cancelled with the button.
  const long = submit(longFile);
  await page.goto(`${base}/sessions/${encodeURIComponent(long)}`);
  await page.locator("#status", { hasText: "running" }).waitFor();
  saw("status", { session: long, status: "running" });
  // Some of it done, for a picture of a session under way.
  await page.waitForFunction(() => document.querySelector("table.failures")
    && !document.querySelector("#tasks tr:nth-child(2) .bar b")?.textContent.startsWith("0 /"));
  await page.screenshot({ path: join(shots, "status-running.png"), fullPage: true });
  await page.locator("#cancel").click();
  await page.locator("#status", { hasText: "cancelled" }).waitFor();
  saw("status", { session: long, status: "cancelled" });

  // Markup in a session's description and failure is text.
  const hostile = submit(hostileFile);
  await page.goto(`${base}/sessions/${encodeURIComponent(hostile)}`);
  await page.locator("#main table.failures td.error").first().waitFor();
  const shown = await page.evaluate(() => ({
    description: document.querySelector("#main h2 + p")?.textContent,
    failure: [...document.querySelectorAll("#main table.failures td.error")].map((td) => td.textContent).join("\n"),
    smuggled: document.querySelectorAll("#main script, #main img").length,
  }));
  if (shown.description !== "<script>alert(1)</script><img src=x onerror=alert(2)>" || shown.smuggled !== 0
      || !shown.failure.includes("<img src=x onerror=alert(3)>")) {
    throw new Error(`markup was not shown as text: ${JSON.stringify(shown)}`);
  }
  if (dialogs.length) throw new Error(`a dialog opened: ${dialogs.join(", ")}`);
  saw("escaped", { session: hostile, dialogs: dialogs.length });

  // The list shows both, as they ended.
  await page.goto(base + "/");
  for (const [id, status] of [[slow, "completed"], [long, "cancelled"]]) {
    await page.locator(`tr[data-session="${id}"] .status`, { hasText: status }).waitFor();
    saw("listed", { session: id, status });
  }
  await page.screenshot({ path: join(shots, "status-list.png"), fullPage: true });
  if (elsewhere.length) throw new Error(`the page loaded from elsewhere: ${elsewhere.join(", ")}`);
  saw("requests", { elsewhere: 0 });
} catch (error) {
  console.error(String(error?.stack ?? error));
  failed = true;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
