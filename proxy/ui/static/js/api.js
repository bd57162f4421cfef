// The agents REST API (docs/api.md), as the inspector uses it. Every call sends the operator's
// key as `Authorization: Bearer` when one is set (none on an open server) and turns the
// OpenAI-shaped error body into an ApiError.

const KEY_NAME = "memproxy.inspector.key";

/** The key: sessionStorage (this tab) or localStorage (remembered on this device). */
export const keyStore = {
  get() {
    return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";
  },
  remembered() {
    return Boolean(localStorage.getItem(KEY_NAME));
  },
  set(key, remember) {
    this.clear();
    if (!key) return;
    (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_NAME);
    localStorage.removeItem(KEY_NAME);
  },
};

/** An error answer from memproxy: HTTP status plus the OpenAI error fields. */
export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.type = error && error.type;
    this.code = error && error.code;
    this.param = error && error.param;
  }
}

// The API lives next to /ui: resolving "../" against the page keeps working when a reverse
// proxy serves memproxy under a path prefix.
function apiUrl(path, params) {
  const url = new URL(`..${path}`, window.location.href);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  url.hash = "";
  return url;
}

async function request(method, path, { params, body } = {}) {
  const headers = { Accept: "application/json" };
  const key = keyStore.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, { message: `memproxy is unreachable: ${err.message}`, code: "network_error" });
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { message: `HTTP ${response.status}` };
    throw new ApiError(response.status, error);
  }
  return data;
}

const enc = encodeURIComponent;
const agentPath = (agent) => `/v1/agents/${enc(agent)}`;

/**
 * The calls the views make. `tenant` is passed as `?tenant=` on every per-agent call: an admin
 * needs it to reach another tenant's agent, and a tenant key's `?tenant=` is ignored.
 */
export const api = {
  listAgents: (after, limit = 100) => request("GET", "/v1/agents", { params: { after, limit } }),
  getAgent: (tenant, agent) => request("GET", agentPath(agent), { params: { tenant } }),
  createAgent: (body) => request("POST", "/v1/agents", { body }),
  deleteAgent: (tenant, agent) => request("DELETE", agentPath(agent), { params: { tenant } }),
  deleteBlock: (tenant, agent, label) =>
    request("DELETE", `${agentPath(agent)}/blocks/${enc(label)}`, { params: { tenant } }),
  createConversation: (tenant, agent, id) =>
    request("POST", `${agentPath(agent)}/conversations`, { params: { tenant }, body: { id } }),
  listBlocks: (tenant, agent) => request("GET", `${agentPath(agent)}/blocks`, { params: { tenant } }),
  putBlock: (tenant, agent, label, fields) =>
    request("PUT", `${agentPath(agent)}/blocks/${enc(label)}`, { params: { tenant }, body: fields }),
  blockHistory: (tenant, agent, label, limit = 50) =>
    request("GET", `${agentPath(agent)}/blocks/${enc(label)}/history`, { params: { tenant, limit } }),
  undoBlock: (tenant, agent, label, revision) =>
    request("POST", `${agentPath(agent)}/blocks/${enc(label)}/undo`, {
      params: { tenant },
      body: revision === undefined ? {} : { revision },
    }),
  listConversations: (tenant, agent) =>
    request("GET", `${agentPath(agent)}/conversations`, { params: { tenant } }),
  listMessages: (tenant, agent, conversation,
    { after, before, order, limit = 50, includeSuperseded, query } = {}) =>
    request("GET", `${agentPath(agent)}/conversations/${enc(conversation)}/messages`, {
      params: {
        tenant, after, before, order, limit, query,
        include_superseded: includeSuperseded ? "true" : undefined,
      },
    }),
  searchMessages: (tenant, agent, query, limit = 50) =>
    request("GET", `${agentPath(agent)}/messages`, { params: { tenant, query, limit } }),
  listPassages: (tenant, agent, { query, tags, limit = 50, offset = 0 } = {}) =>
    request("GET", `${agentPath(agent)}/passages`, { params: { tenant, query, tags, limit, offset } }),
  addPassage: (tenant, agent, text, tags) =>
    request("POST", `${agentPath(agent)}/passages`, { params: { tenant }, body: { text, tags } }),
  deletePassage: (tenant, agent, id) =>
    request("DELETE", `${agentPath(agent)}/passages/${enc(id)}`, { params: { tenant } }),
  deleteConversation: (tenant, agent, conversation) =>
    request("DELETE", `${agentPath(agent)}/conversations/${enc(conversation)}`, { params: { tenant } }),
  forget: (tenant, agent, body) =>
    request("POST", `${agentPath(agent)}/forget`, { params: { tenant }, body }),
  context: (tenant, agent, conversation, model, { format, message } = {}) =>
    request("GET", `${agentPath(agent)}/context`, {
      params: { tenant, conversation, model, format, message },
    }),
};

/**
 * One turn through Letta's step stream (`POST /v1/agents/{a}/messages/stream`, docs/agents-as-a-service.md):
 * `onEvent(object)` for every `data:` event as it arrives (a message, the stop_reason, the usage
 * statistics, or `{error}` when a later step failed). An error before the stream starts (the
 * first step's, or a bad body) throws an ApiError, as every other call does.
 */
export async function streamMessages(tenant, agent, body, onEvent) {
  const headers = { Accept: "text/event-stream", "Content-Type": "application/json" };
  const key = keyStore.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(apiUrl(`${agentPath(agent)}/messages/stream`, { tenant }), {
      method: "POST", headers, body: JSON.stringify(body), cache: "no-store", credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, { message: `memproxy is unreachable: ${err.message}`, code: "network_error" });
  }
  if (!response.ok || !response.body) {
    let error = { message: `HTTP ${response.status}` };
    try {
      error = (await response.json()).error || error;
    } catch {
      // not JSON: the status alone
    }
    throw new ApiError(response.status, error);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const data = buffer.slice(0, end).split("\n")
        .filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
      buffer = buffer.slice(end + 2);
      if (data && data !== "[DONE]") onEvent(JSON.parse(data));
      end = buffer.indexOf("\n\n");
    }
    if (done) return;
  }
}
