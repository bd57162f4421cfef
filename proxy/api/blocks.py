"""Core memory blocks: read, write, delete, and their edit history with undo (docs/api.md).

Every change of a value is recorded by the store as a revision in the same transaction (source
`api` here, `undo` for an undo); the model's own edits are recorded by the turn that made them.
Blocks are read by every turn, so a change here shapes the agent's next prompt.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import views
from ..core.types import DEFAULT_BLOCK_LIMIT, Block
from ..store.admin_types import BlockTooLongError
from .agents import block_too_long
from .rest import (
    MAX_PAGE,
    Scope,
    endpoint,
    load_agent,
    not_found,
    ok,
    path_id,
    query_int,
    read_model,
)
from .schemas import BlockPut, UndoRequest


@endpoint
async def list_blocks(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    blocks = await scope.state.store.get_blocks(agent.pk)
    return ok(views.list_object([views.block_object(b) for b in blocks]))


@endpoint
async def get_block(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    label = path_id(request, "label", "label")
    block = await scope.state.store.get_block(agent.pk, label)
    if block is None:
        raise not_found("block", label)
    return ok(views.block_object(block))


@endpoint
async def put_block(request: Request, scope: Scope) -> Response:
    """Set the value (and optionally description, limit, read_only); omitted fields keep the
    block's current ones. `read_only` binds the model's tools, not operators."""
    agent = await load_agent(request, scope)
    label = path_id(request, "label", "label")
    body = await read_model(request, scope, BlockPut)
    store = scope.state.store
    current = await store.get_block(agent.pk, label) or Block(label, limit=DEFAULT_BLOCK_LIMIT)
    block = Block(
        label, body.value,
        current.description if body.description is None else body.description,
        current.limit if body.limit is None else body.limit,
        current.read_only if body.read_only is None else body.read_only)
    if len(block.value) > block.limit:
        raise block_too_long(label, len(block.value), block.limit)
    return ok(views.block_object(await store.write_block(agent.pk, block, source="api")))


@endpoint
async def delete_block(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    label = path_id(request, "label", "label")
    if not await scope.state.store.delete_block(agent.pk, label, source="api"):
        raise not_found("block", label)
    return ok({"object": "block.deleted", "label": label, "deleted": True})


@endpoint
async def block_history(request: Request, scope: Scope) -> Response:
    """Newest first. A deleted block's history stays readable; a label that never existed is
    a 404."""
    agent = await load_agent(request, scope)
    label = path_id(request, "label", "label")
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    store = scope.state.store
    revisions = await store.block_history(agent.pk, label, limit=limit + 1)
    if not revisions and await store.get_block(agent.pk, label) is None:
        raise not_found("block", label)
    return ok(views.list_object([views.revision_object(r) for r in revisions[:limit]],
                                len(revisions) > limit))


@endpoint
async def undo_block(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    label = path_id(request, "label", "label")
    body = await read_model(request, scope, UndoRequest)
    try:
        block = await scope.state.store.undo_block(agent.pk, label, body.revision)
    except BlockTooLongError as exc:
        raise block_too_long(label, exc.length, exc.limit, "revision") from None
    if block is None:
        if body.revision is None:
            raise not_found("revision to undo for block", label)
        raise not_found("revision", body.revision, "revision")
    return ok(views.block_object(block))
