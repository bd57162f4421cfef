// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, Chat Completions) running one client-side tool
// loop against memproxy, as a small Node app would: generateText with one tool and a step limit.
//
// Run by tests/e2e/test_tool_loops_node.py (twice per test, as two runs of the same program):
//   MEMPROXY_BASE_URL=http://127.0.0.1:PORT/v1 MEMPROXY_AGENT=some-agent MEMPROXY_API_KEY=...
//   TOOL_RESULT="what the tool returns this run" node tool_loop.mjs
// No conversation id is sent. Prints one JSON line to stdout: the final text, the tool's
// calls, and every chat request the SDK sent (its body and memproxy's response headers), so
// the test can compare them with what the upstream was shown; exits 1 on an error.

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, tool } from "ai";
import { readFileSync } from "node:fs";

const MODEL = "gpt-4o-mini";
const PROMPT = 'Use tool lookup_order with {"order_id": "A17"}';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set`);
  return value;
}

function version(pkg) {
  const url = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

async function main() {
  const requests = [];
  // The SDK's own fetch, recording each chat request and the headers memproxy answered with.
  const recordingFetch = async (url, init) => {
    const response = await fetch(url, init);
    if (String(url).endsWith("/chat/completions")) {
      requests.push({
        body: JSON.parse(init.body),
        status: response.status,
        conversation: response.headers.get("x-memproxy-conversation-id"),
        replayed: response.headers.get("x-memproxy-replayed"),
      });
    }
    return response;
  };
  const openai = createOpenAI({
    baseURL: env("MEMPROXY_BASE_URL"),
    apiKey: env("MEMPROXY_API_KEY"),
    headers: { "X-Agent-Id": env("MEMPROXY_AGENT") },
    fetch: recordingFetch,
  });
  const result = env("TOOL_RESULT");
  const calls = [];
  const lookupOrder = tool({
    description: "The status of an order.",
    inputSchema: jsonSchema({
      type: "object",
      properties: { order_id: { type: "string" } },
      required: ["order_id"],
      additionalProperties: false,
    }),
    execute: async ({ order_id }) => {
      calls.push(order_id);
      return result;
    },
  });
  const answer = await generateText({
    model: openai.chat(MODEL),
    system: "You look up orders for the user.",
    prompt: PROMPT,
    tools: { lookup_order: lookupOrder },
    stopWhen: stepCountIs(5),
    maxRetries: 0,
  });
  return {
    ok: true,
    sdk: { ai: version("ai"), "@ai-sdk/openai": version("@ai-sdk/openai") },
    text: answer.text,
    calls,
    requests,
  };
}

try {
  process.stdout.write(JSON.stringify(await main()) + "\n");
  process.exit(0);
} catch (err) {
  process.stderr.write(`tool_loop.mjs failed: ${err?.stack ?? String(err)}\n`);
  process.exit(1);
}
