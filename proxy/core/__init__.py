"""The pure core: plain functions over plain data, no I/O, tested exhaustively.

Identity (`identity.py`), message hashing (`messages.py`), reconciliation (`reconcile.py`),
prompts and their assembly (`prompts.py`, `context.py`), paging decisions (`paging.py`),
summary prompts (`summary.py`), the memory tools (`tools.py`), reading an upstream answer
(`answers.py`), the completion object (`completions.py`) and the agent loop (`loop.py`, which
talks to the model and the search backend only through the protocols it declares). Nothing here
imports `api/`, `store/`, `upstream/` or `turn/`.
"""
