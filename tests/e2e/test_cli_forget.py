"""`memproxy forget`, `forget-log` and `purge` (docs/forgetting.md), local and remote, both
backends, through the same fixture as tests/e2e/test_cli.py."""

from __future__ import annotations

import json

from tests.e2e import test_cli
from tests.e2e.test_cli import Cli

# the fixtures of test_cli.py, registered here as module attributes
cli = test_cli.cli
_clean_environment = test_cli._clean_environment


def test_forget_delete_and_log(cli: Cli):
    cli.chat("ada", "My parrot Quetzalo talks", conversation="pets")
    cli.chat("ada", "The sky is blue", "My parrot Quetzalo sings", conversation="misc")
    refused = cli("forget", "ada", "--query", "Quetzalo", stdin="")
    assert refused.code != 0 and "--yes" in refused.err
    forgot = cli("forget", "ada", "--query", "quetzalo parrot", "--yes")
    assert forgot.code == 0 and "4 messages" in forgot.out, forgot.out
    deleted = cli("forget", "ada", "--conversation", "pets", "--yes", "--json")
    assert json.loads(deleted.out)["removed"]["conversations"] == 1
    missing = cli("forget", "ada", "--conversation", "pets", "--yes")
    assert missing.code != 0 and "no conversation 'pets'" in missing.err
    bad = cli("forget", "ada", "--yes")
    assert bad.code != 0 and "--query" in bad.err
    export = cli("export", "ada")
    assert "quetzalo" not in export.out.lower() and "The sky is blue" in export.out
    log = cli("forget-log", "--agent", "ada", "--json")
    assert [e["kind"] for e in json.loads(log.out)] == ["delete_conversation", "forget"]
    table = cli("forget-log")
    assert table.code == 0 and "delete_conversation" in table.out
    assert cli("purge").code == 0
