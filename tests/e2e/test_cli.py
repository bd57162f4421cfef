"""The `memproxy` command end to end, both ways it runs.

- `local`: `main([...])` in this process without `--url`: the app is built in-process on the
  test database (SQLite and Postgres) and called through an ASGI transport, as an admin.
- `remote`: `main([..., "--url", server])` against a real memproxy (`make_proxy`, same database).

Data is seeded through the chat endpoint of the real server with the official SDK, whose model
is the scripted fake upstream. Output is captured with capsys.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from proxy.cli import main
from tests import secrets
from tests.conftest import ProxyServer
from tests.fakes import FakeUpstream
from tests.servers import refusing_port


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs `memproxy ARGV... CONNECTION` and captures what it printed."""

    mode: str
    proxy: ProxyServer
    connection: list[str]
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *argv: str, stdin: str | None = None) -> Result:
        self.capsys.readouterr()
        if stdin is not None:
            import io

            # bytes underneath, as a real stdin has (`memory set -` reads them exactly)
            self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(
                io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
        code = main([*argv, *self.connection])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err, err
        return Result(code, out, err)

    def api_error(self, path: str) -> str:
        """What the server itself says to GET `path` (the CLI must print exactly this)."""
        response = httpx.get(f"{self.proxy.url}{path}", timeout=30)
        assert response.status_code >= 400, response.text
        return f"memproxy: {response.json()['error']['message']}\n"

    def chat(self, agent: str, *texts: str, conversation: str | None = None) -> list[str]:
        """Send each text as one SDK-style request; return the answers."""
        client = self.proxy.client()
        headers = {"X-Agent-Id": agent}
        if conversation:
            headers["X-Conversation-Id"] = conversation
        return [
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                extra_headers=headers).choices[0].message.content
            for text in texts
        ]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MEMPROXY_", "OPENAI_", "EDITOR", "VISUAL")):
            monkeypatch.delenv(name)


