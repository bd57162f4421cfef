"""The raw HTTP/1.1 fast path to the upstream, fenced off from the rest of `upstream/`.

`wire.py` keeps the keep-alive connections and frames requests and responses; `transport.py`
adapts it to httpx (streams, pass-through, model listings); `direct.py` writes a turn's JSON
calls straight onto it, skipping httpx's object layers (docs/benchmarks.md says what that
saves). Only `upstream/client.py` and the app factory (which picks the transport) import it.
"""
