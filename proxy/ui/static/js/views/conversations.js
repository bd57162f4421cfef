// Conversations and transcripts: the agent's conversations, one transcript (transcript.js:
// opened at the newest message, its branches marked), and full-text search in this
// conversation or across all of the agent's conversations.

import { api } from "../api.js";
import {
  append, explainError, field, formatNumber, h, loadFor, replace, timeEl, uid,
} from "../dom.js";
import { messageItem } from "./messages.js";
import { transcript } from "./transcript.js";

const PAGE = 50;

function conversationList(conversations, route, ctx) {
  return h(
    "nav",
    { class: "conversation-list", "aria-label": "Conversations" },
    h("ul", {}, conversations.map((c) => h(
      "li",
      {},
      h(
        "a",
        {
          href: ctx.routeHash({ ...route, tab: "conversations", conversation: c.id }),
          "aria-current": c.id === route.conversation ? "page" : null,
          dataset: { conversation: c.id },
        },
        h("code", {}, c.id),
      ),
      h("span", { class: "muted" }, ` ${formatNumber(c.messages)} messages, last `, timeEl(c.last_message_at)),
    ))),
  );
}

function searchForm(route, ctx, results) {
  const queryId = uid("search-query");
  const scopeId = uid("search-scope");
  const input = h("input", { id: queryId, type: "search", required: true });
  const scope = h(
    "select",
    { id: scopeId },
    h("option", { value: "conversation" }, "This conversation"),
    h("option", { value: "agent" }, "All conversations"),
  );
  const form = h(
    "form",
    { class: "inline-form search-form", role: "search", "aria-label": "Search the transcripts" },
    field("Search transcripts", input),
    field("In", scope),
    h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", onclick: () => replace(results) }, "Clear results"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query) return;
    replace(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const page = scope.value === "agent"
        ? await api.searchMessages(route.tenant, route.agent, query)
        : await api.listMessages(route.tenant, route.agent, route.conversation, { query, limit: PAGE });
      const hits = page.data || [];
      const items = hits.map((m) => messageItem(m, {
        conversationLink: m.conversation_id
          ? h("a", { href: ctx.routeHash({ ...route, tab: "conversations", conversation: m.conversation_id }) },
            `in ${m.conversation_id}`)
          : null,
      }));
      replace(
        results,
        h("h4", {}, `${hits.length} ${hits.length === 1 ? "hit" : "hits"} for “${query}”, best first`),
        hits.length ? h("ol", { class: "messages search-results" }, items) : null,
      );
    } catch (error) {
      replace(results, explainError(error));
    }
  });
  return form;
}

function removedText(removed) {
  return ["messages", "passages", "blocks", "responses"]
    .map((k) => `${formatNumber(removed[k] || 0)} ${k}`).join(", ");
}

// Forgetting (docs/forgetting.md): delete this conversation, or forget every message, passage
// and memory-block line that holds all the words of a query. Both ask first; neither undoes.
function forgetTools(route, ctx, reload) {
  const out = h("div", { class: "forget-result", "aria-live": "polite" });
  const input = h("input", { id: uid("forget-query"), type: "search", required: true });
  const form = h(
    "form",
    { class: "inline-form forget-form", "aria-label": "Forget" },
    field("Forget everything holding all of these words", input),
    h("button", { type: "submit" }, "Forget"),
    h("button", { type: "button", class: "danger", onclick: removeConversation },
      "Delete this conversation"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (!query || !window.confirm(`Forget every message, passage and memory line of ${route.agent} `
      + `holding all of “${query}”? This cannot be undone: export the agent first if you may need it.`)) return;
    try {
      const result = await api.forget(route.tenant, route.agent, { query });
      replace(out, h("p", {}, `Forgotten: ${removedText(result.removed)}.`));
      input.value = "";
      reload();
    } catch (error) {
      replace(out, explainError(error));
    }
  });
  async function removeConversation() {
    if (!window.confirm(`Delete conversation ${route.conversation} and everything of it? `
      + "This cannot be undone: export the agent first if you may need it.")) return;
    try {
      await api.deleteConversation(route.tenant, route.agent, route.conversation);
      const hash = ctx.routeHash({ ...route, tab: "conversations", conversation: null });
      if (window.location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
      else window.location.hash = hash;  // the list again, without it
    } catch (error) {
      replace(out, explainError(error));
    }
  }
  return h("details", { class: "forget" }, h("summary", {}, "Forget…"), form, out);
}

/** Render the conversations tab: the list, then the selected conversation's transcript. */
export async function renderConversations(panel, route, ctx) {
  const body = h("div", { class: "conversations" }, h("p", { class: "muted" }, "Loading conversations…"));
  append(panel, body);
  const listed = await loadFor(body, ctx, () => api.listConversations(route.tenant, route.agent));
  if (listed === null) return;
  const conversations = listed.data || [];
  if (conversations.length === 0) {
    replace(body, h("p", {}, "This agent has no conversations yet."));
    return;
  }
  const current = conversations.find((c) => c.id === route.conversation) || conversations[0];
  const selected = { ...route, conversation: current.id };
  const results = h("div", { class: "search-results-box", "aria-live": "polite" });
  const view = transcript(selected, ctx);
  replace(
    body,
    conversationList(conversations, selected, ctx),
    h(
      "section",
      { class: "conversation", "aria-labelledby": "conversation-title" },
      h("h3", { id: "conversation-title" }, "Conversation ", h("code", {}, current.id)),
      current.summary
        ? h("details", { class: "summary" }, h("summary", {}, "Summary of evicted messages"),
          h("p", { class: "content" }, current.summary))
        : null,
      searchForm(selected, ctx, results),
      results,
      forgetTools(selected, ctx, view.reload),
      view.element,
    ),
  );
  await view.load();
}