@pytest.fixture(params=["local", "remote"])
def cli(request: pytest.FixtureRequest, make_proxy: Callable[..., ProxyServer],
        database_url: str, fake_upstream: FakeUpstream, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    proxy = make_proxy()
    if request.param == "local":
        monkeypatch.setenv("MEMPROXY_UPSTREAM_BASE_URL", fake_upstream.url)
        connection = ["--database-url", database_url]
    else:
        connection = ["--url", proxy.url]
    return Cli(request.param, proxy, connection, capsys, monkeypatch)


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "keys", "migrate", "agents", "memory", "messages", "passages",
                    "export",
                    "import", "load", "chat", "ab"):
        assert f"    {command} " in out, command
    for argv in (["agents", "ls"], ["memory", "edit"], ["load"], ["chat"], ["ab"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--help"])
        assert exit_info.value.code == 0
        assert "--url" in capsys.readouterr().out


def test_agents_ls_show_create_rm(cli: Cli):
    cli.chat("ada", "My name is Ada.", "hello")
    ls = cli("agents", "ls")
    assert ls.code == 0
    header, row = ls.out.splitlines()
    assert header.split() == ["TENANT", "ID", "CONVERSATIONS", "MESSAGES", "PASSAGES", "CREATED"]
    assert row.split()[:5] == ["default", "ada", "1", row.split()[3], "0"]
    assert int(row.split()[3]) >= 4  # two questions, two answers, internal steps
    listed = json.loads(cli("agents", "ls", "--json").out)
    assert [(a["id"], a["tenant"]) for a in listed] == [("ada", "default")]

    show = cli("agents", "show", "ada")
    assert show.code == 0
    assert "agent ada  (tenant default" in show.out
    assert "human  9/5,000 chars" in show.out and "    Name: Ada" in show.out
    assert "conversations:" in show.out and "\ndefault " in show.out
    shown = json.loads(cli("agents", "show", "ada", "--json").out)
    assert [b["label"] for b in shown["blocks"]] == ["persona", "human"]
    assert [c["id"] for c in shown["conversations"]] == ["default"]

    assert cli("agents", "create", "bob").out == "created agent bob (tenant default)\n"
    again = cli("agents", "create", "bob")
    assert again.code == 1 and again.err.startswith("memproxy: ") and again.err.count("\n") == 1

    refused = cli("agents", "rm", "ada")  # stdin is not a terminal: no prompt, no delete
    assert refused.code == 1 and "pass --yes" in refused.err
    assert cli("agents", "rm", "ada", "--yes").out == "deleted agent ada (tenant default)\n"
    assert [a["id"] for a in json.loads(cli("agents", "ls", "--json").out)] == ["bob"]


def test_tenants_for_admins(cli: Cli):
    assert cli("agents", "create", "bob", "--tenant", "team-a").code == 0
    assert "bob" in cli("agents", "ls", "--tenant", "team-a").out
    assert cli("agents", "ls", "--tenant", "team-b").out.endswith("(no agents)\n")
    missing = cli("agents", "show", "bob")
    assert missing.code == 1 and missing.err == cli.api_error("/v1/agents/bob")
    assert cli("agents", "show", "bob", "--tenant", "team-a").code == 0


NOT_FOUND_COMMANDS = [
    ["agents", "show", "ghost"], ["agents", "rm", "ghost", "--yes"],
    ["memory", "show", "ghost"], ["memory", "show", "ghost", "human"],
    ["memory", "set", "ghost", "human", "x"], ["memory", "edit", "ghost", "human"],
    ["memory", "history", "ghost", "human"], ["memory", "undo", "ghost", "human"],
    ["messages", "ghost"], ["messages", "ghost", "--search", "x"], ["export", "ghost"],
    ["load", "ghost", "NOTES"],
]


def test_an_unknown_agent_is_one_line_with_the_apis_message(cli: Cli, tmp_path: Path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nSomething.\n")
    expected = cli.api_error("/v1/agents/ghost")
    for argv in NOT_FOUND_COMMANDS:
        argv = [str(notes) if a == "NOTES" else a for a in argv]
        result = cli(*argv)
        assert (result.code, result.err) == (1, expected), argv


def test_bad_input_is_reported_clearly(cli: Cli, tmp_path: Path):
    bad_id = cli("agents", "show", "no spaces")
    assert bad_id.code == 1 and bad_id.err == cli.api_error("/v1/agents/no%20spaces")
    cli("agents", "create", "ada")
    too_long = cli("memory", "set", "ada", "human", "x" * 6000)
    assert too_long.code == 1 and "5000" in too_long.err and too_long.err.count("\n") == 1
    bad_label = cli("memory", "show", "ada", "nope")
    assert bad_label.code == 1 and bad_label.err == cli.api_error("/v1/agents/ada/blocks/nope")
    with pytest.raises(SystemExit) as exit_info:
        cli("messages", "ada", "--limit", "0")
    assert exit_info.value.code == 2
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    assert "load reads text files" in cli("load", "ada", str(pdf)).err
    notes = tmp_path / "n.txt"
    notes.write_text("text")
    overlap = cli("load", "ada", str(notes), "--chunk-chars", "10", "--overlap", "10")
    assert overlap.code == 2 and "--overlap (10) may be at most a quarter of --chunk-chars" \
        in overlap.err
    assert "cannot read" in cli("import", str(tmp_path / "missing.json")).err
    assert "is not a JSON document" in cli("import", str(notes)).err
    with refusing_port() as port:
        assert main(["agents", "ls", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert cli.capsys.readouterr().err.startswith("memproxy: cannot reach memproxy at http")


def test_memory_show_set_edit_history_undo(cli: Cli, tmp_path: Path):
    cli.chat("ada", "My name is Ada.")
    assert cli("memory", "show", "ada", "human").out == "Name: Ada"  # exactly the value
    every = cli("memory", "show", "ada")
    assert every.out.startswith("persona  0/5,000 chars\n") and "human  9/5,000 chars" in every.out

    assert cli("memory", "set", "ada", "persona", "Cheerful.").out == \
        "saved persona  9/5,000 chars\n"
    assert cli("memory", "set", "ada", "notes", "-", "--limit", "100",
               stdin="from stdin\n").out == "saved notes  11/100 chars\n"
    assert json.loads(cli("memory", "show", "ada", "notes", "--json").out)["value"] == \
        "from stdin\n"

    editor = tmp_path / "editor.py"
    editor.write_text("import sys\npath = sys.argv[1]\ntext = open(path).read()\n"
                      "open(path, 'w').write(text.replace('Ada', 'Ada Lovelace') + '\\n')\n")
    cli.monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    edited = cli("memory", "edit", "ada", "human")
    assert edited.code == 0 and edited.out == "saved human  18/5,000 chars\n"
    assert cli("memory", "show", "ada", "human").out == "Name: Ada Lovelace"
    cli.monkeypatch.setenv("VISUAL", "true")  # VISUAL wins; `true` leaves the file alone
    assert cli("memory", "edit", "ada", "human").out == "human: no change\n"
    cli.monkeypatch.setenv("VISUAL", "false")
    failed = cli("memory", "edit", "ada", "human")
    assert failed.code == 1 and "the editor exited with status 1; nothing saved" in failed.err

    history = cli("memory", "history", "ada", "human")
    lines = history.out.splitlines()
    assert lines[0].split() == ["REVISION", "WHEN", "SOURCE", "CHARS", "NEW", "VALUE"]
    assert [line.split()[3] for line in lines[1:]] == ["api", "tool:core_memory_append"]
    revisions = json.loads(cli("memory", "history", "ada", "human", "--json").out)
    assert revisions[0]["new_value"] == "Name: Ada Lovelace"

    undone = cli("memory", "undo", "ada", "human")
    assert undone.out.startswith("restored human  9/5,000 chars\n    Name: Ada")
    first = revisions[-1]["id"]
    assert "restored human  0/5,000" in cli("memory", "undo", "ada", "human",
                                           "--revision", str(first)).out
    assert cli("memory", "show", "ada", "human").out == ""


def test_messages_mark_memory_steps_and_superseded(cli: Cli):
    cli.chat("ada", "My name is Ada.", "hello")
    client = cli.proxy.client()
    headers = {"X-Agent-Id": "ada", "X-Conversation-Id": "ui"}
    first = [{"role": "user", "content": "first question"}]
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=first,
                                            extra_headers=headers).choices[0].message.content
    history = [*first, {"role": "assistant", "content": answer}]
    for text in ("second question", "edited second question"):  # an edit supersedes
        client.chat.completions.create(
            model="gpt-4o-mini", extra_headers=headers,
            messages=[*history, {"role": "user", "content": text}])

    out = cli("messages", "ada", "-c", "default").out
    assert "user       My name is Ada." in out
    assert "[memory] → core_memory_append(" in out  # the model's internal tool call
    assert "tool       [memory]" in out
    assert "assistant  Got it, I'll remember that." in out
    everything = cli("messages", "ada").out
    assert "── conversation default" in everything and "── conversation ui" in everything
    ui = cli("messages", "ada", "--conversation", "ui").out
    assert "second question" in ui and "[superseded]" not in ui
    with_all = cli("messages", "ada", "--conversation", "ui", "--all").out
    assert "user       [superseded] second question" in with_all
    assert "edited second question" in with_all
    last = json.loads(cli("messages", "ada", "-c", "ui", "--limit", "1", "--json").out)
    assert len(last) == 1 and last[0]["role"] == "assistant"

    hits = cli("messages", "ada", "--search", "Ada").out
    assert hits.startswith("default #") and "(score " in hits
    hits_json = json.loads(cli("messages", "ada", "--search", "question", "--json").out)
    assert hits_json and {h["conversation_id"] for h in hits_json} == {"ui"}
    assert "(no matches)" in cli("messages", "ada", "-c", "ui", "--search", "zebra").out
    # a date window (the REST search's start_date/end_date)
    assert cli("messages", "ada", "--search", "question", "--start-date", "2000-01").out == (
        cli("messages", "ada", "--search", "question").out)
    assert cli("messages", "ada", "--search", "question",
               "--end-date", "1999-12-31").out == "(no matches)\n"
    bad = cli("messages", "ada", "--search", "question", "--end-date", "soon")
    assert bad.code == 1 and bad.err == cli.api_error(
        "/v1/agents/ada/messages?query=question&end_date=soon")
    lone = cli("messages", "ada", "--start-date", "2024")
    assert lone.code == 2 and "--search" in lone.err


def test_export_rm_import_round_trip(cli: Cli, tmp_path: Path):
    cli.chat("ada", "My name is Ada.", "Remember in archive: the key is under the mat")
    before = json.loads(cli("agents", "show", "ada", "--json").out)
    stdout_doc = json.loads(cli("export", "ada").out)
    path = tmp_path / "ada.json"
    exported = cli("export", "ada", "-o", str(path))
    assert exported.out == "" and f"exported agent ada to {path}" in exported.err
    document = json.loads(path.read_text())
    assert document["format"] == "memproxy.agent" and document["passages"]
    assert {k: v for k, v in stdout_doc.items() if k != "exported_at"} == \
        {k: v for k, v in document.items() if k != "exported_at"}

    assert cli("agents", "rm", "ada", "--yes").code == 0
    imported = cli("import", str(path))
    assert imported.code == 0 and imported.out.startswith("imported agent ada (tenant default)")
    after = json.loads(cli("agents", "show", "ada", "--json").out)
    assert after["blocks"] == before["blocks"] and after["stats"] == before["stats"]
    again = json.loads(cli("export", "ada").out)
    assert again["conversations"] == document["conversations"]
    assert again["passages"] == document["passages"]

    conflict = cli("import", str(path))
    assert conflict.code == 1 and conflict.err.count("\n") == 1
    assert cli("import", str(path), "--replace").code == 0
    copy = cli("import", "-", "--id", "ada-copy", stdin=path.read_text())
    assert copy.out.startswith("imported agent ada-copy")


def test_load_files_into_archival_memory(cli: Cli, tmp_path: Path):
    cli("agents", "create", "ada")
    notes = tmp_path / "notes.md"
    sections = [f"## Part {i}\n" + f"Paragraph {i} talks about topic{i} at length. " * 6
                for i in range(6)]
    notes.write_text("# Notes\n\n" + "\n\n".join(sections) + "\n")
    short = tmp_path / "short.txt"
    short.write_text("The wifi password is hunter2.\n")
    loaded = cli("load", "ada", str(notes), str(short), "--chunk-chars", "400",
                 "--overlap", "40", "--tags", "docs, v1")
    assert loaded.code == 0
    counts = dict(line.split(": ", 1) for line in loaded.out.splitlines()[:2])
    chunks = int(counts[str(notes)].split()[0])
    assert chunks > 3 and counts[str(short)].startswith("1 passage (")
    assert loaded.out.splitlines()[-1] == f"loaded {chunks + 1} new passages into agent ada"

    with cli.proxy.http() as http:
        by_file = http.get("/v1/agents/ada/passages",
                           params={"tags": "file:notes.md", "limit": 100}).json()["data"]
        assert len(by_file) == chunks
        assert all(p["tags"] == ["file:notes.md", "docs", "v1"] and len(p["text"]) <= 400
                   for p in by_file)
        hits = http.get("/v1/agents/ada/passages", params={"query": "topic3"}).json()["data"]
        assert hits and "topic3" in hits[0]["text"]
    # the model finds them with its archival search
    answer = cli.chat("ada", "Search archive: wifi password")[0]
    assert "hunter2" in answer


def test_load_waits_out_a_servers_rate_limit(make_proxy, capsys, tmp_path: Path):
    """60 requests per minute: a burst of 64 requests is refused (429, Retry-After) part way;
    the CLI waits as told and stores every passage exactly once."""
    proxy = make_proxy({"limits": {"requests_per_minute": 60},
                        "auth": {"keys": {secrets.TENANT_A_KEY: "team-a"},
                                 "admin_keys": [secrets.ADMIN_KEY]}})
    notes = tmp_path / "many.txt"
    notes.write_text("\n\n".join(f"Fact number {i} is here." for i in range(62)))
    url = ["--url", proxy.url, "--key", secrets.TENANT_A_KEY]
    assert main(["agents", "create", "ada", *url]) == 0
    assert main(["load", "ada", str(notes), "--chunk-chars", "40", "--overlap", "0", *url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "loaded 62 new passages into agent ada"
    with proxy.http(headers={"authorization": f"Bearer {secrets.ADMIN_KEY}"}) as http:
        listed = http.get("/v1/agents/ada/passages",  # the admin key has a bucket of its own
                          params={"limit": 1000, "tenant": "team-a"}).json()
        texts = [p["text"] for p in listed["data"]]
    assert sorted(texts) == sorted(f"Fact number {i} is here." for i in range(62))


def test_local_mode_is_not_rate_limited(database_url, capsys, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("proxy.cli.client.RATE_LIMIT_RETRIES", 0)  # a 429 would fail at once
    config = tmp_path / "memproxy.toml"
    config.write_text("[limits]\nrequests_per_minute = 1\n")
    local = ["--config", str(config), "--database-url", database_url]
    assert main(["migrate", "--database-url", database_url]) == 0  # local mode creates none
    assert main(["agents", "create", "ada", *local]) == 0
    assert main(["memory", "set", "ada", "human", "x", *local]) == 0
    assert main(["agents", "show", "ada", *local]) == 0
    assert "human  1/5,000 chars" in capsys.readouterr().out


def test_chat_reads_stdin_until_eof(cli: Cli, fake_upstream: FakeUpstream):
    from tests.fakes import Fault

    for agent, sdk in (("ada", []), ("bea", ["--no-sdk"])):  # the openai SDK, then httpx
        result = cli("chat", agent, "--model", "gpt-4o-mini", *sdk,
                     stdin="My name is Ada.\n\nWhat is my name?\n")
        assert result.code == 0, result.err
        assert result.out == "Got it, I'll remember that.\nYour name is Ada.\n"
    stopped = cli("chat", "ada", "-c", "other", stdin="hello\n/exit\nnot sent\n")
    assert stopped.out.startswith("Echo: hello") and "not sent" not in stopped.out
    assert fake_upstream.last.json["model"] == "gpt-4o-mini"  # the upstream's first model
    for sdk in ([], ["--no-sdk"]):  # an upstream error ends the turn, not the session
        fake_upstream.push(Fault.http(400, "That model is not allowed.", code="bad_model"))
        failed = cli("chat", "ada", "--model", "gpt-4o-mini", *sdk, stdin="first\nsecond\n")
        assert failed.code == 1 and failed.err == "memproxy: That model is not allowed.\n"
        assert failed.out.startswith("Echo: second (saw ") and failed.out.count("\n") == 1
        fake_upstream.push(Fault.stream_error(after_chunks=2, message="The model stopped."))
        cut = cli("chat", "ada", "--model", "gpt-4o-mini", *sdk, stdin="third\nfourth\n")
        assert cut.code == 1 and cut.err == "memproxy: The model stopped.\n"
        first_line, second_line = cut.out.splitlines()  # the cut answer keeps its own line
        assert "Echo: fourth" in second_line and "fourth" not in first_line
    with cli.proxy.http() as http:
        for agent in ("ada", "bea"):
            assert http.get(f"/v1/agents/{agent}/blocks/human").json()["value"] == "Name: Ada"
        conversations = {c["id"] for c in http.get("/v1/agents/ada/conversations").json()["data"]}
        assert conversations == {"default", "other"}


def test_keys_and_tenants_over_http(make_proxy, capsys):
    proxy = make_proxy({"auth": {"keys": {secrets.TENANT_A_KEY: "team-a"},
                                 "admin_keys": [secrets.ADMIN_KEY]}})
    tenant = ["--url", proxy.url, "--key", secrets.TENANT_A_KEY]
    assert main(["agents", "create", "ada", *tenant]) == 0
    assert main(["agents", "create", "bob", "--url", proxy.url, "--key", secrets.ADMIN_KEY,
                 "--tenant", "team-b"]) == 0
    capsys.readouterr()
    assert main(["agents", "ls", "--json", *tenant]) == 0
    assert [a["id"] for a in json.loads(capsys.readouterr().out)] == ["ada"]
    assert main(["agents", "ls", "--json", "--url", proxy.url, "--key", secrets.ADMIN_KEY]) == 0
    assert {a["id"] for a in json.loads(capsys.readouterr().out)} == {"ada", "bob"}
    assert main(["agents", "ls", "--url", proxy.url]) == 1
    assert "missing API key" in capsys.readouterr().err
    assert main(["agents", "show", "bob", *tenant]) == 1  # another tenant's agent: not found
    assert capsys.readouterr().err == "memproxy: no agent 'bob'\n"


def test_migrate_applies_pending_migrations_once(database_url, capsys):
    from proxy.store.migrations import MIGRATIONS

    latest = max(m.version for m in MIGRATIONS)
    assert main(["migrate", "--database-url", database_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("applied migrations 1 (initial schema)")
    assert out[1] == f"schema version {latest}"
    assert main(["migrate", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == f"no pending migrations\nschema version {latest}\n"
    assert main(["migrate", "--database-url", "mysql://nope"]) == 2
    assert "database.url: unsupported database URL scheme 'mysql'" in capsys.readouterr().err
