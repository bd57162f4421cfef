// Archival memory: search passages by query and tags, page through them, add and delete.

import { api } from "../api.js";
import { append, badge, errorBox, explainError, field, h, replace, timeEl, uid } from "../dom.js";

const PAGE = 50;

/** "a, b ,c" → ["a", "b", "c"] (empty parts dropped). */
export function parseTags(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function passageItem(passage, onDelete) {
  return h(
    "li",
    { class: "passage", dataset: { passage: String(passage.id) } },
    h(
      "div",
      { class: "passage-head" },
      h("span", {}, `#${passage.id}`),
      (passage.tags || []).map((t) => badge(t, "tag")),
      typeof passage.score === "number" ? badge(`score ${passage.score.toFixed(3)}`, "score") : null,
      timeEl(passage.created_at),
      h("button", { type: "button", class: "small danger", onclick: () => onDelete(passage) },
        `Delete passage #${passage.id}`),
    ),
    h("div", { class: "content" }, passage.text),
  );
}

function addForm(route, onAdded) {
  const text = h("textarea", { id: uid("passage-text"), rows: 3, required: true });
  const tags = h("input", { id: uid("passage-tags"), type: "text" });
  const message = h("p", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "add-passage", "aria-label": "Add a passage" },
    h("h4", {}, "Add a passage"),
    field("Text", text),
    field("Tags", tags, "comma-separated, optional"),
    h("button", { type: "submit" }, "Add passage"),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!text.value.trim()) return;
    try {
      const passage = await api.addPassage(route.tenant, route.agent, text.value, parseTags(tags.value));
      text.value = "";
      tags.value = "";
      message.textContent = `Added passage #${passage.id}.`;
      onAdded();
    } catch (error) {
      replace(message, errorBox(error));
    }
  });
  return form;
}

/** Render the archival-passages tab. */
export async function renderPassages(panel, route, ctx) {
  const query = h("input", { id: uid("passage-query"), type: "search" });
  const tags = h("input", { id: uid("passage-filter-tags"), type: "text" });
  const list = h("ol", { class: "passages", "aria-label": "Passages" });
  const footer = h("div", { class: "pager", "aria-live": "polite" });
  let offset = 0;

  async function load(reset) {
    if (reset) {
      offset = 0;
      replace(list);
    }
    replace(footer, h("p", { class: "muted" }, "Loading passages…"));
    let page;
    try {
      page = await api.listPassages(route.tenant, route.agent, {
        query: query.value.trim(), tags: parseTags(tags.value).join(","), limit: PAGE, offset,
      });
    } catch (error) {
      replace(footer, explainError(error));
      return;
    }
    if (!ctx.isCurrent()) return;
    const rows = page.data || [];
    offset += rows.length;
    append(list, rows.map((p) => passageItem(p, remove)));
    replace(
      footer,
      list.children.length === 0 ? h("p", {}, "No passages match.") : null,
      page.has_more ? h("button", { type: "button", onclick: () => load(false) }, "Load more passages") : null,
    );
  }

  async function remove(passage) {
    if (!window.confirm(`Delete passage #${passage.id}? This cannot be undone.`)) return;
    try {
      await api.deletePassage(route.tenant, route.agent, passage.id);
      ctx.setStatus(`Passage #${passage.id} deleted.`);
      const item = list.querySelector(`li[data-passage="${CSS.escape(String(passage.id))}"]`);
      if (item) item.remove();
      offset = Math.max(0, offset - 1);
    } catch (error) {
      replace(footer, errorBox(error));
    }
  }

  const search = h(
    "form",
    { class: "inline-form", role: "search", "aria-label": "Passage search" },
    field("Search passages", query),
    field("Tags (comma-separated)", tags),
    h("button", { type: "submit" }, "Search"),
    h("button", {
      type: "button",
      onclick: () => {
        query.value = "";
        tags.value = "";
        load(true);
      },
    }, "Show all"),
  );
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  append(panel, [search, list, footer, addForm(route, () => load(true))]);
  await load(true);
}
