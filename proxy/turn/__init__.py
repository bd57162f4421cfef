"""One stateful turn, in the order of its effects (docs/architecture.md, "A stateful turn").

- `service.py`: `StatefulService.start`: lock, state, replay, input, prepare;
- `request.py`: what a turn is asked (`TurnRequest`) and a retry's answer (`Replay`);
- `input.py`: reconcile the client's messages (pure `plan_input`) and store them;
- `window.py` and `ledger.py`: the prompt's budget, page-outs and summaries (`summarizer.py`);
- `session.py`: the running turn: stream the loop's events, store the outcome;
- `observers.py`: what follows a stored turn (embeddings, metrics, the head, the catalog);
- `locks.py`, `context_cache.py`: one turn at a time per conversation; known contexts;
- `report.py`: the `/context` report, from the same ledger.
"""

from .request import Replay, TurnRequest
from .service import StatefulService
from .session import TurnSession

__all__ = ["Replay", "StatefulService", "TurnRequest", "TurnSession"]
