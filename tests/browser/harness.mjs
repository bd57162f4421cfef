// What every browser script shares: playwright-core from tests/node, its environment, a page
// signed in with the test's key, and the run protocol test_*.py reads (browser_env.run_script):
// one JSON line `{"ok": true, ...}` on stdout and exit 0, or the reason on stderr and exit 1.

import assert from "node:assert/strict";
import { createRequire } from "node:module";

// playwright-core is installed in tests/node (one package.json for the Node tests).
const require = createRequire(new URL("../node/package.json", import.meta.url));
const { chromium } = require("playwright-core");

/** The value of a required environment variable. */
export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set`);
  return value;
}

/** Where results and uncaught page errors are collected while a script runs. */
export function newRun(fields = {}) {
  return { summary: { ok: false, ...fields }, pageErrors: [] };
}

/** A new page on /ui/ with `key` typed in and used; page errors are collected in `run`. */
export async function signedInPage(browser, run, { base, key, timeoutMs, ...options }) {
  const page = await browser.newPage(options);
  page.setDefaultTimeout(timeoutMs);
  page.on("pageerror", (error) => run.pageErrors.push(error.message));
  await page.goto(`${base}/ui/`);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Use key" }).click();
  return page;
}

/** Launch Chromium, run `body(browser)`, check the page raised nothing, print the summary. */
export function main(run, executablePath, body) {
  (async () => {
    const browser = await chromium.launch({ executablePath, headless: true });
    try {
      await body(browser);
      assert.deepEqual(run.pageErrors, [], "uncaught errors in the page");
      run.summary.ok = true;
      process.stdout.write(`${JSON.stringify(run.summary)}\n`);
    } finally {
      await browser.close();
    }
  })().catch((error) => {
    process.stderr.write(`${error.stack || error}\nsummary so far: ${JSON.stringify(run.summary)}\n`);
    if (run.pageErrors.length) process.stderr.write(`page errors: ${JSON.stringify(run.pageErrors)}\n`);
    process.exit(1);
  });
}
