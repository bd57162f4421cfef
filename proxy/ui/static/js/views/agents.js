// The agents list: one row per agent with its stats; the tenant column appears when the
// caller (an admin, or anyone on an open server) sees agents of more than one tenant.

import { api } from "../api.js";
import { append, explainError, formatNumber, h, replace, timeEl } from "../dom.js";
import { newAgentForm } from "./create.js";

function agentRow(agent, showTenant, ctx) {
  const stats = agent.stats || {};
  const link = h("a", { href: ctx.routeHash({ tenant: agent.tenant, agent: agent.id }) }, agent.id);
  return h(
    "tr",
    { dataset: { agent: agent.id, tenant: agent.tenant || "" } },
    h("th", { scope: "row" }, link),
    showTenant ? h("td", {}, agent.tenant || "") : null,
    h("td", { class: "num" }, formatNumber(stats.conversations)),
    h("td", { class: "num" }, formatNumber(stats.messages)),
    h("td", { class: "num" }, formatNumber(stats.passages)),
    h("td", {}, timeEl(agent.created_at)),
  );
}

function table(agents, ctx) {
  const showTenant = new Set(agents.map((a) => a.tenant)).size > 1;
  const head = h(
    "tr",
    {},
    h("th", { scope: "col" }, "Agent"),
    showTenant ? h("th", { scope: "col" }, "Tenant") : null,
    h("th", { scope: "col", class: "num" }, "Conversations"),
    h("th", { scope: "col", class: "num" }, "Messages"),
    h("th", { scope: "col", class: "num" }, "Passages"),
    h("th", { scope: "col" }, "Created"),
  );
  return h(
    "table",
    { class: "data agents" },
    h("caption", { class: "visually-hidden" }, "Agents"),
    h("thead", {}, head),
    h("tbody", {}, agents.map((a) => agentRow(a, showTenant, ctx))),
  );
}

/** Render the list into `root`, with "Load more" paging (`?after=`). */
export async function renderAgentList(root, ctx) {
  const heading = h("h2", { tabindex: "-1" }, "Agents");
  const body = h("div", { class: "agents-body" }, h("p", { class: "muted" }, "Loading agents…"));
  append(root, [heading, newAgentForm(ctx), body]);
  document.title = "Agents — memproxy inspector";

  const agents = [];
  async function load(after) {
    let page;
    try {
      page = await api.listAgents(after);
    } catch (error) {
      if (ctx.isCurrent()) replace(body, explainError(error));
      return;
    }
    if (!ctx.isCurrent()) return;
    agents.push(...(page.data || []));
    if (agents.length === 0) {
      replace(body, h("p", {}, "No agents yet. Create one with New agent above, or on its first chat request "
        + "(for example with base URL /agents/NAME/v1)."));
      return;
    }
    const more = page.has_more
      ? h("button", {
        type: "button",
        onclick: () => load(page.next_after || agents[agents.length - 1].id),
      }, "Load more agents")
      : null;
    replace(body, table(agents, ctx), h("p", { class: "muted" }, `${agents.length} agents shown.`), more);
  }
  await load(undefined);
}
