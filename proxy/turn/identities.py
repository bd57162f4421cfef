"""Which agent and conversation a request names, as database keys, cached in memory.

Every stateful turn starts by turning `(tenant, agent id)` and a conversation id into the
store's primary keys. Ids never change, so after the first request of an agent this costs no
round trip; the agent is created on first use (with the configured default blocks). A deleted
agent is noticed by the turn's state read (service.py) and dropped here.

A request that names no conversation is placed by what it carries (docs/conversation-tree.md):
a history that continues a stored path belongs to that path's conversation.
"""

from __future__ import annotations

import uuid

from ..core.identity import DEFAULT_CONVERSATION
from ..core.messages import visible_hash
from ..core.types import Agent, Block, Message
from ..store.base import Store
from .input import locate

CACHE_SIZE = 50_000  # agents whose ids are kept in memory (then the cache starts over)


class Identities:
    """The agents and conversations this process has resolved, by id."""

    def __init__(self, store: Store, default_blocks: list[Block], *, max_agents: int = 0
                 ) -> None:
        self.store = store
        self.default_blocks = default_blocks
        self.max_agents = max_agents  # [limits] agents_per_tenant, checked on creation
        self._agents: dict[tuple[str, str], Agent] = {}
        self._conversations: dict[tuple[int, str], int] = {}

    async def agent(self, tenant: str, agent_id: str) -> Agent:
        """The agent, created on first use and cached (a deleted agent is noticed by the turn's
        state read and forgotten, then looked up again)."""
        key = (tenant, agent_id)
        agent = self._agents.get(key)
        if agent is None:
            agent = await self.store.ensure_agent(tenant, agent_id, self.default_blocks,
                                                  max_agents=self.max_agents)
            if len(self._agents) >= CACHE_SIZE:
                self._agents.clear()
                self._conversations.clear()
            self._agents[key] = agent
        return agent

    async def conversation_pk(self, agent: Agent, conversation_id: str) -> int:
        """The conversation's key, created on first use."""
        conversation_pk = self._conversations.get((agent.pk, conversation_id))
        if conversation_pk is None:
            conversation = await self.store.ensure_conversation(agent.pk, conversation_id)
            conversation_pk = self._conversations[(agent.pk, conversation_id)] = conversation.pk
        return conversation_pk

    async def conversation_for(self, agent: Agent, client_messages: list[Message]) -> str:
        """The conversation a request that names none belongs to (docs/conversation-tree.md).

        A history that continues a stored path (from its first message, or a run of recent
        messages such as a tool loop's own turn) belongs to that path's conversation; a lone
        first message from a client known to resend histories starts a new chat; anything
        else (the SDK style) is the `default` conversation.
        """
        roles = [str(m.get("role", "")) for m in client_messages]
        if "assistant" in roles:
            hashes = [visible_hash(m) for m in client_messages]
            found = await locate(self.store, agent.pk, None, hashes, roles)
            if found is not None and found.node.conversation_id:
                return found.node.conversation_id
            return f"chat-{uuid.uuid4().hex[:16]}"
        if agent.settings.get("resends_history"):
            return f"chat-{uuid.uuid4().hex[:16]}"
        return DEFAULT_CONVERSATION

    def forget_agent(self, tenant: str, agent_id: str) -> list[int]:
        """Forget a deleted agent; returns the keys of its conversations that were cached."""
        agent = self._agents.pop((tenant, agent_id), None)
        if agent is None:
            return []
        keys = [k for k in self._conversations if k[0] == agent.pk]
        return [self._conversations.pop(k) for k in keys]
