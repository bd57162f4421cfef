// Building DOM without HTML strings: every piece of data becomes a text node, so nothing the
// server returns (block values, messages, passages, ids) can ever be parsed as markup.

/**
 * Create an element.
 * @param {string} tag
 * @param {Object<string, any>} [attrs] attributes; `class`, `text`, `on<event>` handlers,
 *   boolean attributes (true → present, false/null/undefined → absent), `dataset`.
 * @param {...(Node|string|number|null|undefined|false|Array)} children strings become text.
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = String(value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "value" && "value" in el) el.value = String(value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Append children (a node, a string, or nested arrays of them; falsy values skipped). */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Remove every child of `el`, then append `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A labelled form control: `<div class="field"><label for=id>…</label>control</div>`. */
export function field(labelText, control, hint) {
  const hintEl = hint ? h("span", { class: "hint muted", id: `${control.id}-hint`, text: hint }) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id, text: labelText }), control, hintEl);
}

let idCounter = 0;
/** A unique element id with a readable prefix. */
export function uid(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** Unix seconds → local date and time, or "—". */
export function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const date = new Date(Number(seconds) * 1000);
  return Number.isNaN(date.getTime()) ? "—" : date.toLocaleString();
}

/** A `<time>` element for Unix seconds. */
export function timeEl(seconds) {
  const date = new Date(Number(seconds) * 1000);
  const attrs = Number.isNaN(date.getTime()) ? {} : { datetime: date.toISOString() };
  return h("time", attrs, formatTime(seconds));
}

/** Thousands separators for token and message counts. */
export function formatNumber(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

/** A small labelled badge. */
export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim(), text });
}

/** A paragraph reporting a failed request (the API's OpenAI-shaped message, never markup). */
export function errorBox(error) {
  const code = error && error.code ? ` (${error.code})` : "";
  return h("p", { class: "error", role: "alert" }, `${(error && error.message) || error}${code}`);
}

/** `errorBox`, and for 401 a pointer to the key field at the top of the page. */
export function explainError(error) {
  const box = errorBox(error);
  if (error && error.status === 401) {
    box.append(" This server needs an API key: enter it in the field at the top of the page.");
  }
  return box;
}

/** Number of characters as the server counts them (code points, not UTF-16 units). */
export function charCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/**
 * `await load()` for a view being drawn into `body`: its result, or null when it failed (its
 * error explained in `body`) or when the page moved on meanwhile (`ctx.isCurrent()` false:
 * then nothing is touched, so a slow answer never draws over another view).
 */
export async function loadFor(body, ctx, load) {
  let result;
  try {
    result = await load();
  } catch (error) {
    if (ctx.isCurrent()) replace(body, explainError(error));
    return null;
  }
  return ctx.isCurrent() ? result : null;
}
