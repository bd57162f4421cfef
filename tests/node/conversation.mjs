// The official `openai` npm package driving memproxy, the way a typical Node app would.
//
// Run by tests/e2e/test_node_client.py:
//   MEMPROXY_BASE_URL=http://127.0.0.1:PORT/v1 MEMPROXY_AGENT=some-agent node conversation.mjs
// On success prints one JSON line ({"ok": true, ...}) to stdout and exits 0; on any failed
// check prints the reason to stderr and exits 1.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { VERSION } from "openai/version";

const MODEL = "gpt-4o-mini";
const CONVERSATION = "node-1";
const MEMORY_TOOLS = [
  "core_memory_append",
  "core_memory_replace",
  "archival_memory_insert",
  "archival_memory_search",
  "conversation_search",
];
const GET_TIME = {
  type: "function",
  function: {
    name: "get_time",
    description: "The current time in a time zone",
    parameters: {
      type: "object",
      properties: { zone: { type: "string" } },
      required: ["zone"],
    },
  },
};

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set`);
  return value;
}

// Every delta must be free of memproxy's own tools, whatever field they could hide in.
function assertNoMemoryTool(chunk, step) {
  const raw = JSON.stringify(chunk);
  for (const name of MEMORY_TOOLS) {
    assert.ok(!raw.includes(name), `${step}: memory tool ${name} leaked in chunk ${raw}`);
  }
}

// Collect a chat.completion.chunk stream: text, tool calls (reassembled by delta index),
// finish reason, usage, chunk ids.
async function collect(stream, step) {
  const out = { text: "", calls: [], finishReason: null, usage: null, ids: new Set(), chunks: 0 };
  for await (const chunk of stream) {
    out.chunks += 1;
    assert.equal(chunk.object, "chat.completion.chunk", `${step}: chunk object`);
    out.ids.add(chunk.id);
    assertNoMemoryTool(chunk, step);
    if (chunk.usage) out.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      assert.equal(choice.index, 0, `${step}: choice index`);
      const delta = choice.delta ?? {};
      if (delta.content) out.text += delta.content;
      for (const part of delta.tool_calls ?? []) {
        assert.equal(typeof part.index, "number", `${step}: tool-call delta without index`);
        const call = (out.calls[part.index] ??= {
          id: undefined,
          type: undefined,
          function: { name: "", arguments: "" },
        });
        if (part.id) call.id = part.id;
        if (part.type) call.type = part.type;
        if (part.function?.name) call.function.name += part.function.name;
        if (part.function?.arguments) call.function.arguments += part.function.arguments;
      }
      if (choice.finish_reason) out.finishReason = choice.finish_reason;
    }
  }
  return out;
}

function memproxyHeaders(response) {
  return {
    agent: response.headers.get("x-memproxy-agent-id"),
    conversation: response.headers.get("x-memproxy-conversation-id"),
  };
}

async function main() {
  const baseURL = env("MEMPROXY_BASE_URL");
  const agent = env("MEMPROXY_AGENT");
  const client = new OpenAI({
    baseURL,
    apiKey: env("MEMPROXY_API_KEY"),
    maxRetries: 0,
    timeout: 30_000,
    defaultHeaders: { "X-Agent-Id": agent, "X-Conversation-Id": CONVERSATION },
  });
  const summary = { ok: true, sdk: VERSION, node: process.version };

  // 1. a memory edit, streamed with usage
  {
    const { data: stream, response } = await client.chat.completions
      .create({
        model: MODEL,
        messages: [{ role: "user", content: "My name is Nodie" }],
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    const headers = memproxyHeaders(response);
    assert.deepEqual(headers, { agent, conversation: CONVERSATION }, "step 1: response headers");
    const got = await collect(stream, "step 1");
    assert.equal(got.text, "Got it, I'll remember that.", "step 1: streamed text");
    assert.equal(got.calls.length, 0, "step 1: no tool call reaches the client");
    assert.equal(got.finishReason, "stop", "step 1: finish_reason");
    assert.ok(got.usage, "step 1: no usage chunk arrived");
    assert.ok(got.usage.total_tokens > 0, "step 1: usage.total_tokens");
    assert.equal(
      got.usage.total_tokens,
      got.usage.prompt_tokens + got.usage.completion_tokens,
      "step 1: usage adds up",
    );
    assert.equal(got.ids.size, 1, "step 1: one completion id across chunks");
    summary.remember = { text: got.text, usage: got.usage, chunks: got.chunks, headers };
  }

  // 2. a client tool, streamed: the call must be reassembled from the deltas
  const messages = [{ role: "user", content: 'Use tool get_time with {"zone": "UTC"}' }];
  let call;
  {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages,
      tools: [GET_TIME],
      stream: true,
      stream_options: { include_usage: true },
    });
    const got = await collect(stream, "step 2");
    assert.equal(got.finishReason, "tool_calls", "step 2: finish_reason");
    assert.equal(got.calls.length, 1, "step 2: exactly one tool call");
    [call] = got.calls;
    assert.ok(call, "step 2: tool call at delta index 0");
    assert.equal(call.function.name, "get_time", "step 2: tool name");
    assert.equal(call.type, "function", "step 2: tool type");
    assert.ok(call.id, "step 2: tool call id");
    assert.deepEqual(JSON.parse(call.function.arguments), { zone: "UTC" }, "step 2: arguments");
    assert.ok(got.usage, "step 2: no usage chunk arrived");
    summary.toolCall = { id: call.id, name: call.function.name, arguments: call.function.arguments };
    // a typical app appends the assembled assistant message to its own list
    messages.push({ role: "assistant", content: got.text || null, tool_calls: [call] });
  }

  // 3. the tool result, with the app's whole list (user, assistant+tool_calls, tool)
  {
    messages.push({ role: "tool", tool_call_id: call.id, content: "12:00" });
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages,
      tools: [GET_TIME],
    });
    const choice = completion.choices[0];
    assert.equal(choice.message.content, "Tool result: 12:00", "step 3: answer");
    assert.equal(choice.finish_reason, "stop", "step 3: finish_reason");
    assert.ok(!choice.message.tool_calls?.length, "step 3: no tool calls");
    assertNoMemoryTool(completion, "step 3");
    summary.toolAnswer = choice.message.content;
  }

  // 4. a fresh message list: the answer comes from memory
  {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "What is my name?" }],
    });
    assert.equal(completion.choices[0].message.content, "Your name is Nodie.", "step 4: answer");
    assertNoMemoryTool(completion, "step 4");
    summary.recall = completion.choices[0].message.content;
  }

  return summary;
}

try {
  const summary = await main();
  process.stdout.write(JSON.stringify(summary) + "\n");
  process.exit(0);
} catch (err) {
  const reason =
    err instanceof assert.AssertionError
      ? `${err.message} (actual: ${JSON.stringify(err.actual)}, expected: ${JSON.stringify(err.expected)})`
      : err?.stack ?? String(err);
  process.stderr.write(`conversation.mjs failed: ${reason}\n`);
  process.exit(1);
}
