// Core memory blocks: one editor per block (textarea, chars/limit counter that turns red over
// the limit, save → PUT), each block's history with undo. `read_only` means the model's memory
// tools may not change the block; the operator still can, and can flip the flag here.

import { api } from "../api.js";
import {
  append, badge, charCount, errorBox, explainError, field, formatNumber, h, replace, timeEl, uid,
} from "../dom.js";
import { diffElement } from "../diff.js";
import { addDeleteButtons, newBlockForm } from "./create.js";

function counterText(chars, limit) {
  const over = limit !== null && limit !== undefined && chars > limit;
  const base = `${formatNumber(chars)} / ${formatNumber(limit)} characters`;
  return { over, text: over ? `${base} — over the limit by ${formatNumber(chars - limit)}` : base };
}

function valuePre(value) {
  return value ? h("pre", { class: "value" }, value) : h("p", { class: "muted value" }, "(empty)");
}

// A revision is its diff (words inserted and deleted, long unchanged stretches elided); the
// full values before and after are one click away, collapsed, so a long history stays short.
function revisionItem(revision, onUndo) {
  const before = revision.old_value ?? "";
  const after = revision.new_value ?? "";
  const sizes = `${formatNumber(charCount(before))} → ${formatNumber(charCount(after))} characters`;
  const values = h(
    "details",
    { class: "revision-full" },
    h("summary", {}, `Full texts before and after (${sizes})`),
    h(
      "div",
      { class: "revision-values" },
      h("div", {}, h("span", { class: "muted" }, "Before"), valuePre(before)),
      h("div", {}, h("span", { class: "muted" }, "After"), valuePre(after)),
    ),
  );
  return h(
    "li",
    { class: "revision", dataset: { revision: String(revision.id), source: revision.source || "" } },
    h(
      "div",
      { class: "revision-head" },
      h("span", {}, `#${revision.id}`),
      badge(revision.source || "unknown", "source"),
      timeEl(revision.created_at),
      h("button", { type: "button", class: "small", onclick: () => onUndo(revision) }, `Undo change #${revision.id}`),
    ),
    diffElement(before, after),
    values,
  );
}

