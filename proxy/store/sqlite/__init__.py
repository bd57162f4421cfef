"""The SQLite store (`store.SQLiteStore`): one file, WAL, a fast lane on the event loop for a
turn's own statements and a thread lane for everything that can take long.

The default backend: it needs no optional dependency.
"""
