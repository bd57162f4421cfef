// Entry point: the key form, the status line and a tiny hash router.
//   #/                                  agents list
//   #/agent/TENANT/AGENT/TAB[/CONV]     one agent; TAB = blocks | conversations | passages | context | chat

import { keyStore } from "./api.js";
import { replace } from "./dom.js";
import { renderAgentList } from "./views/agents.js";
import { renderAgent, TABS } from "./views/agent.js";

const main = document.getElementById("main");
const statusEl = document.getElementById("status");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
const keyRemember = document.getElementById("key-remember");
const keyState = document.getElementById("key-state");

/** Show a short message in the page's live region (read out by screen readers). */
export function setStatus(message, kind = "info") {
  statusEl.textContent = message || "";
  statusEl.dataset.kind = kind;
}

function showKeyState() {
  const key = keyStore.get();
  keyState.textContent = key
    ? `A key is set${keyStore.remembered() ? " (remembered on this device)" : " (this tab only)"}.`
    : "No key set.";
  keyRemember.checked = keyStore.remembered();
}

/** Parse the hash into a route object. */
export function parseRoute(hash) {
  let parts;
  try {
    parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    return { view: "agents" }; // a malformed %-escape: fall back to the list
  }
  if (parts[0] === "agent" && parts.length >= 3) {
    const tab = TABS.some((t) => t.id === parts[3]) ? parts[3] : "blocks";
    return { view: "agent", tenant: parts[1], agent: parts[2], tab, conversation: parts[4] || null };
  }
  return { view: "agents" };
}

/** The hash for a route (every segment escaped). */
export function routeHash({ tenant, agent, tab = "blocks", conversation = null }) {
  const parts = ["agent", tenant, agent, tab];
  if (conversation) parts.push(conversation);
  return `#/${parts.map(encodeURIComponent).join("/")}`;
}

let renderCount = 0;

async function render() {
  renderCount += 1;
  const mine = renderCount;
  const route = parseRoute(window.location.hash);
  setStatus("");
  const ctx = { setStatus, routeHash, isCurrent: () => mine === renderCount };
  replace(main);
  if (route.view === "agent") await renderAgent(main, route, ctx);
  else await renderAgentList(main, ctx);
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  keyStore.set(keyInput.value.trim(), keyRemember.checked);
  keyInput.value = "";
  showKeyState();
  setStatus(keyStore.get() ? "Key saved; reloading." : "Key cleared; reloading.");
  render();
});

document.getElementById("key-forget").addEventListener("click", () => {
  keyStore.clear();
  keyInput.value = "";
  showKeyState();
  setStatus("Key forgotten.");
  render();
});

// The skip link must not touch the hash: that is the router's.
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", () => {
  render().then(() => main.focus({ preventScroll: true }));
});

showKeyState();
render();
