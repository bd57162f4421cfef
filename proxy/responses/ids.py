"""Object ids in OpenAI's shape: a type prefix, an underscore, random hex.

`resp_…` responses, `msg_…` messages, `fc_…` function calls, `fco_…` their outputs, `rs_…`
reasoning items, `conv_…` conversations. The hex comes from `secrets` (48 characters), so ids
are unguessable as well as unique: a response id is all a client needs to read a stored response
of its tenant.
"""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """`prefix` + "_" + 48 random hex characters."""
    return f"{prefix}_{secrets.token_hex(24)}"
