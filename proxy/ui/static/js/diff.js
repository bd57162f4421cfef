// A small word diff for block history: what a revision inserted and deleted, so a change of one
// line in a 3,000-character block reads as that line and not as two walls of text.
//
// Tokens are words and the whitespace between them (so newlines survive); the diff is a
// longest common subsequence over the tokens after the common prefix and suffix are trimmed
// (most revisions change one place, so what is left is small). When what is left is too large
// for the O(n·m) table, the diff falls back to whole lines, and past that to one deletion and
// one insertion: always correct, only coarser.

import { h } from "./dom.js";

const MAX_CELLS = 250_000; // the LCS table's size limit (n × m tokens)

/** Words, runs of spaces, and newlines, in order; joined they give `text` back. */
export function tokenize(text) {
  return text.match(/\n|[^\S\n]+|[^\s]+/g) || [];
}

function lines(text) {
  return text.match(/[^\n]*\n|[^\n]+$/g) || [];
}

/** Longest common subsequence of two token lists as edit operations, or null if too large. */
function lcs(a, b) {
  const n = a.length;
  const m = b.length;
  if (n * m > MAX_CELLS) return null;
  const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const ops = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      ops.push(["same", a[i]]);
      i += 1;
      j += 1;
    } else if (table[i + 1][j] >= table[i][j + 1]) {
      ops.push(["del", a[i]]);
      i += 1;
    } else {
      ops.push(["ins", b[j]]);
      j += 1;
    }
  }
  for (; i < n; i += 1) ops.push(["del", a[i]]);
  for (; j < m; j += 1) ops.push(["ins", b[j]]);
  return ops;
}

function diffTokens(a, b) {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA -= 1;
    endB -= 1;
  }
  const middle = lcs(a.slice(start, endA), b.slice(start, endB));
  if (middle === null) return null;
  return [
    ...a.slice(0, start).map((t) => ["same", t]),
    ...middle,
    ...a.slice(endA).map((t) => ["same", t]),
  ];
}

/** Merge neighbouring operations of the same kind: `[[kind, text], ...]`. */
function merge(ops) {
  const out = [];
  for (const [kind, text] of ops) {
    const last = out[out.length - 1];
    if (last && last[0] === kind) last[1] += text;
    else out.push([kind, text]);
  }
  return out;
}

/**
 * The diff of `before` → `after` as `[[kind, text], ...]` with kind "same", "del" or "ins";
 * the "same" and "del" texts joined give `before`, "same" and "ins" give `after`.
 */
export function diffWords(before, after) {
  const ops = diffTokens(tokenize(before), tokenize(after))
    || diffTokens(lines(before), lines(after))
    || [["del", before], ["ins", after]];
  return merge(ops.filter(([, text]) => text !== ""));
}

const CONTEXT_CHARS = 80; // unchanged text kept around a change; the rest is elided

/** A `<pre class="diff">` with `<del>`/`<ins>` marks; long unchanged stretches shortened. */
export function diffElement(before, after) {
  const ops = diffWords(before ?? "", after ?? "");
  const pieces = ops.map(([kind, text], index) => {
    if (kind === "del") return h("del", { class: "diff-del" }, text);
    if (kind === "ins") return h("ins", { class: "diff-ins" }, text);
    const first = index === 0;
    const last = index === ops.length - 1;
    const keep = (first || last ? 1 : 2) * CONTEXT_CHARS;
    if (text.length <= keep + 10) return text;
    const head = first ? "" : text.slice(0, CONTEXT_CHARS);
    const tail = last ? "" : text.slice(-CONTEXT_CHARS);
    const skipped = text.length - head.length - tail.length;
    return [head, h("span", { class: "diff-skip muted" }, `[… ${skipped} unchanged characters …]`), tail];
  });
  const changed = ops.some(([kind]) => kind !== "same");
  return h("pre", { class: "diff" }, changed ? pieces : h("span", { class: "muted" }, "(no change in the value)"));
}
