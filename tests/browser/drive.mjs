// A thin Chromium driver for Rust tests: one headless Chromium (Debian's,
// through playwright-core), commands on stdin, one answer line per command.
//
//   open <url>          -> ok
//   wait <js expr>      -> ok | err <why>   (waits until the expression is truthy)
//   eval <js expr>      -> ok <JSON of the value>
//   shot <path>         -> ok
//   init <js source>    -> ok   (runs in every page opened afterwards, before its scripts)
//   quit                -> (exits)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const timeout = Number(process.env.WAIT_MS || 20000);
const profile = mkdtempSync(join(tmpdir(), "pollcast-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 900, height: 500 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const say = (line) => process.stdout.write(line.replace(/\n/g, " ") + "\n");
say("ready");
for await (const line of createInterface({ input: process.stdin })) {
  const sp = line.indexOf(" ");
  const [cmd, arg] = sp < 0 ? [line, ""] : [line.slice(0, sp), line.slice(sp + 1)];
  try {
    if (cmd === "open") {
      await page.goto(arg, { timeout });
      say("ok");
    } else if (cmd === "wait") {
      await page.waitForFunction(arg, null, { timeout, polling: 50 });
      say("ok");
    } else if (cmd === "eval") {
      say("ok " + JSON.stringify(await page.evaluate(arg)));
    } else if (cmd === "init") {
      await page.addInitScript(arg);
      say("ok");
    } else if (cmd === "shot") {
      await page.screenshot({ path: arg, fullPage: true });
      say("ok");
    } else if (cmd === "quit") {
      break;
    } else {
      say("err unknown command " + cmd);
    }
  } catch (e) {
    const body = await page.evaluate(() => document.body?.innerText).catch(() => "");
    say(`err ${String(e).split("\n")[0]} | page errors: ${JSON.stringify(errors)} | page: ${JSON.stringify(body)}`);
  }
}
await browser.close();
rmSync(profile, { recursive: true, force: true });
process.exit(0); // stdin (still open on the Rust side) must not keep node alive
