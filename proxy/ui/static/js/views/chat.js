// The Chat tab: talk to the agent from the page. One conversation at a time (pick one, or
// create one); a message goes through Letta's stream with `stream_tokens` (api.streamMessages):
// the model's memory steps (memory-tool calls, their results, text beside them) appear as each
// step finishes, marked as memory steps, and the answer streams in piece by piece (chunks of
// one id, joined here; text that turns out to stand beside a memory call comes again whole as
// that id's reasoning_message, which replaces it). The agent's memory blocks sit beside the
// chat: a block a memory tool is changing is flagged at once, and when the turn is over the
// blocks are read again and the ones that changed are marked.
//
// Why the messages endpoint and not chat completions: the chat endpoint hides memory steps
// from its clients by design (docs/memory.md); Letta's messages API returns them.

import { api, streamMessages } from "../api.js";
import {
  append, badge, charCount, errorBox, explainError, field, formatNumber, h, loadFor, replace, uid,
} from "../dom.js";
import { messageItem } from "./messages.js";

const HISTORY_PAGES = 3; // x 100 messages: older ones are on the Conversations tab
const SHOWN = 60;
const BLOCK_TOOLS = new Set(["core_memory_append", "core_memory_replace"]);

function newOtid() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  return `ui-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function prettyArguments(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return String(raw ?? "");
  }
}

/** One event of the stream as a transcript item (`data-message-type` says which). */
function liveItem(event) {
  const type = event.message_type;
  const memory = type !== "assistant_message";
  const classes = ["message", "live", memory ? "memory-step role-tool" : "role-assistant"];
  const head = h(
    "div",
    { class: "message-head" },
    h("span", { class: "role" }, memory ? "memory" : "assistant"),
    memory ? badge("memory step", "memory") : null,
    type === "tool_return_message" && event.status === "error" ? badge("error", "failed") : null,
  );
  let body = null;
  if (type === "tool_call_message") {
    const call = event.tool_call || {};
    body = h("div", { class: "tool-call" }, h("span", { class: "muted" }, "calls "),
      h("code", {}, call.name || "(unnamed)"), h("pre", { class: "arguments" }, prettyArguments(call.arguments)));
  } else if (type === "tool_return_message") {
    body = [h("p", { class: "muted tool-result" }, "result of ", h("code", {}, event.name || event.tool_call_id || "?")),
      h("div", { class: "content" }, event.tool_return || "")];
  } else if (type === "reasoning_message") {
    body = h("div", { class: "content" }, event.reasoning || "");
  } else {
    body = h("div", { class: "content" }, event.content || "");
  }
  return h("li", { class: classes.join(" "), dataset: { messageType: type, id: event.id || "" } }, head, body);
}

/** The blocks beside the chat: label, size and value; flags for "changing" and "changed". */
function blockPanel(route) {
  const list = h("ul", { class: "chat-block-list" });
  const box = h("aside", { class: "chat-blocks", "aria-label": "Memory blocks" },
    h("h3", {}, "Memory blocks"), list);
  let values = new Map();

  function item(block, changed) {
    return h(
      "li",
      { class: `chat-block${changed ? " changed" : ""}`, dataset: { label: block.label } },
      h("div", { class: "chat-block-head" }, h("code", {}, block.label),
        block.read_only ? badge("read-only", "readonly") : null,
        changed ? badge("changed by this turn", "changed") : null,
        h("span", { class: "muted" }, ` ${formatNumber(charCount(block.value || ""))} / ${formatNumber(block.limit)}`)),
      block.value ? h("pre", { class: "value" }, block.value) : h("p", { class: "muted value" }, "(empty)"),
    );
  }

  /** Read the blocks again; mark those whose value differs from before (when `mark`). */
  async function load(mark) {
    let blocks;
    try {
      blocks = (await api.listBlocks(route.tenant, route.agent)).data || [];
    } catch (error) {
      replace(list, h("li", {}, explainError(error)));
      return [];
    }
    const changed = blocks.filter((b) => mark && values.get(b.label) !== b.value).map((b) => b.label);
    values = new Map(blocks.map((b) => [b.label, b.value]));
    replace(list, blocks.length ? blocks.map((b) => item(b, changed.includes(b.label)))
      : h("li", { class: "muted" }, "No memory blocks."));
    return changed;
  }

  /** A memory tool is changing `label`: flag it until the turn is over. */
  function changing(label) {
    const el = list.querySelector(`li[data-label="${CSS.escape(label)}"]`);
    if (el && !el.querySelector(".badge.changing")) {
      el.classList.add("changing");
      el.querySelector(".chat-block-head").append(badge("being changed…", "changing"));
    }
  }
  return { element: box, load, changing };
}

function conversationBar(route, ctx, conversations, current) {
  const go = (conversation) => {
    const hash = ctx.routeHash({ ...route, tab: "chat", conversation });
    if (window.location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else window.location.hash = hash;
  };
  const pickId = uid("chat-conversation");
  const ids = conversations.map((c) => c.id);
  if (!ids.includes(current)) ids.unshift(current);
  const optionText = (id, known) => (known ? `${id} (${formatNumber(known.messages)} messages)` : `${id} (new)`);
  const pick = h("select", { id: pickId, onchange: () => go(pick.value) },
    ids.map((id) => h("option", { value: id, selected: id === current },
      optionText(id, conversations.find((c) => c.id === id)))));
  const out = h("div", { class: "chat-bar-message", "aria-live": "polite" });
  const newId = h("input", { id: uid("new-conversation"), required: true, maxlength: "200", spellcheck: "false" });
  const create = h("form", { class: "inline-form new-conversation", "aria-label": "New conversation" },
    field("New conversation id", newId), h("button", { type: "submit" }, "Create conversation"));
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = newId.value.trim();
    if (!id) return;
    try {
      await api.createConversation(route.tenant, route.agent, id);
      ctx.setStatus(`Conversation ${id} created.`);
      go(id);
    } catch (error) {
      replace(out, errorBox(error));
    }
  });
  const remove = h("button", {
    type: "button",
    class: "danger",
    disabled: !conversations.some((c) => c.id === current),
    onclick: async () => {
      if (!window.confirm(`Delete conversation ${current} and everything of it? `
        + "This cannot be undone: export the agent first if you may need it.")) return;
      try {
        await api.deleteConversation(route.tenant, route.agent, current);
        ctx.setStatus(`Conversation ${current} deleted.`);
        go(null);
      } catch (error) {
        replace(out, errorBox(error));
      }
    },
  }, "Delete this conversation");
  /** After a turn: the current conversation's count again (and it can be deleted now). */
  async function recount() {
    try {
      const known = ((await api.listConversations(route.tenant, route.agent)).data || [])
        .find((c) => c.id === current);
      if (!known) return;
      pick.selectedOptions[0].textContent = optionText(current, known);
      remove.disabled = false;
    } catch {
      // the count is a nicety; the chat itself already said how the turn went
    }
  }
  return {
    element: h("div", { class: "chat-bar" },
      h("div", { class: "inline-form" }, field("Conversation", pick), remove), create, out),
    recount,
  };
}

async function loadHistory(route, log) {
  const rows = [];
  let after;
  for (let page = 0; page < HISTORY_PAGES; page += 1) {
    let data;
    try {
      data = await api.listMessages(route.tenant, route.agent, route.conversation, { after, limit: 100 });
    } catch (error) {
      if (error.status === 404) break; // not created yet: its first message creates it
      append(log, h("li", {}, explainError(error)));
      return;
    }
    rows.push(...(data.data || []));
    if (!data.has_more) break;
    after = data.next_after ?? rows[rows.length - 1].seq;
  }
  const shown = rows.slice(-SHOWN);
  if (rows.length > shown.length) {
    append(log, h("li", { class: "muted older" }, `${formatNumber(rows.length - shown.length)} earlier `
      + "messages are on the Conversations tab."));
  }
  append(log, shown.map((m) => messageItem(m)));
}

/** Render the Chat tab for `route` (its `conversation`, else the newest, else `default`). */
export async function renderChat(panel, route, ctx) {
  const agent = route.agentObject || {};
  const body = h("div", { class: "chat" }, h("p", { class: "muted" }, "Loading conversations…"));
  append(panel, body);
  const listed = await loadFor(body, ctx, () => api.listConversations(route.tenant, route.agent));
  if (listed === null) return;
  const conversations = listed.data || [];
  const current = route.conversation || (conversations[0] && conversations[0].id) || "default";
  const here = { ...route, conversation: current };
  const blocks = blockPanel(here);
  const bar = conversationBar(here, ctx, conversations, current);
  const log = h("ol", { class: "messages chat-log", "aria-label": `Chat in ${current}`, "aria-live": "polite" });
  const add = (item) => { // the newest at the bottom, in view
    append(log, item);
    log.scrollTop = log.scrollHeight;
  };
  const configured = agent.settings && typeof agent.settings.model === "string" ? agent.settings.model : "";
  const model = h("input", { id: uid("chat-model"), value: configured, spellcheck: "false",
    placeholder: "the agent's model, or its last turn's" });
  const input = h("textarea", { id: uid("chat-input"), rows: "3", required: true });
  const send = h("button", { type: "submit" }, "Send");
  const turnState = h("p", { class: "turn-state muted", "aria-live": "polite" });
  const form = h("form", { class: "chat-form", "aria-label": "Send a message" },
    field("Message", input, "Enter sends; Shift+Enter starts a new line."),
    field("Model", model, "Sent as `model` when set; empty: the agent's settings.model, else its last turn's."),
    h("div", { class: "actions" }, send), turnState);

  async function turn(text, otid) {
    const request = {
      messages: [{ role: "user", content: text, otid }], conversation_id: current, stream_tokens: true,
    };
    const shown = new Map(); // message id -> its item: chunks join it, a whole message replaces it
    if (model.value.trim()) request.model = model.value.trim();
    send.disabled = true;
    turnState.textContent = "Waiting for the model…";
    let failed = null;
    let usage = null;
    let stop = null;
    try {
      await streamMessages(here.tenant, here.agent, request, (event) => {
        if (event.error) {
          failed = event.error;
        } else if (event.message_type === "stop_reason") {
          stop = event.stop_reason;
        } else if (event.message_type === "usage_statistics") {
          usage = event;
        } else {
          const item = shown.get(event.id);
          if (item && event.message_type === "assistant_message") {
            append(item.querySelector(".content"), event.content || "");
            item.dataset.chunks = String(Number(item.dataset.chunks || "1") + 1);
            log.scrollTop = log.scrollHeight;
          } else if (item) {
            const whole = liveItem(event);
            item.replaceWith(whole);
            shown.set(event.id, whole);
          } else {
            const fresh = liveItem(event);
            if (event.id) shown.set(event.id, fresh);
            add(fresh);
          }
          if (event.message_type === "tool_call_message" && BLOCK_TOOLS.has((event.tool_call || {}).name)) {
            try {
              const label = JSON.parse(event.tool_call.arguments || "{}").label;
              if (typeof label === "string") blocks.changing(label);
            } catch {
              // malformed arguments: the tool's own result says so
            }
          }
          turnState.textContent = event.message_type === "assistant_message"
            ? "The answer is coming in…" : "Memory step done; the model continues…";
        }
      });
    } catch (error) {
      failed = error;
    }
    if (!failed && !stop) failed = { message: "The stream ended before the turn did (the connection was lost?)." };
    send.disabled = false;
    const [changed] = await Promise.all([blocks.load(true), bar.recount()]);
    if (failed) {
      const retry = h("button", { type: "button", onclick: () => { box.remove(); turn(text, otid); } },
        "Retry (continues the same turn)");
      const box = h("li", { class: "message turn-error" }, errorBox(failed), retry);
      add(box);
      turnState.textContent = "The turn failed.";
      ctx.setStatus(`The turn failed: ${failed.message || "error"}`, "error");
      return;
    }
    const parts = [`Turn done (${stop || "end_turn"})`];
    if (usage) {
      const steps = usage.step_count === 1 ? "1 step" : `${usage.step_count} steps`;
      parts.push(`${steps}, ${formatNumber(usage.total_tokens)} tokens`);
    }
    if (changed.length) parts.push(`blocks changed: ${changed.join(", ")}`);
    turnState.textContent = `${parts.join("; ")}.`;
    ctx.setStatus(turnState.textContent);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || send.disabled) return;
    add(h("li", { class: "message role-user live", dataset: { messageType: "user_message" } },
      h("div", { class: "message-head" }, h("span", { class: "role" }, "user"), h("span", {}, "sent now")),
      h("div", { class: "content" }, text)));
    input.value = "";
    turn(text, newOtid());
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  replace(
    body,
    bar.element,
    h("div", { class: "chat-columns" },
      h("section", { class: "chat-main", "aria-label": `Conversation ${current}` },
        h("p", { class: "legend muted" }, "Memory steps (the model's memory-tool calls and results) "
          + "appear as they happen; the chat endpoint never shows them to its clients."),
        log, form),
      blocks.element),
  );
  await Promise.all([loadHistory(here, log), blocks.load(false)]);
  log.scrollTop = log.scrollHeight;
}
