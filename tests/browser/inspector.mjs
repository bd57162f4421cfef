// The web inspector (/ui) driven in headless Chromium by playwright-core, as an operator would.
//
// Run by tests/browser/test_inspector.py:
//   MEMPROXY_URL=http://127.0.0.1:PORT MEMPROXY_KEY=... MEMPROXY_AGENT=... \
//   MEMPROXY_BLOCK_TEXT=... MEMPROXY_CHROMIUM=/usr/bin/chromium node inspector.mjs SCREENSHOT.png
// The agent must exist with a first turn "My name is Ada" in conversation "default" (one
// internal memory step: core_memory_append + its result) and a conversation "edits" holding
// two superseded messages. On success prints one JSON line ({"ok": true, ...}) and exits 0;
// on any failed check prints the reason to stderr and exits 1.

import assert from "node:assert/strict";

import { env, main, newRun } from "./harness.mjs";

const TIMEOUT_MS = 15_000;

const base = env("MEMPROXY_URL");
const key = env("MEMPROXY_KEY");
const agent = env("MEMPROXY_AGENT");
const blockText = env("MEMPROXY_BLOCK_TEXT");
const executablePath = env("MEMPROXY_CHROMIUM");
const screenshot = process.argv[2];
if (!screenshot) throw new Error("usage: node inspector.mjs SCREENSHOT.png");

const extraShots = process.env.MEMPROXY_SCREENSHOTS === "all"; // one per tab, for review
const run = newRun();
const { summary, pageErrors } = run;

/** With MEMPROXY_SCREENSHOTS=all, a full-page screenshot next to the main one. */
async function shot(page, name) {
  if (extraShots) await page.screenshot({ path: screenshot.replace(/\.png$/, `-${name}.png`), fullPage: true });
}

/** The counter's "N / M characters" numbers. */
async function counterNumbers(counter) {
  const text = await counter.textContent();
  const match = /^([\d,]+) \/ ([\d,]+) characters/.exec(text);
  assert.ok(match, `counter text ${JSON.stringify(text)}`);
  return [Number(match[1].replace(/,/g, "")), Number(match[2].replace(/,/g, ""))];
}

