// One conversation's transcript as a chat reads: it opens at the newest message (pages of
// `order=desc`, older ones loaded above with **Load older messages**), or from the first
// message after **Jump to start** (pages of `order=asc`, newer ones below).
//
// Conversations are trees (docs/conversation-tree.md): an edit or a regenerate leaves the old
// messages as a superseded branch. Every page is asked for with its superseded messages, so
// where the conversation branched is always marked (a "branched here" line after the message
// the branches continue, using each message's `parent_seq`); its other branches open on
// request, and **Show superseded messages** opens them all.

import { api } from "../api.js";
import { badge, explainError, h, replace, uid } from "../dom.js";
import { messageItem } from "./messages.js";

const PAGE = 50;

/**
 * The branches among `rows` (messages of one conversation, any order): each superseded
 * message belongs to the branch of its oldest superseded ancestor (the branch's root), and
 * a branch hangs at its root's parent, the message where the conversation branched.
 * @returns {{active: object[], branches: Map<number, object[][]>}} the active path in seq
 *   order, and the branches by the seq of the active message they follow (0: the start).
 */
export function branchesOf(rows) {
  const all = [...rows].sort((a, b) => a.seq - b.seq);
  const bySeq = new Map(all.map((m) => [m.seq, m]));
  const active = all.filter((m) => !m.superseded);
  const activeSeqs = new Set(active.map((m) => m.seq));
  const rootOf = (message) => {
    let current = message;
    for (let guard = 0; guard < all.length; guard += 1) {
      const parent = bySeq.get(current.parent_seq);
      if (!parent || !parent.superseded) break;
      current = parent;
    }
    return current;
  };
  // Where a root hangs: its parent when that is shown on the active path, else the newest
  // active message before it (its parent is on a page not loaded, or unknown).
  const anchorOf = (root) => {
    if (activeSeqs.has(root.parent_seq) || root.parent_seq === 0) return root.parent_seq;
    let anchor = 0;
    for (const m of active) {
      if (m.seq > root.seq) break;
      anchor = m.seq;
    }
    return anchor;
  };
  const roots = new Map(); // root seq -> its messages
  for (const message of all) {
    if (!message.superseded) continue;
    const root = rootOf(message);
    if (!roots.has(root.seq)) roots.set(root.seq, []);
    roots.get(root.seq).push(message);
  }
  const branches = new Map();
  for (const [rootSeq, messages] of roots) {
    const anchor = anchorOf(bySeq.get(rootSeq));
    if (!branches.has(anchor)) branches.set(anchor, []);
    branches.get(anchor).push(messages);
  }
  return { active, branches };
}

function branchPoint(anchor, branches, state) {
  const count = branches.length;
  const messages = branches.reduce((n, b) => n + b.length, 0);
  const body = h("div", { class: "branch-body" });
  const details = h(
    "details",
    { class: "branch", dataset: { anchor: String(anchor) } },
    h(
      "summary",
      {},
      badge("branch", "branch-badge"),
      anchor ? ` Branched after #${anchor}: ` : " Branched at the start: ",
      `${count} other ${count === 1 ? "version" : "versions"} (${messages} superseded `
        + `${messages === 1 ? "message" : "messages"}, replaced by an edit or a regenerate)`,
    ),
    body,
  );
  const fill = () => {
    if (body.childElementCount) return;
    replace(body, branches.map((messagesOfBranch, i) => h(
      "div",
      { class: "branch-version" },
      h("p", { class: "muted branch-label" }, `Version ${i + 1} of ${count + 1} (superseded)`),
      h("ol", { class: "messages" }, messagesOfBranch.map((m) => messageItem(m))),
    )));
  };
  details.addEventListener("toggle", () => {
    if (details.open) {
      state.open.add(anchor);
      fill();
    } else {
      state.open.delete(anchor);
    }
  });
  if (state.showAll || state.open.has(anchor)) {
    details.open = true;
    fill();
  }
  return h("li", { class: "branch-point" }, details);
}

