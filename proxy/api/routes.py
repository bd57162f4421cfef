"""The agents REST API's route table: one entry per endpoint, from which both the Starlette
routes (`agent_routes()`) and the OpenAPI document (openapi.py) are made, so the two cannot
drift apart."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from ..portable.document import AgentDocument
from . import (
    agent_messages,
    agents,
    blocks,
    forget_schemas,
    forgetting,
    passages,
    portable_routes,
    schemas,
    transcripts,
)
from .endpoints import Endpoint, Param, PathParams
from .letta_schemas import LETTA_STREAM, LettaMessagesRequest, LettaResponse
from .openapi import openapi_endpoint


def _limit(default: int) -> Param:
    return Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": default},
                 "How many items at most.")


TENANT = Param("tenant", {"type": "string"}, "Admin keys only: the tenant (default `default`); "
               "ignored for tenant keys.")
LIST_TENANT = Param("tenant", {"type": "string"}, "Admin keys only: list this tenant only "
                    "(default: every tenant); ignored for tenant keys.")
LETTA_FILE: dict[str, Any] = {
    "title": "LettaAgentFile", "type": "object",
    "description": "A Letta Agent File (.af): memory blocks, messages and passages are taken."}

PATH_PARAMS: PathParams = {
    "agent": ("An agent id (1-200 letters, digits or . _ - @ : + = ~).", {"type": "string"}),
    "label": ("A block label (same rules as ids).", {"type": "string"}),
    "conversation": ("A conversation id.", {"type": "string"}),
    "passage": ("A passage id.", {"type": "string", "pattern": "^[0-9]+$"}),
}

A = "/v1/agents/{agent}"
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/agents", agents.list_agents, "List agents, by tenant then id",
             schemas.AgentList, query=(
                 _limit(100), Param("after", {"type": "string"}, "The `next_after` of the "
                                    "previous page."), LIST_TENANT)),
    Endpoint("POST", "/v1/agents", agents.create_agent, "Create an agent", schemas.AgentObject,
             201, (schemas.AgentCreate,), query=(TENANT,)),
    Endpoint("POST", "/v1/agents/import", portable_routes.import_agent,
             "Import an agent document or a Letta Agent File", schemas.AgentObject, 201,
             (AgentDocument, LETTA_FILE), tag="export", query=(
                 Param("id", {"type": "string"}, "Import under this id."),
                 Param("replace", {"type": "boolean"}, "Overwrite an agent of that id."),
                 TENANT)),
    Endpoint("GET", A, agents.get_agent, "An agent with its blocks", schemas.AgentObject,
             query=(TENANT,)),
    Endpoint("PATCH", A, agents.patch_agent, "Merge settings (null removes a key)",
             schemas.AgentObject, body=(schemas.AgentPatch,), query=(TENANT,)),
    Endpoint("DELETE", A, agents.delete_agent, "Delete an agent and everything of it",
             schemas.AgentDeleted, query=(TENANT,)),
    Endpoint("GET", f"{A}/blocks", blocks.list_blocks, "The agent's blocks", schemas.BlockList,
             tag="memory", query=(TENANT,)),
    Endpoint("GET", f"{A}/blocks/{{label}}", blocks.get_block, "One block",
             schemas.BlockObject, tag="memory", query=(TENANT,)),
    Endpoint("PUT", f"{A}/blocks/{{label}}", blocks.put_block,
             "Set a block's value (created if new)", schemas.BlockObject,
             body=(schemas.BlockPut,), tag="memory", query=(TENANT,)),
    Endpoint("DELETE", f"{A}/blocks/{{label}}", blocks.delete_block, "Delete a block",
             schemas.BlockDeleted, tag="memory", query=(TENANT,)),
    Endpoint("GET", f"{A}/blocks/{{label}}/history", blocks.block_history,
             "A block's revisions, newest first", schemas.RevisionList, tag="memory",
             query=(_limit(100), TENANT)),
    Endpoint("POST", f"{A}/blocks/{{label}}/undo", blocks.undo_block,
             "Restore a block to the value before a revision", schemas.BlockObject,
             body=(schemas.UndoRequest,), body_required=False, tag="memory", query=(TENANT,)),
    Endpoint("GET", f"{A}/conversations", transcripts.list_conversations,
             "Conversations, newest activity first", schemas.ConversationList,
             tag="transcripts", query=(TENANT,)),
    Endpoint("POST", f"{A}/conversations", transcripts.create_conversation,
             "Create an empty conversation (a turn also creates its conversation)",
             schemas.ConversationObject, 201, (schemas.ConversationCreate,),
             tag="transcripts", query=(TENANT,)),
    Endpoint("DELETE", f"{A}/conversations/{{conversation}}", forgetting.delete_conversation,
             "Delete a conversation and everything of it (messages, index and vector rows,"
             " turns, summaries, its stored responses); audited",
             forget_schemas.ConversationDeleted, tag="forgetting", query=(TENANT,)),
    Endpoint("POST", f"{A}/forget", forgetting.forget_memories,
             "Forget messages and passages by query (all its words) or by id: their text,"
             " index and vector rows go; audited without the content",
             forget_schemas.ForgetResult, body=(forget_schemas.ForgetRequest,),
             tag="forgetting", query=(TENANT,)),
    Endpoint("GET", "/v1/forget-log", forgetting.forget_log,
             "The audit log of deletes, forgets and retention, newest first (counts only)",
             forget_schemas.AuditList, tag="forgetting", query=(
                 Param("agent_id", {"type": "string"}, "Only this agent's entries."),
                 _limit(100), TENANT)),
    Endpoint("POST", "/v1/purge", forgetting.purge,
             "Admin only: erase forgotten text left in index segments, logs and dead rows",
             forget_schemas.Purged, body_required=False, tag="forgetting"),
    Endpoint("GET", "/v1/usage", forgetting.usage,
             "The tenant's counts and quotas (no content)", forget_schemas.UsageObject,
             tag="forgetting", query=(TENANT,)),
    Endpoint("GET", f"{A}/conversations/{{conversation}}/messages", transcripts.list_messages,
             "A page of messages, or full-text hits with ?query=", schemas.MessageList,
             tag="transcripts", query=(
                 Param("after", {"type": "integer", "minimum": 0}, "Messages after this seq."),
                 Param("before", {"type": "integer", "minimum": 1},
                       "Messages before this seq (the `next_before` of a newest-first page)."),
                 Param("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
                       "asc: oldest first; desc: newest first (a transcript opened at its"
                       " end)."),
                 _limit(100),
                 Param("include_superseded", {"type": "boolean"}, "Show replaced messages."),
                 Param("query", {"type": "string"}, "Full-text search, best first."),
                 TENANT)),
    Endpoint("GET", f"{A}/messages", transcripts.search_agent_messages,
             "Search across the agent's conversations (hybrid when embeddings are on; ties"
             " newest first)",
             schemas.MessageList,
             tag="transcripts", query=(
                 Param("query", {"type": "string"}, "What to look for (blank: newest)."),
                 Param("roles", {"type": "string"}, "Comma-separated: user, assistant, tool."),
                 Param("start_date", {"type": "string"}, "Messages written at or after this:"
                       " YYYY-MM-DD, an ISO date-time (UTC unless it says), YYYY-MM, YYYY or"
                       " epoch seconds."),
                 Param("end_date", {"type": "string"}, "Messages written at or before this,"
                       " same forms; a day, month or year is included whole."),
                 _limit(20), TENANT)),
    Endpoint("POST", f"{A}/messages", agent_messages.send_messages,
             "Run one stateful turn (Letta's messages API): the turn's messages, stop_reason "
             "and usage (server-sent events with `streaming: true`)", LettaResponse,
             body=(LettaMessagesRequest,), tag="messages", query=(TENANT,),
             event_stream=LETTA_STREAM),
    Endpoint("POST", f"{A}/messages/stream", agent_messages.send_messages_stream,
             "The same turn as server-sent events, each step's messages as it finishes",
             LETTA_STREAM,
             body=(LettaMessagesRequest,), tag="messages", query=(TENANT,),
             media_type="text/event-stream"),
    Endpoint("GET", f"{A}/passages", passages.list_passages,
             "Archival passages, newest first (ranked with ?query=)", schemas.PassageList,
             tag="memory", query=(
                 Param("query", {"type": "string"}, "Full-text search."),
                 Param("tags", {"type": "string"}, "Comma-separated; passages having all."),
                 _limit(100), Param("offset", {"type": "integer", "minimum": 0}, "Skip this "
                                    "many."), TENANT)),
    Endpoint("POST", f"{A}/passages", passages.create_passage, "Add a passage",
             schemas.PassageObject, 201, (schemas.PassageCreate,), tag="memory",
             query=(TENANT,)),
    Endpoint("DELETE", f"{A}/passages/{{passage}}", passages.delete_passage,
             "Delete a passage", schemas.PassageDeleted, tag="memory", query=(TENANT,)),
    Endpoint("GET", f"{A}/context", agents.agent_context,
             "The next prompt's token breakdown, or with format=raw the next upstream"
             " request itself", schemas.ContextAnswer, query=(
                 Param("conversation", {"type": "string"}, "Default `default`."),
                 Param("format", {"type": "string", "enum": ["report", "raw"],
                                  "default": "report"},
                       "report: tokens per part; raw: the JSON body the upstream will receive"
                       " on the next turn (for `message` as the new user message)."),
                 Param("model", {"type": "string"}, "Default: the last turn's model."),
                 Param("message", {"type": "string"},
                       "A next user message: shows and counts what automatic recall would add"
                       " for it (docs/memory.md)."),
                 TENANT)),
    Endpoint("GET", f"{A}/export", portable_routes.export_agent, "The agent document",
             AgentDocument, tag="export", query=(TENANT,)),
)


def agent_routes() -> list[Route]:
    """Every agents REST route and `GET /openapi.json`, for the app's route list."""
    routes = [Route(e.path, e.handler, methods=[e.method]) for e in ENDPOINTS]
    routes.append(Route("/openapi.json", openapi_endpoint(ENDPOINTS, PATH_PARAMS),
                        methods=["GET"]))
    return routes
