// The context window as the next request would see it (GET /v1/agents/{a}/context): one
// stacked horizontal bar of tokens per part against the model's window, with a legend that
// carries the numbers (the bar itself is decorative for screen readers).

import { api } from "../api.js";
import { append, explainError, field, formatNumber, h, replace, uid } from "../dom.js";
import { contentText } from "./messages.js";

// Report keys (proxy/turn/report.py, from turn/ledger.py) in prompt order, with readable names.
const PARTS = [
  ["system", "Base instructions"],
  ["client_system", "Client system text"],
  ["blocks", "Memory blocks"],
  ["metadata", "Memory metadata"],
  ["summary", "Summary"],
  ["pressure", "Memory-pressure note"],
  ["recall", "Automatic recall"],
  ["messages", "Messages in context"],
  ["tools", "Tool schemas"],
  ["reserved_output", "Reserved for output"],
];
const NOT_PARTS = new Set(["total", "free"]);

/** [key, label, tokens] for every part of `tokens`, known ones first, then any new ones. */
export function contextParts(tokens) {
  const known = PARTS.map(([key, label]) => [key, label, Number(tokens[key] || 0)]);
  const extra = Object.keys(tokens)
    .filter((key) => !NOT_PARTS.has(key) && !PARTS.some(([k]) => k === key))
    .map((key) => [key, key.replace(/_/g, " "), Number(tokens[key] || 0)]);
  return [...known, ...extra];
}

const pct = (n, of) => (of > 0 ? (100 * n) / of : 0);
const pctText = (n, of) => `${pct(n, of).toFixed(1)}%`;

function bar(parts, free, scale, className = "context-bar") {
  const segments = parts
    .filter(([, , tokens]) => tokens > 0)
    .map(([key, label, tokens]) => {
      const seg = h("span", { class: `segment part-${key}`, title: `${label}: ${formatNumber(tokens)} tokens`, dataset: { part: key } });
      seg.style.width = `${pct(tokens, scale)}%`; // CSSOM, allowed by the page's CSP
      return seg;
    });
  if (free > 0) {
    const seg = h("span", { class: "segment part-free", title: `Free: ${formatNumber(free)} tokens`, dataset: { part: "free" } });
    seg.style.width = `${pct(free, scale)}%`;
    segments.push(seg);
  }
  return h("div", { class: className, "aria-hidden": "true" }, segments);
}

function legend(parts, free, window) {
  const rows = parts.map(([key, label, tokens]) => h(
    "tr",
    { dataset: { part: key } },
    h("th", { scope: "row" }, h("span", { class: `swatch part-${key}` }), label),
    h("td", { class: "num" }, formatNumber(tokens)),
    h("td", { class: "num" }, window ? pctText(tokens, window) : "—"),
  ));
  rows.push(h(
    "tr",
    { dataset: { part: "free" } },
    h("th", { scope: "row" }, h("span", { class: "swatch part-free" }), "Free"),
    h("td", { class: "num" }, formatNumber(free)),
    h("td", { class: "num" }, window ? pctText(free, window) : "—"),
  ));
  return h(
    "table",
    { class: "data legend" },
    h("caption", {}, "Tokens per part of the next prompt"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Part"),
      h("th", { scope: "col", class: "num" }, "Tokens"),
      h("th", { scope: "col", class: "num" }, "Share of window"))),
    h("tbody", {}, rows),
  );
}

function report(data) {
  const tokens = data.tokens || {};
  const window = Number(data.window || 0);
  const parts = contextParts(tokens);
  const total = Number(tokens.total ?? parts.reduce((sum, [, , n]) => sum + n, 0));
  const free = Number(tokens.free ?? Math.max(0, window - total));
  const scale = Math.max(window, total);
  const over = window > 0 && total > window;
  return h(
    "div",
    { class: "context-report" },
    h(
      "p",
      { class: `context-summary${over ? " over" : ""}` },
      `${formatNumber(total)} tokens of the ${formatNumber(window)}-token window used`,
      window ? ` (${pctText(total, window)})` : "",
      data.model ? ` · model ${data.model}` : " · model unknown (no request yet)",
    ),
    h("p", { class: "bar-label muted", "aria-hidden": "true" }, "Whole window"),
    bar(parts, free, scale),
    // With a large window the used parts are slivers: the same parts again, scaled to the total.
    window > 2 * total && total > 0
      ? [h("p", { class: "bar-label muted", "aria-hidden": "true" }, "Used tokens only, enlarged"),
        bar(parts, 0, total, "context-bar zoomed")]
      : null,
    legend(parts, free, window),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Window"), h("dd", { class: "window-size" }, `${formatNumber(window)} tokens`),
      h("dt", {}, "Conversation"), h("dd", {}, data.conversation_id ?? "—"),
      h("dt", {}, "Messages in context"), h("dd", {}, formatNumber(data.messages_in_context)),
      h("dt", {}, "Calibration factor"), h("dd", {}, String(data.calibration_factor ?? "—")),
    ),
    data.summary
      ? h("details", { class: "summary" }, h("summary", {}, "Summary in the prompt"), h("p", { class: "content" }, data.summary))
      : null,
  );
}