/** The transcript box of `route.conversation`: `{element, load, reload}`. */
export function transcript(route, ctx) {
  const list = h("ol", { class: "messages transcript", "aria-label": `Transcript of ${route.conversation}` });
  const scroller = h("div", { class: "transcript-scroll", tabindex: "0", "aria-label": "Messages" }, list);
  const top = h("div", { class: "pager pager-top" });
  const footer = h("div", { class: "pager" });
  const superseded = h("input", { type: "checkbox", id: uid("superseded") });
  const state = {
    rows: new Map(), mode: "latest", older: null, newer: null, showAll: false, open: new Set(),
  };
  const toggles = h(
    "div",
    { class: "toggles" },
    h("label", { class: "check" }, superseded, " Show superseded messages"),
    h("span", { class: "legend muted" }, "Memory steps are the model's internal memory-tool calls and "
      + "results, never sent to the client."),
  );

  function render() {
    const { active, branches } = branchesOf(state.rows.values());
    const items = [];
    if (branches.has(0)) items.push(branchPoint(0, branches.get(0), state));
    for (const message of active) {
      const item = messageItem(message);
      const others = branches.get(message.parent_seq);
      if (others && (message.parent_seq !== 0 || message === active[0])) {
        // the active path's side of a branch point: the version the context holds
        const n = others.length + 1;
        item.querySelector(".message-head").append(badge(`current version (${n} of ${n})`, "branch-badge"));
        item.classList.add("branch-current");
      }
      items.push(item);
      if (branches.has(message.seq)) items.push(branchPoint(message.seq, branches.get(message.seq), state));
    }
    replace(list, items);
    const button = (text, onclick, cls = "") => h("button", { type: "button", class: cls, onclick }, text);
    const latest = state.mode === "latest";
    replace(
      top,
      latest && state.older !== null ? button("Load older messages", () => page("older")) : null,
      latest ? button("Jump to start", () => restart("start"), "jump-start")
        : button("Jump to latest", () => restart("latest"), "jump-latest"),
      h("span", { class: "muted" }, latest ? " Newest at the bottom." : " From the first message."),
    );
    replace(
      footer,
      state.rows.size === 0 ? h("p", {}, "No messages in this conversation.") : null,
      !latest && state.newer !== null ? button("Load newer messages", () => page("newer")) : null,
    );
  }

  async function page(which) {
    const params = { limit: PAGE, includeSuperseded: true };
    if (which === "older") Object.assign(params, { order: "desc", before: state.older ?? undefined });
    else if (which === "newer") Object.assign(params, { order: "asc", after: state.newer ?? undefined });
    replace(footer, h("p", { class: "muted" }, "Loading messages…"));
    let result;
    try {
      result = await api.listMessages(route.tenant, route.agent, route.conversation, params);
    } catch (error) {
      replace(footer, explainError(error));
      return;
    }
    if (!ctx.isCurrent()) return;
    for (const message of result.data || []) state.rows.set(message.seq, message);
    if (which === "older") state.older = result.has_more ? result.next_before : null;
    else state.newer = result.has_more ? result.next_after : null;
    // Keep the reader's place when older messages arrive above it.
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    render();
    if (which === "older") scroller.scrollTop = scroller.scrollHeight - fromBottom;
  }

  async function restart(mode) {
    state.mode = mode;
    state.rows = new Map();
    state.older = null;
    state.newer = null;
    replace(list);
    await page(mode === "latest" ? "older" : "newer");
    scroller.scrollTop = mode === "latest" ? scroller.scrollHeight : 0;
  }

  superseded.addEventListener("change", () => {
    state.showAll = superseded.checked;
    if (!state.showAll) state.open.clear();
    render();
  });
  const load = () => restart("latest");
  return {
    element: h("div", { class: "transcript-box" }, toggles, top, scroller, footer),
    load,
    reload: load,
  };
}
