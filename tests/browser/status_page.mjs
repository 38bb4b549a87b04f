// Drives the coordinator's status page in Debian's headless Chromium with playwright-core.
// Run by tests/status_page.rs, which starts a coordinator (with --http) and workers:
//
//   node status_page.mjs BASE_URL AGENCY_BIN SLOW.json LONG.json SCREENSHOT_DIR
//
// It submits SLOW (a fan-out of a few seconds) and watches its page until the rendered
// progress has changed and the status reads `completed`; it submits LONG, presses Cancel on
// its page and waits for `cancelled`; then it shoots the list and the session page. Each thing
// it saw is printed as a line of JSON; any failure exits 1 with what was expected.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, agency, slowFile, longFile, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node status_page.mjs BASE_URL AGENCY_BIN SLOW.json LONG.json SCREENSHOT_DIR");
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