// The raw view: the JSON body the upstream receives on the next turn (`?format=raw`, made by
// the turn's own code: turn/preview.py), for an optional next user message.
function rawView(data) {
  const request = data.request || {};
  const messages = Array.isArray(request.messages) ? request.messages : [];
  const tools = Array.isArray(request.tools) ? request.tools : [];
  return h(
    "div",
    { class: "raw-request" },
    h(
      "p",
      { class: "muted" },
      `Conversation ${data.conversation_id}: ${messages.length} messages, ${tools.length} tools, `
        + `model ${request.model || "unknown"}`,
      data.paged_out ? ` · the next turn first pages out ${data.paged_out} messages` : "",
      ". The upstream key is sent as a header and is never part of this body.",
    ),
    h("h4", {}, "Messages, as text"),
    h("ol", { class: "raw-messages" }, messages.map((m, i) => h(
      "li",
      { dataset: { role: String(m.role || "") } },
      h("span", { class: "muted" }, `${i + 1}. `),
      h("span", { class: "raw-role" }, String(m.role || "?")),
      Array.isArray(m.tool_calls) && m.tool_calls.length
        ? h("span", { class: "muted" }, ` calls ${m.tool_calls.map((c) => (c.function || {}).name).join(", ")}`)
        : null,
      h("pre", {}, contentText(m.content)),
    ))),
    tools.length
      ? h("p", {}, "Tools offered: ", tools.map((t, i) => [i ? ", " : "", h("code", {}, (t.function || {}).name || "?")]),
        request.tool_choice ? ` · tool_choice ${JSON.stringify(request.tool_choice)}` : "")
      : h("p", { class: "muted" }, "No tools offered."),
    h(
      "details",
      { class: "raw-json-box", open: true },
      h("summary", {}, "The exact JSON body"),
      h("pre", { class: "raw-json", tabindex: "0", "aria-label": "The next upstream request as JSON" },
        JSON.stringify(request, null, 2)),
    ),
  );
}

/** Render the context tab: a conversation and model picker, then the report. */
export async function renderContext(panel, route, ctx) {
  const conversation = h("select", { id: uid("context-conversation") });
  const model = h("input", { id: uid("context-model"), type: "text", placeholder: "the last turn's model" });
  const message = h("input", { id: uid("context-message"), type: "text", placeholder: "none" });
  const out = h("div", { class: "context-out", "aria-live": "polite" });
  const rawOut = h("div", { class: "raw-out", "aria-live": "polite" });
  const rawBox = h(
    "details",
    { class: "raw-box" },
    h("summary", {}, "Raw request: the next prompt exactly as the upstream receives it"),
    rawOut,
  );
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Context window options" },
    field("Conversation", conversation),
    field("Model (optional)", model),
    field("Next message (optional)", message, "shown as the new user message in the raw request"),
    h("button", { type: "submit" }, "Show context"),
  );
  append(panel, [h("h3", {}, "Context window"), form, out, rawBox]);

  // Each load is numbered: an answer that arrives after a newer request was made (another
  // conversation picked meanwhile) is dropped instead of showing another chat's numbers.
  let loads = 0;
  const options = () => [route.tenant, route.agent, conversation.value || undefined,
    model.value.trim() || undefined];

  async function loadRaw(mine) {
    replace(rawOut, h("p", { class: "muted" }, "Building the next request…"));
    try {
      const data = await api.context(...options(), { format: "raw", message: message.value.trim() || undefined });
      if (ctx.isCurrent() && mine === loads) replace(rawOut, rawView(data));
    } catch (error) {
      if (ctx.isCurrent() && mine === loads) replace(rawOut, explainError(error));
    }
  }

  async function load() {
    loads += 1;
    const mine = loads;
    out.dataset.conversation = conversation.value;
    replace(out, h("p", { class: "muted" }, "Measuring the next prompt…"));
    if (rawBox.open) loadRaw(mine);
    else replace(rawOut);
    try {
      const data = await api.context(...options());
      if (ctx.isCurrent() && mine === loads) replace(out, report(data));
    } catch (error) {
      if (ctx.isCurrent() && mine === loads) replace(out, explainError(error));
    }
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  conversation.addEventListener("change", () => {
    // The address follows the picker (without a re-render), so a reload shows the same chat.
    const hash = ctx.routeHash({ ...route, tab: "context", conversation: conversation.value || null });
    window.history.replaceState(null, "", hash);
    load();
  });
  rawBox.addEventListener("toggle", () => {
    if (rawBox.open && !rawOut.childElementCount) loadRaw(loads);
  });

  try {
    const conversations = (await api.listConversations(route.tenant, route.agent)).data || [];
    if (!ctx.isCurrent()) return;
    if (conversations.length === 0) {
      replace(out, h("p", {}, "This agent has no conversation yet; the context window is measured "
        + "for a conversation, so it appears after the first chat request."));
      return;
    }
    append(conversation, conversations.map((c) => h("option", { value: c.id, selected: c.id === route.conversation }, c.id)));
  } catch {
    // The list only fills the picker; the report below still shows the default conversation.
  }
  if (conversation.options.length === 0) append(conversation, h("option", { value: "" }, "default"));
  await load();
}
