// Creating and deleting agents and blocks from the page, through the agents REST API
// (docs/api.md): `POST /v1/agents` (id, optional model as `settings.model`, initial blocks),
// `DELETE /v1/agents/{a}`, `PUT …/blocks/{label}` for a new block and `DELETE …/blocks/{label}`.
// Every delete asks first. Kept apart from the list and block views, which only call in here.

import { api } from "../api.js";
import { append, errorBox, field, h, replace, uid } from "../dom.js";

const DEFAULT_LIMIT = 5000;

/** Render the current route again (after a change the view must show). */
function rerender() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

function blockFields(prefix, { removable = false, onRemove } = {}) {
  const label = h("input", { id: uid(`${prefix}-label`), required: true, maxlength: "200", spellcheck: "false" });
  const value = h("textarea", { id: uid(`${prefix}-value`), rows: "2" });
  const limit = h("input", { id: uid(`${prefix}-limit`), type: "number", min: "1", value: String(DEFAULT_LIMIT) });
  const readOnly = h("input", { type: "checkbox" });
  const element = h(
    "fieldset",
    { class: "block-fields" },
    h("legend", {}, "Block"),
    h("div", { class: "inline-form" }, field("Label", label), field("Limit (characters)", limit),
      h("label", { class: "check" }, readOnly, " Read-only for the model")),
    field("Value", value),
    removable ? h("button", { type: "button", class: "small", onclick: onRemove }, "Remove this block") : null,
  );
  return {
    element,
    read: () => ({
      label: label.value.trim(), value: value.value, limit: Number(limit.value) || DEFAULT_LIMIT,
      read_only: readOnly.checked,
    }),
  };
}

/** "New agent": id, optional model, initial blocks (none: the server's default blocks). */
export function newAgentForm(ctx) {
  const id = h("input", { id: uid("new-agent-id"), required: true, maxlength: "200", spellcheck: "false" });
  const model = h("input", { id: uid("new-agent-model"), spellcheck: "false", placeholder: "e.g. gpt-4o-mini" });
  const rows = [];
  const blocksBox = h("div", { class: "new-agent-blocks" });
  const out = h("div", { "aria-live": "polite" });
  const hint = h("p", { class: "muted" }, "No blocks added: the agent gets the server's default blocks.");
  function addRow() {
    const row = blockFields("new-agent-block", {
      removable: true,
      onRemove: () => {
        rows.splice(rows.indexOf(row), 1);
        row.element.remove();
        hint.hidden = rows.length > 0;
      },
    });
    rows.push(row);
    append(blocksBox, row.element);
    hint.hidden = true;
  }
  const form = h(
    "form",
    { class: "new-agent-form", "aria-label": "New agent" },
    h("div", { class: "inline-form" }, field("Agent id", id),
      field("Model", model, "Saved as the agent's settings.model (optional).")),
    blocksBox, hint,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: addRow }, "Add a block"),
      h("button", { type: "submit" }, "Create agent")),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { id: id.value.trim() };
    if (model.value.trim()) body.settings = { model: model.value.trim() };
    if (rows.length) body.blocks = rows.map((r) => r.read());
    try {
      const agent = await api.createAgent(body);
      ctx.setStatus(`Agent ${agent.id} created.`);
      window.location.hash = ctx.routeHash({ tenant: agent.tenant, agent: agent.id, tab: "chat" });
    } catch (error) {
      replace(out, errorBox(error));
    }
  });
  return h("details", { class: "create new-agent" }, h("summary", {}, "New agent…"), form);
}

/** "Delete agent" for the agent page's header: asks, deletes, back to the list. */
export function deleteAgentButton(route, ctx) {
  const out = h("span", { "aria-live": "polite" });
  const button = h("button", {
    type: "button",
    class: "danger delete-agent",
    onclick: async () => {
      if (!window.confirm(`Delete agent ${route.agent} and everything of it (blocks, conversations, `
        + "passages)? This cannot be undone: export the agent first if you may need it.")) return;
      try {
        await api.deleteAgent(route.tenant, route.agent);
        ctx.setStatus(`Agent ${route.agent} deleted.`);
        window.location.hash = "#/";
      } catch (error) {
        replace(out, errorBox(error));
      }
    },
  }, "Delete agent");
  return h("div", { class: "agent-admin" }, button, out);
}

/** "New block" below the blocks tab's editors; a label in `existing` is refused (edit it). */
export function newBlockForm(route, ctx, existing) {
  const fields = blockFields("new-block");
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "new-block-form", "aria-label": "New block" }, fields.element,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create block")), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { label, ...rest } = fields.read();
    if (existing.includes(label)) {
      replace(out, errorBox(`A block ${label} exists already: edit it above.`));
      return;
    }
    try {
      await api.putBlock(route.tenant, route.agent, label, rest);
      ctx.setStatus(`Block ${label} created.`);
      rerender();
    } catch (error) {
      replace(out, errorBox(error));
    }
  });
  return h("details", { class: "create new-block" }, h("summary", {}, "New block…"), form);
}

/** A "Delete block" button in each block editor's actions (`article.block[data-label]`). */
export function addDeleteButtons(list, route, ctx) {
  for (const article of list.querySelectorAll("article.block[data-label]")) {
    const label = article.dataset.label;
    const actions = article.querySelector(".actions");
    if (!actions) continue;
    actions.append(h("button", {
      type: "button",
      class: "danger delete-block",
      onclick: async () => {
        if (!window.confirm(`Delete block ${label}? The model will no longer see it; its history `
          + "stays readable.")) return;
        try {
          await api.deleteBlock(route.tenant, route.agent, label);
          article.remove();
          ctx.setStatus(`Block ${label} deleted.`);
        } catch (error) {
          actions.append(errorBox(error));
        }
      },
    }, "Delete block"));
  }
}
