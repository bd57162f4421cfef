"""Fill a database with long conversations fast, through memproxy's own import path.

The overhead benchmark needs conversations with 10,000 and 100,000 stored messages. Writing
them as real turns (`begin_turn` + `finish_turn`) costs two transactions per exchange, minutes
for 100k; `Store.import_agent` writes a whole agent — the same rows memproxy writes for a turn,
with token counts, visible hashes, turns and responses — in one transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

MODEL = "bench-model"
TENANT = "default"


def _conversation_rows(rng: random.Random, agent_id: str, messages: int, in_context: bool,
                       text: Callable[[random.Random, int], str],
                       in_context_last: int = 0):  # type: ignore[no-untyped-def]
    from proxy import tokens
    from proxy.core.completions import chat_completion
    from proxy.core.messages import request_hash, visible_hash
    from proxy.core.types import StoredMessage
    from proxy.store.admin_types import TurnRecord

    rows: list[StoredMessage] = []
    turns: list[TurnRecord] = []
    start = time.time() - messages * 30  # one exchange a minute, ending now
    for turn in range(messages // 2):
        user = {"role": "user", "content": text(rng, rng.randint(40, 60))}
        reply = {"role": "assistant", "content": text(rng, rng.randint(60, 80))}
        turn_id = f"bench-{agent_id}-{turn:06d}"
        at = start + turn * 60
        for offset, message in enumerate((user, reply)):
            rows.append(StoredMessage(
                seq=2 * turn + offset + 1, data=message, turn_id=turn_id, created_at=at + offset,
                in_context=in_context or 2 * turn + offset >= messages - in_context_last,
                visible=True, superseded=False,
                tokens=tokens.count_message(message, MODEL), visible_hash=visible_hash(message)))
        response = chat_completion(completion_id=f"chatcmpl-{turn_id}", created=int(at),
                                   model=MODEL, message=reply, finish_reason="stop",
                                   usage={"prompt_tokens": 0, "completion_tokens": 0})
        turns.append(TurnRecord(turn_id=turn_id, status="done",
                                request_hash=request_hash({"model": MODEL, "messages": [user]}),
                                idempotency_key=None, created_at=at, finished_at=at + 1,
                                response=response, first_seq=2 * turn + 1))
    return rows, turns


async def populate(db_url: str, agent_ids: Sequence[str], messages: int, *, in_context: bool,
                   text: Callable[[random.Random, int], str], seed: int = 1,
                   in_context_last: int = 0, conversation_id: str | None = None) -> float:
    """Give each agent a conversation (`default`, or `conversation_id`) of `messages` stored
    messages (alternating user and assistant, ~50 and ~70 words); `in_context=False` stores
    them as already paged out, except the last `in_context_last` (a long chat whose recent
    messages are in memproxy's context, as paging leaves them). Returns the seconds it took."""
    from proxy.config import Settings
    from proxy.core.identity import DEFAULT_CONVERSATION
    from proxy.core.types import Agent, Block, Conversation
    from proxy.store import open_store
    from proxy.store.admin_types import AgentDump, ConversationDump

    started = time.perf_counter()
    settings = Settings()
    blocks = [Block(label=label, value=b.value, description=b.description, limit=b.limit,
                    read_only=b.read_only) for label, b in settings.agent.blocks.items()]
    rng = random.Random(seed)
    store = open_store(db_url)
    await store.open()
    try:
        for agent_id in agent_ids:
            rows, turns = _conversation_rows(rng, agent_id, messages, in_context, text,
                                             in_context_last)
            now = time.time()
            conversation = Conversation(pk=0, agent_pk=0,
                                        conversation_id=conversation_id or DEFAULT_CONVERSATION,
                                        created_at=now, summary="")
            dump = AgentDump(
                agent=Agent(pk=0, tenant=TENANT, agent_id=agent_id, created_at=now),
                blocks=blocks,
                conversations=[ConversationDump(conversation=conversation, head_hash=None,
                                                messages=rows, turns=turns)])
            await store.import_agent(TENANT, agent_id, dump, replace=True)
    finally:
        await store.close()
    return time.perf_counter() - started
