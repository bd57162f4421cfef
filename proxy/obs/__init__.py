"""Observability and process upkeep: the log format with a request id on every record and keys
redacted (`logs.py`), Prometheus metrics (`metrics.py`), garbage-collector tuning after
start-up (`gc_tuning.py`). See docs/operations.md."""
