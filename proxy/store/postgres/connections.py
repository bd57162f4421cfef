"""How the Postgres store connects: the URL it is given, the settings of every session, and
the connection class of its pool."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg


def split_url(url: str) -> tuple[str, str | None]:
    """(DSN for asyncpg, the `fts` query parameter or None): `?fts=simple` is memproxy's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    fts = [v for k, v in query if k == "fts"]
    rest = urlencode([(k, v) for k, v in query if k != "fts"])
    return urlunsplit(parts._replace(query=rest)), (fts[-1] if fts else None)


# Server settings of every pooled connection, sent in the startup packet (no round trip);
# a key given in the URL's query (`?jit=on`) is the URL's. JIT off: memproxy's queries are
# short index lookups that run in well under a millisecond, so compiling them never pays;
# but when the planner over-estimates (tables without statistics, see statistics.py) a plan
# passes `jit_above_cost` and Postgres compiled `load_turn_state` on every turn, 20-350 ms of
# compiling for 0.2 ms of work (issue 19).
SESSION_SETTINGS = {"application_name": "memproxy", "jit": "off"}


def session_settings(dsn: str) -> dict[str, str]:
    """SESSION_SETTINGS but those the DSN's query sets itself."""
    given = {k for k, _ in parse_qsl(urlsplit(dsn).query, keep_blank_values=True)}
    return {k: v for k, v in SESSION_SETTINGS.items() if k not in given}


class NoResetConnection(asyncpg.Connection):
    """No reset query when a connection goes back to the pool (saves a round trip per call).

    The store keeps no session state (no SET, LISTEN, cursors or session advisory locks);
    asyncpg still rolls back a transaction left open, e.g. by a cancelled call."""

    def get_reset_query(self) -> str:
        return ""
