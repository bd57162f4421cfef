// Drives the inspector's views in headless Chromium (see test_inspector_views.py): block
// history as diffs, a long transcript opened at its newest message, a conversation's branch,
// the Context tab following its picker, the raw next request, and the phone layout at 390 px.
// Prints one JSON summary line on stdout; screenshots go to $MEMPROXY_SHOTS.

import assert from "node:assert/strict";
import path from "node:path";

import { env, main, newRun, signedInPage } from "./harness.mjs";

const TIMEOUT_MS = 15_000;

const base = env("MEMPROXY_URL");
const key = env("MEMPROXY_KEY");
const agent = env("MEMPROXY_AGENT");
const executablePath = env("MEMPROXY_CHROMIUM");
const shotsDir = env("MEMPROXY_SHOTS");
const expect = JSON.parse(env("MEMPROXY_EXPECT"));
const run = newRun({ screenshots: {}, phone: {} });
const { summary, pageErrors } = run;

async function shot(page, name, fullPage = true) {
  const file = path.join(shotsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  summary.screenshots[name] = file;
}

const agentHash = (tab, conversation) => `#/agent/acme/${encodeURIComponent(agent)}/${tab}`
  + (conversation ? `/${encodeURIComponent(conversation)}` : "");

async function openTab(page, tab, conversation) {
  await page.evaluate((hash) => { window.location.hash = hash; }, agentHash(tab, conversation));
  await page.getByRole("heading", { name: `Agent ${agent}` }).waitFor();
}

async function historyDiffs(page) {
  await openTab(page, "blocks");
  const notes = page.locator('article.block[data-label="notes"]');
  await notes.getByRole("button", { name: "Show history" }).click();
  const newest = notes.locator("li.revision").first();
  await newest.locator("pre.diff").waitFor();
  const inserted = await newest.locator("pre.diff ins").allTextContents();
  const deleted = await newest.locator("pre.diff del").allTextContents();
  assert.ok(inserted.join("").includes("CHANGED"), `inserted ${JSON.stringify(inserted)}`);
  assert.ok(deleted.join("").includes("project"), `deleted ${JSON.stringify(deleted)}`);
  assert.ok((await newest.locator(".diff-skip").count()) >= 1, "unchanged stretches are elided");
  const full = newest.locator("details.revision-full");
  assert.equal(await full.evaluate((el) => el.open), false, "full texts are collapsed");
  const height = await newest.evaluate((el) => el.getBoundingClientRect().height);
  assert.ok(height < 400, `a one-line change is short, not a wall (${height} px)`);
  await full.locator("summary").click();
  await full.locator(".revision-values pre").last().waitFor();
  assert.ok((await full.locator(".revision-values pre").last().textContent()).includes("CHANGED note 20"));
  // the first revision of the block: everything inserted
  assert.ok((await notes.locator("li.revision").nth(1).locator("pre.diff ins").count()) >= 1);
  // the diff's invariants on random texts: kept + deleted gives the old text, kept + inserted
  // the new one, and the large-input fallbacks keep them too
  const invariants = await page.evaluate(async () => {
    const { diffWords } = await import(new URL("static/js/diff.js", document.baseURI).href);
    const words = ["a", "b", "cat", "dog", " ", "\n", "  ", "é", "🙂"];
    let seed = 7;
    const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    const text = (n) => Array.from({ length: n }, () => words[rnd(words.length)]).join("");
    const failures = [];
    for (const size of [0, 1, 5, 40, 200, 1200]) {
      for (let k = 0; k < 6; k += 1) {
        const a = text(size);
        const b = rnd(2) ? text(size) : a.slice(0, a.length / 2) + text(3) + a.slice(a.length / 2);
        const ops = diffWords(a, b);
        const old = ops.filter(([kind]) => kind !== "ins").map(([, t]) => t).join("");
        const now = ops.filter(([kind]) => kind !== "del").map(([, t]) => t).join("");
        if (old !== a || now !== b) failures.push([size, k]);
      }
    }
    return failures;
  });
  assert.deepEqual(invariants, [], "diff invariants");
  summary.diff = { inserted, deleted, height };
  await full.locator("summary").click();
  await newest.scrollIntoViewIfNeeded();
  await shot(page, "block-history-diff", false);
}

const seqs = (list) => list.locator(":scope > li.message").evaluateAll(
  (items) => items.map((li) => Number(li.dataset.seq)));

async function longTranscript(page) {
  await openTab(page, "conversations", "long");
  await page.locator("#conversation-title", { hasText: "long" }).waitFor();
  const list = page.locator("ol.transcript");
  const last = `Long chat note ${expect.long_turns - 1}`;
  await list.locator("li.message.role-user", { hasText: last }).waitFor();
  assert.equal(await list.locator("li.message", { hasText: "Long chat note 0" }).count(), 0,
    "it opens at the newest messages, not the oldest");
  const scroller = page.locator(".transcript-scroll");
  const atBottom = () => scroller.evaluate((el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 2);
  assert.ok(await atBottom(), "scrolled to the newest message");
  let shown = await seqs(list);
  assert.deepEqual(shown, [...shown].sort((a, b) => a - b), "oldest to newest, top to bottom");
  await shot(page, "transcript-newest", false);
  let pagesOlder = 0;
  const older = page.getByRole("button", { name: "Load older messages" });
  while (await older.count()) {
    const before = shown.length;
    await older.click();
    await page.waitForFunction((n) => document.querySelectorAll("ol.transcript > li.message").length > n, before);
    pagesOlder += 1;
    shown = await seqs(list);
  }
  assert.ok(pagesOlder >= 1, "the long chat needed older pages");
  await list.locator("li.message.role-user", { hasText: "Long chat note 0" }).waitFor();
  assert.deepEqual(shown, [...shown].sort((a, b) => a - b));
  await page.getByRole("button", { name: "Jump to start" }).click();
  await page.getByRole("button", { name: "Jump to latest" }).waitFor();
  await page.getByRole("button", { name: "Load newer messages" }).waitFor();
  const first = list.locator(":scope > li.message").first();
  assert.match(await first.textContent(), /Long chat note 0\b/);
  assert.equal(await list.locator("li.message", { hasText: last }).count(), 0);
  assert.equal(await scroller.evaluate((el) => el.scrollTop), 0);
  await shot(page, "transcript-start", false);
  await page.getByRole("button", { name: "Jump to latest" }).click();
  await list.locator("li.message.role-user", { hasText: last }).waitFor();
  summary.transcript = { pagesOlder, messages: shown.length };
}

async function branches(page) {
  await openTab(page, "conversations", "edits");
  await page.locator("#conversation-title", { hasText: "edits" }).waitFor();
  const point = page.locator("li.branch-point");
  await point.waitFor();
  assert.equal(await point.count(), 1);
  const summaryText = await point.locator("summary").textContent();
  assert.match(summaryText, /Branched after #\d+: 1 other version \(2 superseded messages/);
  assert.equal(await page.locator("li.message.superseded").count(), 0, "closed by default");
  // the branch follows the message it continues: the assistant's first reply
  const before = await point.evaluate((li) => li.previousElementSibling.textContent);
  assert.match(before, /assistant/i);
  await point.locator("summary").click();
  await point.locator("li.message.superseded").first().waitFor();
  const superseded = await point.locator("li.message.superseded").count();
  assert.ok((await point.locator("li.message.superseded.role-user", { hasText: "Hi again" }).count()) === 1);
  const active = page.locator("ol.transcript > li.message.role-user", { hasText: "Hi once more" });
  assert.equal(await active.count(), 1, "the edited message is on the active path");
  assert.equal(await active.locator(".badge.branch-badge").textContent(), "current version (2 of 2)");
  await point.scrollIntoViewIfNeeded();
  await shot(page, "branch-open", false);
  summary.branch = { superseded, summaryText };
}

async function contextFollowsPicker(page) {
  await openTab(page, "context");
  const picker = page.getByLabel("Conversation", { exact: true });
  const count = async (conversation) => {
    await page.locator(".context-out dd", { hasText: conversation }).first().waitFor();
    const dd = page.locator(".context-out dt", { hasText: "Messages in context" }).locator("xpath=following-sibling::dd[1]");
    return Number((await dd.textContent()).replace(/\D/g, ""));
  };
  const numbers = {};
  await picker.selectOption("long");
  numbers.long = await count("long");
  assert.match(page.url(), /\/context\/long$/, "the address follows the picker");
  await picker.selectOption("default");  // no button pressed: the report follows the picker
  numbers.default = await count("default");
  await picker.selectOption("long");
  numbers.long = await count("long");
  await picker.selectOption("default");
  numbers.default = await count("default");
  assert.equal(await page.locator(".context-out dd", { hasText: "long" }).count(), 0,
    "nothing of the other conversation is left on screen");
  // picked twice in a row: whichever answer comes last, the screen shows the last pick
  await picker.selectOption("long");
  await picker.selectOption("default");
  await page.waitForLoadState("networkidle");
  assert.equal(await count("default"), numbers.default);
  assert.equal(await page.locator(".context-out dd", { hasText: "long" }).count(), 0);
  summary.context = numbers;

  // The raw next request for a typed message.
  await page.getByLabel("Next message (optional)").fill(expect.raw_message);
  await page.locator("details.raw-box > summary").click();
  await page.getByRole("button", { name: "Show context" }).click();
  const pre = page.locator("pre.raw-json");
  await page.waitForFunction((text) => {
    const el = document.querySelector("pre.raw-json");
    return el && el.textContent.includes(text);
  }, expect.raw_message);
  summary.rawNote = await page.locator(".raw-request > p").first().textContent();
  const raw = JSON.parse(await pre.textContent());
  assert.deepEqual(raw.messages[raw.messages.length - 1], { role: "user", content: expect.raw_message });
  assert.equal(raw.messages[0].role, "system");
  assert.match(raw.messages[0].content, /Name: Ada/);
  assert.ok(Array.isArray(raw.tools) && raw.tools.length > 0);
  assert.equal((await pre.textContent()).includes(key), false);
  // the readable list shows the same messages, newlines as newlines
  const readable = page.locator(".raw-messages > li");
  assert.equal(await readable.count(), raw.messages.length);
  assert.equal(await readable.first().locator("pre").textContent(), raw.messages[0].content);
  summary.raw = raw;
  await page.locator("details.raw-box").scrollIntoViewIfNeeded();
  await shot(page, "context-raw", false);
}

async function noOverflow(page, name) {
  const sizes = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  }));
  assert.ok(sizes.scroll <= sizes.inner, `${name}: ${sizes.scroll} px wide on a ${sizes.inner} px screen`);
  summary.phone[name] = sizes;
}

