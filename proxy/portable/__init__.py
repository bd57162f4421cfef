"""Agents as documents: the whole agent as one JSON document for export and import
(`document.py`), Letta Agent Files read into the same form (`letta.py`), and the checks and
synthesized turns both share (`rows.py`). See docs/api.md, "Export and import"."""
