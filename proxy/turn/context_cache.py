"""Recently loaded conversation contexts, kept so the next turn decodes only what is new.

The store decides whether a `KnownContext` is still valid (proxy/store/known_context.py); this
is only the bounded, least-recently-used map from conversation pk to what was loaded last,
sized in messages (`[agent] context_cache_messages`) because that is what costs memory.
"""

from __future__ import annotations

from collections import OrderedDict

from ..core.types import KnownContext


class ContextCache:
    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self.messages = 0  # held now, in all entries
        self._entries: OrderedDict[int, KnownContext] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, conversation_pk: int) -> KnownContext | None:
        known = self._entries.get(conversation_pk)
        if known is not None:
            self._entries.move_to_end(conversation_pk)
        return known

    def put(self, conversation_pk: int, known: KnownContext) -> None:
        """Remember `known` for the conversation; the least recently used entries go first
        when over budget. A context larger than the whole budget is not kept."""
        self.forget(conversation_pk)
        size = len(known.messages)
        if size > self.max_messages:
            return
        while self.messages + size > self.max_messages and self._entries:
            _, old = self._entries.popitem(last=False)
            self.messages -= len(old.messages)
        self._entries[conversation_pk] = known
        self.messages += size

    def forget(self, conversation_pk: int) -> None:
        old = self._entries.pop(conversation_pk, None)
        if old is not None:
            self.messages -= len(old.messages)

    def clear(self) -> None:
        self._entries.clear()
        self.messages = 0
