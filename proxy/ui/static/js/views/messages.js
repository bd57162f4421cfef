// One stored transcript row as a list item. Internal memory steps (`visible: false`: a
// memory-tool call or its result, never shown to the client) get the "memory-step" style and
// badge; superseded messages (dropped by a regenerate or edit) are greyed and badged.

import { badge, h, timeEl } from "../dom.js";

/** The text of an OpenAI message content: a string, a list of parts, or null. */
export function contentText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (typeof part === "string") return part;
        if (part && typeof part.text === "string") return part.text;
        if (part && part.type) return `[${part.type}]`;
        return "";
      })
      .join("");
  }
  return JSON.stringify(content);
}

function prettyArguments(raw) {
  if (typeof raw !== "string") return JSON.stringify(raw, null, 2);
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw; // malformed arguments are shown exactly as the model sent them
  }
}

function toolCall(call) {
  const fn = (call && call.function) || {};
  return h(
    "div",
    { class: "tool-call" },
    h("span", { class: "muted" }, "calls "),
    h("code", {}, fn.name || "(unnamed)"),
    call && call.id ? h("span", { class: "muted" }, ` (id ${call.id})`) : null,
    h("pre", { class: "arguments" }, prettyArguments(fn.arguments ?? "")),
  );
}

/**
 * A `<li>` for one message object of the API.
 * @param {object} message
 * @param {{conversationLink?: HTMLElement}} [extra] shown in the head (agent-wide search hits)
 */
export function messageItem(message, extra = {}) {
  const internal = message.visible === false;
  const classes = ["message", `role-${message.role}`];
  if (internal) classes.push("memory-step");
  if (message.superseded) classes.push("superseded");
  if (message.in_context === false) classes.push("out-of-context");
  const text = contentText(message.content);
  const head = h(
    "div",
    { class: "message-head" },
    h("span", { class: "seq" }, `#${message.seq}`),
    h("span", { class: "role" }, message.role),
    internal ? badge("memory step", "memory") : null,
    message.superseded ? badge("superseded", "superseded") : null,
    message.in_context === false && !message.superseded ? badge("paged out", "paged") : null,
    typeof message.score === "number" ? badge(`score ${message.score.toFixed(3)}`, "score") : null,
    extra.conversationLink || null,
    timeEl(message.created_at),
  );
  return h(
    "li",
    { class: classes.join(" "), dataset: { seq: String(message.seq), visible: String(!internal) } },
    head,
    message.tool_call_id ? h("p", { class: "muted tool-result" }, `result of ${message.tool_call_id}`) : null,
    text ? h("div", { class: "content" }, text) : null,
    (message.tool_calls || []).map(toolCall),
  );
}
