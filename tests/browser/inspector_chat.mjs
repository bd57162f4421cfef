// The inspector's Chat tab and its create/delete controls, driven in headless Chromium by
// playwright-core, as an operator would.
//
// Run by tests/browser/test_inspector_chat.py:
//   MEMPROXY_URL=http://127.0.0.1:PORT MEMPROXY_KEY=... MEMPROXY_AGENT=... \
//   MEMPROXY_CHROMIUM=/usr/bin/chromium node inspector_chat.mjs SCREENSHOT_DIR
// The agent must not exist yet; the fake upstream answers "My name is Ada" with a
// core_memory_append call, then (after a delay the test pushes) with its answer. On success
// prints one JSON line ({"ok": true, "screenshots": {...}, ...}) and exits 0; on any failed
// check prints the reason to stderr and exits 1.

import assert from "node:assert/strict";
import path from "node:path";

import { env, main, newRun, signedInPage } from "./harness.mjs";

const TIMEOUT_MS = 20_000;

const base = env("MEMPROXY_URL");
const key = env("MEMPROXY_KEY");
const agent = env("MEMPROXY_AGENT");
const executablePath = env("MEMPROXY_CHROMIUM");
const shotDir = process.argv[2];
if (!shotDir) throw new Error("usage: node inspector_chat.mjs SCREENSHOT_DIR");

const run = newRun({ screenshots: {} });
const { summary, pageErrors } = run;