function blockEditor(block, route, ctx) {
  const textareaId = uid(`block-${block.label}`);
  const counterId = `${textareaId}-counter`;
  let saved = block.value ?? "";
  let savedReadOnly = Boolean(block.read_only);
  let limit = block.limit;
  const textarea = h("textarea", {
    id: textareaId,
    rows: Math.min(14, Math.max(4, saved.split("\n").length + 1)),
    "aria-describedby": counterId,
    spellcheck: "false",
    value: saved,
  });
  // Described by, not live: announcing every keystroke would drown a screen reader.
  const counter = h("p", { class: "counter", id: counterId });
  const readOnly = h("input", { type: "checkbox", checked: savedReadOnly });
  const changed = h("span", {}, timeEl(block.updated_at));
  const readOnlyBadge = badge("read-only for the model", "readonly");
  const message = h("p", { class: "block-message", "aria-live": "polite" });
  const save = h("button", { type: "submit" }, "Save");
  const revert = h("button", { type: "button" }, "Revert edits");
  const historyBox = h("div", { class: "history", hidden: true });
  const historyToggle = h("button", { type: "button", "aria-expanded": "false" }, "Show history");

  function refresh() {
    const { over, text } = counterText(charCount(textarea.value), limit);
    counter.textContent = text;
    counter.classList.toggle("over", over);
    textarea.classList.toggle("over", over);
    textarea.setAttribute("aria-invalid", over ? "true" : "false");
    const dirty = textarea.value !== saved || readOnly.checked !== savedReadOnly;
    save.disabled = over || !dirty;
    readOnlyBadge.hidden = !savedReadOnly;
    revert.disabled = !dirty;
  }

  function adopt(updated) {
    saved = updated.value ?? "";
    savedReadOnly = Boolean(updated.read_only);
    limit = updated.limit ?? limit;
    textarea.value = saved;
    readOnly.checked = savedReadOnly;
    replace(changed, timeEl(updated.updated_at));
    refresh();
  }

  async function loadHistory() {
    replace(historyBox, h("p", { class: "muted" }, "Loading history…"));
    try {
      const page = await api.blockHistory(route.tenant, route.agent, block.label);
      const revisions = page.data || [];
      if (revisions.length === 0) {
        replace(historyBox, h("p", { class: "muted" }, "No changes recorded for this block yet."));
        return;
      }
      replace(
        historyBox,
        h("h4", {}, `History of ${block.label} (newest first)`),
        h("ol", { class: "revisions" }, revisions.map((r) => revisionItem(r, undo))),
      );
    } catch (error) {
      replace(historyBox, explainError(error));
    }
  }

  async function undo(revision) {
    const dirty = textarea.value !== saved || readOnly.checked !== savedReadOnly;
    if (dirty && !window.confirm("Undo discards your unsaved edits of this block. Continue?")) return;
    message.textContent = `Undoing change #${revision.id}…`;
    try {
      adopt(await api.undoBlock(route.tenant, route.agent, block.label, revision.id));
      message.textContent = `Undid change #${revision.id}; the block is back to its value before it.`;
      ctx.setStatus(`Block ${block.label}: undid change #${revision.id}.`);
      if (!historyBox.hidden) await loadHistory();
    } catch (error) {
      replace(message, errorBox(error));
    }
  }

  historyToggle.addEventListener("click", async () => {
    const opening = historyBox.hidden;
    historyBox.hidden = !opening;
    historyToggle.setAttribute("aria-expanded", String(opening));
    historyToggle.textContent = opening ? "Hide history" : "Show history";
    if (opening) await loadHistory();
  });
  revert.addEventListener("click", () => {
    textarea.value = saved;
    readOnly.checked = savedReadOnly;
    refresh();
    message.textContent = "Edits reverted.";
  });
  textarea.addEventListener("input", refresh);
  readOnly.addEventListener("change", refresh);

  const form = h(
    "form",
    { class: "block-form", "aria-label": `Block ${block.label}` },
    field(`Value of ${block.label}`, textarea),
    counter,
    h("label", { class: "check" }, readOnly, " Read-only for the model (its memory tools cannot change it)"),
    h("div", { class: "actions" }, save, revert, historyToggle),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (save.disabled) return;
    save.disabled = true;
    message.textContent = "Saving…";
    try {
      const fields = { value: textarea.value, read_only: readOnly.checked };
      adopt(await api.putBlock(route.tenant, route.agent, block.label, fields));
      message.textContent = "Saved.";
      ctx.setStatus(`Block ${block.label} saved.`);
      if (!historyBox.hidden) await loadHistory();
    } catch (error) {
      replace(message, errorBox(error));
      refresh();
    }
  });
  refresh();

  return h(
    "article",
    { class: "block", dataset: { label: block.label } },
    h(
      "h3",
      {},
      h("code", {}, block.label),
      readOnlyBadge,
    ),
    h(
      "p",
      { class: "muted description" },
      block.description ? `${block.description} · ` : "",
      "last changed ",
      changed,
    ),
    form,
    historyBox,
  );
}

/** Render every block of the agent into `panel`. */
export async function renderBlocks(panel, route, ctx) {
  append(panel, h("h3", { class: "visually-hidden" }, "Memory blocks"));
  const list = h("div", { class: "blocks" }, h("p", { class: "muted" }, "Loading blocks…"));
  append(panel, list);
  try {
    const page = await api.listBlocks(route.tenant, route.agent);
    if (!ctx.isCurrent()) return;
    const blocks = page.data || [];
    if (blocks.length === 0) replace(list, h("p", {}, "This agent has no memory blocks."));
    else replace(list, blocks.map((b) => blockEditor(b, route, ctx)));
    addDeleteButtons(list, route, ctx);
    append(panel, newBlockForm(route, ctx, blocks.map((b) => b.label)));
  } catch (error) {
    if (ctx.isCurrent()) replace(list, explainError(error));
  }
}
