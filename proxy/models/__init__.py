"""What memproxy knows about the upstream's models: each one's context window (`windows.py`:
settings, the upstream's `/v1/models`, a built-in table) and how the upstream counts its
prompts (`catalog.py`: the calibration learned from reported usage, kept in the store)."""