async function phone(browser) {
  const page = await signedInPage(browser, run, {
    base, key, timeoutMs: TIMEOUT_MS, viewport: { width: 390, height: 844 }, isMobile: true,
    hasTouch: true });
  await page.getByRole("link", { name: agent, exact: true }).waitFor();
  await noOverflow(page, "agents");
  await shot(page, "phone-agents");
  await page.getByRole("link", { name: agent, exact: true }).click();
  await page.locator('article.block[data-label="notes"]').waitFor();
  await page.locator('article.block[data-label="notes"]').getByRole("button", { name: "Show history" }).click();
  await page.locator("pre.diff").first().waitFor();
  await noOverflow(page, "blocks");
  await shot(page, "phone-blocks");
  await openTab(page, "conversations", "edits");
  await page.locator("li.branch-point").waitFor();
  await page.locator("li.branch-point summary").click();
  await page.locator("li.message.superseded").first().waitFor();
  await noOverflow(page, "conversations");
  await shot(page, "phone-conversations");
  await openTab(page, "passages");
  await page.getByRole("button", { name: "Add passage" }).waitFor();
  await noOverflow(page, "passages");
  await openTab(page, "context");
  await page.locator(".context-bar").first().waitFor();
  await page.locator("details.raw-box > summary").click();
  await page.locator("pre.raw-json").waitFor();
  await noOverflow(page, "context");
  await shot(page, "phone-context");
  await openTab(page, "chat", "edits");
  await page.locator("form.chat-form").waitFor();
  await page.locator("ol.chat-log li.message").first().waitFor();
  await noOverflow(page, "chat");
  await shot(page, "phone-chat");
  await page.close();
}

main(run, executablePath, async (browser) => {
  const page = await signedInPage(browser, run, {
    base, key, timeoutMs: TIMEOUT_MS, viewport: { width: 1280, height: 900 } });
  await page.getByRole("link", { name: agent, exact: true }).click();
  await page.getByRole("heading", { name: `Agent ${agent}` }).waitFor();

  await historyDiffs(page);
  await longTranscript(page);
  await branches(page);
  await contextFollowsPicker(page);
  await phone(browser);
});
