// Opens pollcast's status page in headless Chromium, waits until it shows the
// live state the Rust test set up, takes a screenshot, and prints what the
// page shows as one JSON line on stdout.
//
// Usage: node status.mjs <status page URL> <feed name> <screenshot path>
// Exit status: 0 with the JSON; 1 with the reason on stderr.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, feed, screenshot] = process.argv.slice(2);
if (!url || !feed || !screenshot) {
  console.error("usage: node status.mjs <url> <feed> <screenshot.png>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "pollcast-chromium-"));
const timeout = Number(process.env.WAIT_MS || 20000);

let browser;
try {
  // A fresh profile directory per run (Playwright passes it as --user-data-dir).
  browser = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1100, height: 420 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { timeout });
  // Live: connected, the feed's row shows a subscriber, a good poll, a healthy
  // upstream, and a sparkline that has seen events; and it keeps updating.
  await page.waitForFunction((name) => {
    const row = document.querySelector(`tr[data-feed="${name}"]`);
    const svg = row && row.querySelector("svg.spark");
    return document.getElementById("conn").dataset.state === "live"
      && row
      && row.querySelector(".subscribers").firstChild.textContent === "1"
      && row.querySelector(".outcome")?.dataset.outcome === "ok"
      && row.querySelector(".state").dataset.state === "ok"
      && Number(svg.dataset.max) > 0
      && Number(document.body.dataset.updates || 0) >= 3;
  }, feed, { timeout, polling: 100 });
  const shown = await page.evaluate((name) => {
    const row = document.querySelector(`tr[data-feed="${name}"]`);
    const svg = row.querySelector("svg.spark");
    return {
      updates: Number(document.body.dataset.updates),
      subscribers: row.querySelector(".subscribers").firstChild.textContent,
      polls_per_s: Number(row.querySelector(".polls").firstChild.textContent),
      events_per_s: Number(row.querySelector(".events").firstChild.textContent),
      outcome: row.querySelector(".outcome").dataset.outcome,
      upstream_state: row.querySelector(".state").dataset.state,
      spark_points: Number(svg.dataset.points),
      spark_max: Number(svg.dataset.max),
      spark_polyline: svg.querySelector("polyline").getAttribute("points"),
      total_spark_points: Number(document.getElementById("spark-total").dataset.points),
      text: document.body.innerText,
      html: document.documentElement.outerHTML,
    };
  }, feed);
  await page.screenshot({ path: screenshot, fullPage: true });
  shown.errors = errors;
  console.log(JSON.stringify(shown));
} catch (e) {
  console.error(`status page check failed: ${e && e.stack ? e.stack : e}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
