// The Vercel AI SDK's DEFAULT OpenAI model (`openai(model)` from @ai-sdk/openai speaks the
// Responses API) against memproxy, as a small Node app would: generateText and streamText with
// one client-side tool, then a follow-up turn that sends the first turn's messages back (the
// SDK then refers to its stored output items by `item_reference`).
//
// Run by tests/e2e/test_responses_node.py:
//   MEMPROXY_BASE_URL=http://127.0.0.1:PORT/v1 MEMPROXY_API_KEY=... node responses.mjs
// Prints one JSON line: each part's text and tool calls (or its error), and every exchange with
// `.../responses` (method, path, status, content type, the answer's raw text) so that the test
// validates each Response object and streamed event against the OpenAI description.

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";
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

const exchanges = [];
const pending = [];

// The SDK's fetch: every answer from .../responses is copied (a tee) for validation.
const recordingFetch = async (url, init) => {
  const response = await fetch(url, init);
  const path = new URL(String(url)).pathname;
  if (/\/(responses|conversations)(\/|$)/.test(path)) {
    const exchange = {
      method: (init?.method ?? "GET").toUpperCase(),
      path,
      status: response.status,
      contentType: response.headers.get("content-type") ?? "",
      request: init?.body ? JSON.parse(init.body) : null,
      body: "",
    };
    exchanges.push(exchange);
    pending.push(response.clone().text().then((text) => { exchange.body = text; }));
  }
  return response;
};

function lookupTool(result, calls) {
  return tool({
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
}

async function attempt(part) {
  try {
    return await part();
  } catch (err) {
    return { error: `${err?.name ?? "Error"}: ${err?.message ?? String(err)}` };
  }
}

async function main() {
  const openai = createOpenAI({
    baseURL: env("MEMPROXY_BASE_URL"),
    apiKey: env("MEMPROXY_API_KEY"),
    fetch: recordingFetch,
  });
  const model = openai(MODEL); // the default: the Responses API

  const generateCalls = [];
  let firstTurn = null;
  const generate = await attempt(async () => {
    const answer = await generateText({
      model,
      system: "You look up orders for the user.",
      prompt: PROMPT,
      tools: { lookup_order: lookupTool("Order A17: shipped", generateCalls) },
      stopWhen: stepCountIs(5),
      maxRetries: 0,
    });
    firstTurn = answer.response.messages;
    return { text: answer.text, calls: generateCalls, steps: answer.steps.length };
  });

  const streamCalls = [];
  const stream = await attempt(async () => {
    const result = streamText({
      model,
      prompt: PROMPT,
      tools: { lookup_order: lookupTool("Order A17: delivered", streamCalls) },
      stopWhen: stepCountIs(5),
      maxRetries: 0,
      onError: () => {},
    });
    let streamed = "";
    for await (const delta of result.textStream) streamed += delta;
    return { text: await result.text, streamed, calls: streamCalls,
             steps: (await result.steps).length };
  });

  const followUp = await attempt(async () => {
    if (firstTurn === null) return { error: "no first turn" };
    const answer = await generateText({
      model,
      messages: [{ role: "user", content: PROMPT }, ...firstTurn,
                 { role: "user", content: "Thanks! Anything else?" }],
      maxRetries: 0,
    });
    return { text: answer.text };
  });

  await Promise.all(pending);
  return {
    ok: true,
    sdk: { ai: version("ai"), "@ai-sdk/openai": version("@ai-sdk/openai") },
    generate,
    stream,
    followUp,
    exchanges,
  };
}

try {
  process.stdout.write(JSON.stringify(await main()) + "\n");
  process.exit(0);
} catch (err) {
  process.stderr.write(`responses.mjs failed: ${err?.stack ?? String(err)}\n`);
  process.exit(1);
}