async function shot(page, name) {
  const file = path.join(shotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  summary.screenshots[name] = file;
}

/** The agents REST API from Node, with the same key: what the server really holds. */
async function rest(method, route) {
  const response = await fetch(`${base}${route}`, { method, headers: { Authorization: `Bearer ${key}` } });
  return { status: response.status, body: await response.json() };
}

async function createAgent(page) {
  const form = page.locator("details.new-agent");
  await form.locator("summary").click();
  await form.getByLabel("Agent id").fill(agent);
  await form.getByLabel("Model").fill("gpt-4o-mini");
  await form.getByRole("button", { name: "Add a block" }).click();
  await form.getByRole("button", { name: "Add a block" }).click();
  const [human, persona] = [form.locator("fieldset.block-fields").nth(0), form.locator("fieldset.block-fields").nth(1)];
  await human.getByLabel("Label").fill("human");
  await human.getByLabel("Limit (characters)").fill("2000");
  await persona.getByLabel("Label").fill("persona");
  await persona.getByLabel("Value").fill("A patient butler. <b>not markup</b>");
  await persona.getByLabel("Read-only for the model").check();
  await shot(page, "create-agent");
  await form.getByRole("button", { name: "Create agent" }).click();
  await page.getByRole("heading", { name: `Agent ${agent}` }).waitFor();
  assert.match(page.url(), /\/chat$/, "a new agent opens on its Chat tab");
  const created = await rest("GET", `/v1/agents/${agent}`);
  assert.equal(created.status, 200);
  assert.equal(created.body.settings.model, "gpt-4o-mini");
  summary.createdBlocks = created.body.blocks.map((b) => [b.label, b.limit, b.read_only, b.value]);
}

async function chat(page) {
  // A new conversation from the chat panel, then a message in it.
  await page.getByLabel("New conversation id").fill("first-chat");
  await page.getByRole("button", { name: "Create conversation" }).click();
  await page.waitForURL(/\/chat\/first-chat$/);
  const picked = page.getByLabel("Conversation", { exact: true });
  await picked.waitFor();
  assert.equal(await picked.inputValue(), "first-chat");
  const listed = await rest("GET", `/v1/agents/${agent}/conversations`);
  assert.deepEqual(listed.body.data.map((c) => [c.id, c.messages]), [["first-chat", 0]]);

  const humanBlock = page.locator('.chat-blocks li[data-label="human"]');
  await humanBlock.waitFor();
  await page.getByLabel("Message", { exact: true }).fill("My name is Ada");
  await page.getByLabel("Message", { exact: true }).press("Enter");

  // The memory step arrives first; the model's second call is still being answered.
  const step = page.locator('.chat-log li[data-message-type="tool_call_message"]');
  await step.waitFor();
  const answer = page.locator('.chat-log li[data-message-type="assistant_message"]');
  summary.stepBeforeAnswer = (await answer.count()) === 0;
  assert.match(await step.textContent(), /core_memory_append/);
  assert.ok(await step.locator(".badge.memory").isVisible(), "marked as a memory step");
  await humanBlock.locator(".badge.changing").waitFor();
  await page.locator('.chat-log li[data-message-type="tool_return_message"]').waitFor();
  await shot(page, "chat-memory-step");

  await answer.waitFor();
  await page.locator(".turn-state", { hasText: "Turn done" }).waitFor();
  assert.equal(await answer.count(), 1, "the answer's chunks join one message");
  summary.answerChunks = Number(await answer.getAttribute("data-chunks"));
  assert.equal((await answer.locator(".content").textContent()).trim(), "Got it, I'll remember that.");
  await humanBlock.locator(".badge.changed").waitFor();
  assert.match(await humanBlock.locator("pre.value").textContent(), /Name: Ada/);
  assert.match(await page.locator(".turn-state").textContent(), /blocks changed: human/);
  summary.memorySteps = await page.locator(".chat-log li.memory-step").count();
  await page.locator(".chat-bar option", { hasText: "first-chat (2 messages)" }).waitFor({ state: "attached" });
  await shot(page, "chat-answer");

  // The next turn needs no model field: the agent's settings.model; it sees the memory.
  await page.getByLabel("Model", { exact: true }).fill("");
  await page.getByLabel("Message", { exact: true }).fill("What is my name?");
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await answer.nth(1).waitFor();
  await page.locator(".turn-state", { hasText: "Turn done" }).waitFor();
  summary.secondAnswer = (await answer.nth(1).locator(".content").textContent()).trim();

  // A turn whose second model call fails: the memory step is shown, then the error and Retry,
  // which resends the same otid and so continues the failed turn (stored once).
  await page.getByLabel("Message", { exact: true }).fill("Remember in archive: the locker code is 4711");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  const failed = page.locator(".chat-log li.turn-error");
  await failed.waitFor();
  summary.failedTurnError = (await failed.locator(".error").textContent()).trim();
  assert.equal(await page.locator('.chat-log li[data-message-type="tool_call_message"]').count(), 2,
    "the failed turn's memory step was shown before its error");
  await shot(page, "chat-failed-turn");
  await failed.getByRole("button", { name: /^Retry/ }).click();
  await answer.nth(2).waitFor();
  await page.locator(".turn-state", { hasText: "Turn done" }).waitFor();
  summary.retriedAnswer = (await answer.nth(2).locator(".content").textContent()).trim();
  assert.equal(await failed.count(), 0, "the error box goes with the retry");
  const passages = await rest("GET", `/v1/agents/${agent}/passages`);
  summary.passagesAfterRetry = passages.body.data.map((p) => p.text);

  // Opened again, the chat shows the stored transcript, memory steps included.
  await page.reload();
  await page.locator(".chat-log li.message").first().waitFor();
  summary.reloadedRows = await page.locator(".chat-log li.message").count();
  summary.reloadedMemorySteps = await page.locator(".chat-log li.memory-step").count();
}

async function blocks(page) {
  await page.getByRole("link", { name: "Memory blocks" }).click();
  await page.locator('article.block[data-label="human"]').waitFor();
  const form = page.locator("details.new-block");
  await form.locator("summary").click();
  await form.getByLabel("Label").fill("notes");
  await form.getByLabel("Value").fill("likes tea");
  await form.getByLabel("Limit (characters)").fill("100");
  await form.getByLabel("Read-only for the model").check();
  await shot(page, "new-block");
  await form.getByRole("button", { name: "Create block" }).click();
  const notes = page.locator('article.block[data-label="notes"]');
  await notes.waitFor();
  const made = await rest("GET", `/v1/agents/${agent}/blocks/notes`);
  summary.newBlock = [made.body.value, made.body.limit, made.body.read_only];

  // A label that exists is refused in the page, nothing sent.
  await page.locator("details.new-block summary").click();
  await page.locator("details.new-block").getByLabel("Label").fill("human");
  await page.locator("details.new-block").getByRole("button", { name: "Create block" }).click();
  await page.locator("details.new-block .error", { hasText: "exists already" }).waitFor();

  // Delete asks first: dismissed, the block stays; accepted, it goes.
  page.once("dialog", (dialog) => dialog.dismiss());
  await notes.getByRole("button", { name: "Delete block" }).click();
  assert.equal((await rest("GET", `/v1/agents/${agent}/blocks/notes`)).status, 200);
  page.once("dialog", (dialog) => dialog.accept());
  await notes.getByRole("button", { name: "Delete block" }).click();
  await notes.waitFor({ state: "detached" });
  summary.blockDeleted = (await rest("GET", `/v1/agents/${agent}/blocks/notes`)).status === 404;
}

async function deleteConversation(page) {
  await page.getByRole("link", { name: "Chat" }).click();
  await page.waitForURL(/\/chat$/);
  const remove = page.getByRole("button", { name: "Delete this conversation" });
  await remove.waitFor();
  page.once("dialog", (dialog) => dialog.accept());
  await remove.click();
  await page.locator(".chat-bar option", { hasText: "default (new)" }).waitFor({ state: "attached" });
  const left = await rest("GET", `/v1/agents/${agent}/conversations`);
  summary.conversationsLeft = left.body.data.map((c) => c.id);
}

async function deleteAgent(page) {
  const remove = page.getByRole("button", { name: "Delete agent" });
  page.once("dialog", (dialog) => dialog.dismiss());
  await remove.click();
  assert.equal((await rest("GET", `/v1/agents/${agent}`)).status, 200, "dismissed: still there");
  page.once("dialog", (dialog) => dialog.accept());
  await remove.click();
  await page.getByRole("heading", { name: "Agents" }).waitFor();
  await page.locator(".agents-body p").first().waitFor();
  summary.agentListedAfterDelete = await page.getByRole("link", { name: agent, exact: true }).count();
  summary.agentDeleted = (await rest("GET", `/v1/agents/${agent}`)).status === 404;
  await shot(page, "agents-after-delete");
}

main(run, executablePath, async (browser) => {
  const page = await signedInPage(browser, run, {
    base, key, timeoutMs: TIMEOUT_MS, viewport: { width: 1280, height: 900 } });
  await page.getByRole("heading", { name: "Agents" }).waitFor();

  await createAgent(page);
  await chat(page);
  await blocks(page);
  await deleteConversation(page);
  await deleteAgent(page);
});