async function blocksTab(page) {
  const human = page.locator('article.block[data-label="human"]');
  const textarea = human.locator("textarea");
  const counter = human.locator(".counter");
  const save = human.getByRole("button", { name: "Save", exact: true });
  await textarea.waitFor();
  const original = await textarea.inputValue();
  assert.match(original, /Name: Ada/, "the memory step's edit is in the human block");
  const [chars, limit] = await counterNumbers(counter);
  assert.equal(chars, [...original].length);
  assert.equal(await save.isDisabled(), true, "nothing to save before an edit");
  assert.equal(await human.locator(".badge.readonly").isVisible(), false);

  // Over the limit: the counter turns red and saving is refused in the page.
  await textarea.fill("x".repeat(limit + 1));
  await page.waitForFunction((el) => el.classList.contains("over"), await counter.elementHandle());
  assert.equal((await counterNumbers(counter))[0], limit + 1);
  assert.match(await counter.textContent(), /over the limit by 1/);
  const color = await counter.evaluate((el) => getComputedStyle(el).color);
  assert.equal(color, "rgb(179, 38, 30)", "an over-limit counter is red");
  assert.equal(await textarea.getAttribute("aria-invalid"), "true");
  assert.equal(await save.isDisabled(), true, "Save is disabled over the limit");

  // Type the distinctive text, save, and check the counter follows.
  await textarea.fill("");
  await textarea.pressSequentially(blockText, { delay: 0 });
  assert.equal((await counterNumbers(counter))[0], [...blockText].length);
  assert.equal(await counter.evaluate((el) => el.classList.contains("over")), false);
  await save.click();
  await human.locator(".block-message", { hasText: "Saved." }).waitFor();
  summary.counter = await counter.textContent();

  // History: the API edit is the newest revision; undo it, then save again by keyboard.
  await human.getByRole("button", { name: "Show history" }).click();
  const newest = human.locator("li.revision").first();
  await newest.waitFor();
  assert.equal(await newest.getAttribute("data-source"), "api");
  assert.ok((await newest.locator("pre").last().textContent()).includes(blockText));
  summary.revisionSources = await human.locator("li.revision").evaluateAll(
    (items) => items.map((li) => li.dataset.source));
  await newest.getByRole("button", { name: /^Undo change #/ }).click();
  await page.waitForFunction(
    ([el, value]) => el.value === value, [await textarea.elementHandle(), original]);
  await human.locator("li.revision[data-source='undo']").first().waitFor();

  await textarea.fill(blockText);
  await textarea.focus();
  await page.keyboard.press("Tab"); // the read-only checkbox
  await page.keyboard.press("Tab"); // Save
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Save");
  await page.keyboard.press("Enter");
  await human.locator(".block-message", { hasText: "Saved." }).waitFor();

  await page.reload();
  await textarea.waitFor();
  assert.equal(await textarea.inputValue(), blockText, "the edit is stored on the server");
  await human.getByRole("button", { name: "Show history" }).click();
  await human.locator("li.revision").first().waitFor();
  await shot(page, "blocks");

  // The operator may make a block read-only for the model; the badge follows the saved state.
  const persona = page.locator('article.block[data-label="persona"]');
  const badge = persona.locator(".badge.readonly");
  assert.equal(await badge.isVisible(), false);
  await persona.getByLabel(/Read-only for the model/).check();
  assert.equal(await badge.isVisible(), false, "the badge shows the saved state, not the draft");
  await persona.getByRole("button", { name: "Save", exact: true }).click();
  await persona.locator(".block-message", { hasText: "Saved." }).waitFor();
  await badge.waitFor();
  summary.personaReadOnly = true;
}

async function conversationsTab(page) {
  await page.getByRole("link", { name: "Conversations" }).click();
  await page.locator('a[data-conversation="default"]').click();
  await page.locator("#conversation-title", { hasText: "default" }).waitFor();
  const transcript = page.locator("ol.transcript");
  await transcript.locator("li.message").first().waitFor();
  const steps = transcript.locator("li.message.memory-step");
  summary.memorySteps = await steps.count();
  assert.ok(summary.memorySteps >= 2, "the memory-tool call and its result are shown");
  for (let i = 0; i < summary.memorySteps; i += 1) {
    assert.equal(await steps.nth(i).locator(".badge.memory").textContent(), "memory step");
  }
  assert.ok((await steps.first().textContent()).includes("core_memory_append"));
  await shot(page, "transcript");
  const user = transcript.locator("li.message.role-user", { hasText: "My name is Ada" });
  assert.equal(await user.count(), 1);
  const style = (loc) => loc.evaluate((el) => {
    const s = getComputedStyle(el);
    return { font: s.fontFamily, indent: parseFloat(s.marginLeft) };
  });
  const stepStyle = await style(steps.first());
  const userStyle = await style(user);
  assert.match(stepStyle.font, /mono/i, "memory steps are monospace");
  assert.doesNotMatch(userStyle.font, /mono/i);
  assert.ok(stepStyle.indent > userStyle.indent, "memory steps are indented");

  // Full-text search in this conversation.
  await page.getByRole("searchbox", { name: "Search transcripts" }).fill("Ada");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.locator("ol.search-results li.message").first().waitFor();
  summary.searchHits = await page.locator("ol.search-results li.message").count();

  // Superseded messages appear, greyed, only on request.
  await page.locator('a[data-conversation="edits"]').click();
  await page.locator("#conversation-title", { hasText: "edits" }).waitFor();
  await transcript.locator("li.message").first().waitFor();
  const visibleCount = await transcript.locator("li.message").count();
  assert.equal(await transcript.locator("li.message.superseded").count(), 0);
  await page.getByLabel("Show superseded messages").check();
  await transcript.locator("li.message.superseded").first().waitFor();
  summary.superseded = await transcript.locator("li.message.superseded").count();
  assert.equal(await transcript.locator("li.message").count(), visibleCount + summary.superseded);
  const opacity = await transcript.locator("li.message.superseded").first()
    .evaluate((el) => Number(getComputedStyle(el).opacity));
  assert.ok(opacity < 1, "superseded messages are greyed");
  await shot(page, "edits");
}

async function passagesTab(page) {
  await page.getByRole("link", { name: "Archival passages" }).click();
  await page.getByLabel("Text").fill("The launch checklist lives in the blue folder.");
  await page.getByLabel("Tags", { exact: true }).fill("notes, ops");
  await page.getByRole("button", { name: "Add passage" }).click();
  const item = page.locator("li.passage", { hasText: "blue folder" });
  await item.waitFor();
  await shot(page, "passages");
  await page.getByRole("searchbox", { name: "Search passages" }).fill("checklist");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.locator("li.passage .badge.score").first().waitFor();
  assert.equal(await page.locator("li.passage").count(), 1);
  page.once("dialog", (dialog) => dialog.accept());
  await item.getByRole("button", { name: /^Delete passage/ }).click();
  await item.waitFor({ state: "detached" });
  summary.passageAddedAndDeleted = true;
}

async function contextTab(page) {
  await page.getByRole("link", { name: "Context window" }).click();
  const blocks = page.locator('.context-bar:not(.zoomed) .segment[data-part="blocks"]');
  await blocks.waitFor();
  const width = await blocks.evaluate((el) => el.getBoundingClientRect().width);
  assert.ok(width > 0, "the blocks segment has a width");
  // A large window also gets the used parts enlarged: blocks are wider there.
  const zoomed = page.locator('.context-bar.zoomed .segment[data-part="blocks"]');
  if (await zoomed.count()) {
    assert.ok(await zoomed.evaluate((el) => el.getBoundingClientRect().width) > width);
  }
  const parts = await page.locator(".legend tbody tr").evaluateAll((rows) => Object.fromEntries(
    rows.map((tr) => [tr.dataset.part, Number(tr.cells[1].textContent.replace(/,/g, ""))])));
  assert.ok(parts.blocks > 0 && parts.messages > 0 && parts.system > 0, JSON.stringify(parts));
  summary.contextParts = parts;
  summary.window = Number((await page.locator(".window-size").textContent()).replace(/\D/g, ""));
  assert.ok(summary.window > 0);
}

main(run, executablePath, async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on("pageerror", (error) => pageErrors.push(error.message));

  await page.goto(`${base}/ui`);
  assert.ok(page.url().endsWith("/ui/"), `redirected to ${page.url()}`);
  // No key yet: the server refuses, and the page says where to put one.
  await page.getByRole("alert").filter({ hasText: "API key" }).waitFor();

  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Use key" }).click();
  await page.getByRole("link", { name: agent, exact: true }).click();
  await page.getByRole("heading", { name: `Agent ${agent}` }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, "the key is kept for this tab");

  await blocksTab(page);
  await conversationsTab(page);
  await passagesTab(page);
  await contextTab(page);
  await page.screenshot({ path: screenshot, fullPage: true });
});
