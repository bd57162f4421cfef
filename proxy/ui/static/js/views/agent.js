// One agent: a header with its tenant and stats, a tab bar (plain links, so the browser's
// history and the keyboard work as usual), and the selected tab's view.

import { api } from "../api.js";
import { append, explainError, formatNumber, h, timeEl } from "../dom.js";
import { renderBlocks } from "./blocks.js";
import { renderChat } from "./chat.js";
import { renderContext } from "./context.js";
import { renderConversations } from "./conversations.js";
import { deleteAgentButton } from "./create.js";
import { renderPassages } from "./passages.js";

export const TABS = [
  { id: "blocks", label: "Memory blocks", render: renderBlocks },
  { id: "conversations", label: "Conversations", render: renderConversations },
  { id: "passages", label: "Archival passages", render: renderPassages },
  { id: "context", label: "Context window", render: renderContext },
  { id: "chat", label: "Chat", render: renderChat },
];

function header(agent, route) {
  const stats = agent.stats || {};
  return h(
    "div",
    { class: "agent-header" },
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "All agents")),
    h("h2", { tabindex: "-1", id: "agent-title" }, "Agent ", h("code", {}, agent.id || route.agent)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Tenant"), h("dd", {}, agent.tenant || route.tenant),
      h("dt", {}, "Created"), h("dd", {}, timeEl(agent.created_at)),
      h("dt", {}, "Conversations"), h("dd", {}, formatNumber(stats.conversations)),
      h("dt", {}, "Messages"), h("dd", {}, formatNumber(stats.messages)),
      h("dt", {}, "Passages"), h("dd", {}, formatNumber(stats.passages)),
    ),
  );
}

function tabBar(route, ctx) {
  return h(
    "nav",
    { class: "tabs", "aria-label": "Agent sections" },
    h("ul", {}, TABS.map((tab) => h(
      "li",
      {},
      h("a", {
        href: ctx.routeHash({ tenant: route.tenant, agent: route.agent, tab: tab.id }),
        "aria-current": tab.id === route.tab ? "page" : null,
        dataset: { tab: tab.id },
      }, tab.label),
    ))),
  );
}

/** Render the agent page for `route` ({tenant, agent, tab, conversation}). */
export async function renderAgent(root, route, ctx) {
  document.title = `${route.agent} — memproxy inspector`;
  let agent;
  try {
    agent = await api.getAgent(route.tenant, route.agent);
  } catch (error) {
    if (!ctx.isCurrent()) return;
    append(root, [
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "All agents")),
      h("h2", { tabindex: "-1" }, "Agent ", h("code", {}, route.agent)),
      explainError(error),
    ]);
    return;
  }
  if (!ctx.isCurrent()) return;
  const panel = h("section", { class: "tab-panel", "aria-labelledby": "agent-title" });
  append(root, [header(agent, route), deleteAgentButton(route, ctx), tabBar(route, ctx), panel]);
  const tab = TABS.find((t) => t.id === route.tab) || TABS[0];
  await tab.render(panel, { ...route, agentObject: agent }, ctx);
}
