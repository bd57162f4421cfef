"""The OpenAI Responses and Conversations APIs (docs/responses.md).

`create.py` answers `POST /v1/responses` (through `runs.py`: a stateful turn or one upstream
call), `stored.py` the stored responses, `conversations.py` the Conversations API,
`background.py` the `background: true` responses, `routes.py` mounts them all under every base
URL a client may use. This module imports nothing so that `api/state.py` can use
`background.py` without a cycle.
"""
