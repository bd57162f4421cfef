"""The CLI's details a newcomer meets first (issue #20, item 6), through the real `memproxy`
process: `python -m proxy ...` as a subprocess, in local mode (`--database-url`) and against a
running server (`--url`), on SQLite and Postgres; `chat` also on a real pseudo-terminal
(tests/terminal.py) with arrow keys typed as the escape sequences a terminal sends.

- `memory show A L` prints the value exactly, so show-then-set leaves the block byte-identical
  (trailing newlines or none, CRLF, unicode, empty);
- `load` refuses an overlap above a quarter of the chunk size, and loading a file again stores
  nothing twice (a changed file replaces its old passages);
- search scores print as a share of the best hit, never `1.12e-06`;
- `chat` edits lines with readline, recalls them from a history file across sessions, restores
  the terminal after Ctrl-C, and with piped input prints the answers alone;
- smaller edges: a missing COMMAND lists the commands, `--url` without a scheme or pointing at
  something that is not a memproxy says so, confirmation prompts go to stderr and take Ctrl-D
  as no.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import secrets
from tests.conftest import ProxyServer
from tests.fakes import FakeUpstream
from tests.servers import _clean_environ
from tests.terminal import CTRL_C, CTRL_D, ENTER, LEFT, UP, Terminal

MODEL = "gpt-4o-mini"


@dataclass
class Memproxy:
    """Runs `python -m proxy ARGV... CONNECTION` as its own process."""

    mode: str
    proxy: ProxyServer
    connection: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "proxy", *argv, *self.connection]

    def environ(self, **extra: str) -> dict[str, str]:
        return _clean_environ({**self.env, **extra})

    def __call__(self, *argv: str, stdin: bytes | str = b"", **env: str
                 ) -> subprocess.CompletedProcess[bytes]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(self.argv(*argv), input=data, env=self.environ(**env),
                              capture_output=True, timeout=120)
        assert b"Traceback" not in done.stderr, done.stderr.decode()
        return done

    def http(self) -> httpx.Client:
        return self.proxy.http()


@pytest.fixture(params=["local", "remote"])
def memproxy(request: pytest.FixtureRequest, make_proxy: Callable[..., ProxyServer],
             database_url: str, fake_upstream: FakeUpstream, tmp_path: Path) -> Memproxy:
    proxy = make_proxy()
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "TERM": "xterm",
           "INPUTRC": "/dev/null", "LANG": "C.UTF-8"}
    if request.param == "local":
        env["MEMPROXY_UPSTREAM_BASE_URL"] = fake_upstream.url
        env["MEMPROXY_UPSTREAM_API_KEY"] = secrets.UPSTREAM_KEY  # else a warning on stderr
        return Memproxy("local", proxy, ["--database-url", database_url], env)
    return Memproxy("remote", proxy, ["--url", proxy.url], env)


# --- memory show / set ----------------------------------------------------------------------

VALUES = {
    "plain": "Name: Ada",
    "newline": "Name: Ada\nLives in Lisbon.\n",
    "blank_tail": "ends with blank lines\n\n\n",
    "crlf": "written on Windows\r\nsecond line\r\n",
    "unicode": "Zoë ✓ 日本語 🙂 — naïve",
    "empty": "",
}


def test_memory_show_then_set_leaves_the_block_byte_identical(memproxy: Memproxy):
    assert memproxy("agents", "create", "ada").returncode == 0
    with memproxy.http() as http:
        for label, value in VALUES.items():
            assert http.put(f"/v1/agents/ada/blocks/{label}", json={"value": value}
                            ).status_code == 200
        for label, value in VALUES.items():
            shown = memproxy("memory", "show", "ada", label)
            assert (shown.returncode, shown.stderr) == (0, b""), label
            assert shown.stdout == value.encode("utf-8"), label  # nothing added or changed
            saved = memproxy("memory", "set", "ada", label, "-", stdin=shown.stdout)
            assert saved.returncode == 0, saved.stderr
            block = http.get(f"/v1/agents/ada/blocks/{label}").json()
            assert block["value"] == value, label
    # a value given on the command line is stored as given too
    assert memproxy("memory", "set", "ada", "plain", "no newline").returncode == 0
    assert memproxy("memory", "show", "ada", "plain").stdout == b"no newline"
    bad = memproxy("memory", "set", "ada", "plain", "-", stdin=b"\xff\xfe latin-1?")
    assert bad.returncode == 2 and bad.stderr.decode().startswith("memproxy: stdin is not UTF-8")


def test_memory_show_at_a_terminal_ends_the_line(memproxy: Memproxy):
    """At a terminal the prompt must not follow the value on its line: the newline goes to
    stderr, so stdout still holds the value alone."""
    memproxy("agents", "create", "ada")
    memproxy("memory", "set", "ada", "human", "Name: Ada")
    with Terminal(memproxy.argv("memory", "show", "ada", "human"), memproxy.environ()) as tty:
        assert tty.wait() == 0
        assert tty.output == b"Name: Ada\r\n"


# --- load -------------------------------------------------------------------------------------

def sections(*topics: str) -> str:
    return "# Handbook\n\n" + "\n\n".join(
        f"## {topic}\n" + f"The {topic} rule is explained here in some detail. " * 5
        for topic in topics) + "\n"


def passages(http: httpx.Client, tag: str = "file:handbook.md") -> list[dict]:
    return http.get("/v1/agents/ada/passages", params={"tags": tag, "limit": 1000}
                    ).json()["data"]


def test_load_refuses_an_overlap_above_the_documented_limit(memproxy: Memproxy, tmp_path):
    memproxy("agents", "create", "ada")
    doc = tmp_path / "handbook.md"
    doc.write_text(sections("parking", "lunch"))
    for overlap in ("101", "399"):
        refused = memproxy("load", "ada", str(doc), "--chunk-chars", "400", "--overlap", overlap)
        assert refused.returncode == 2 and refused.stdout == b""
        assert refused.stderr.decode() == (
            f"memproxy: --overlap ({overlap}) may be at most a quarter of --chunk-chars (400), "
            "i.e. 100\n")
    ok = memproxy("load", "ada", str(doc), "--chunk-chars", "400", "--overlap", "100")
    assert ok.returncode == 0, ok.stderr
    with memproxy.http() as http:
        assert passages(http)
    help_text = memproxy("load", "--help").stdout.decode()
    assert "at most a quarter of --chunk-chars" in " ".join(help_text.split())


def test_loading_a_file_again_stores_nothing_twice(memproxy: Memproxy, tmp_path: Path):
    memproxy("agents", "create", "ada")
    doc = tmp_path / "handbook.md"
    doc.write_text(sections("parking", "lunch", "holidays", "laptops"))
    options = ["--chunk-chars", "400", "--overlap", "40"]
    first = memproxy("load", "ada", str(doc), *options)
    assert first.returncode == 0, first.stderr
    with memproxy.http() as http:
        stored = passages(http)
        count = len(stored)
        assert count > 3
        assert first.stdout.decode().splitlines() == [
            f"{doc}: {count} passages ({len(doc.read_text())} characters; {count} new)",
            f"loaded {count} new passages into agent ada"]

        again = memproxy("load", "ada", str(doc), *options)
        assert again.stdout.decode().splitlines()[-1] == "loaded 0 new passages into agent ada"
        assert f"0 new, {count} unchanged" in again.stdout.decode()
        assert sorted(p["id"] for p in passages(http)) == sorted(p["id"] for p in stored)

        # the file changed: its old passages go, the unchanged ones stay as they were
        doc.write_text(sections("parking", "lunch", "remote work", "laptops"))
        changed = memproxy("load", "ada", str(doc), *options)
        assert changed.returncode == 0, changed.stderr
        now = passages(http)
        texts = [p["text"] for p in now]
        assert not any("holidays" in t for t in texts)
        assert any("remote work" in t for t in texts)
        assert len(set(texts)) == len(texts)
        kept = {p["id"] for p in stored} & {p["id"] for p in now}
        assert kept and any("parking" in p["text"] for p in now if p["id"] in kept)
        removed = len(stored) - len(kept)
        new = len(now) - len(kept)
        assert changed.stdout.decode().splitlines()[-1] == (
            f"loaded {new} new passage{'' if new == 1 else 's'} into agent ada, "
            f"removed {removed} old")
        hits = http.get("/v1/agents/ada/passages", params={"query": "holidays"}).json()
        assert not any("holidays" in p["text"] for p in hits["data"])

        # other tags (or another chunk size) make other passages: the old ones are replaced
        retagged = memproxy("load", "ada", str(doc), *options, "--tags", "hr")
        assert retagged.returncode == 0
        assert {tuple(p["tags"]) for p in passages(http)} == {("file:handbook.md", "hr")}
        assert len(passages(http)) == len(now)
        # the same name from elsewhere is the same document unless named otherwise
        other = tmp_path / "other"
        other.mkdir()
        (other / "handbook.md").write_text("A different handbook.\n")
        both = memproxy("load", "ada", str(doc), str(other / "handbook.md"))
        assert both.returncode == 2 and "two files are named handbook.md" in both.stderr.decode()
        named = memproxy("load", "ada", str(other / "handbook.md"), "--name", "old-handbook.md")
        assert named.returncode == 0 and "(as old-handbook.md)" in named.stdout.decode()
        assert len(passages(http)) == len(now)
        assert [p["text"] for p in passages(http, "file:old-handbook.md")] == [
            "A different handbook."]
        comma = tmp_path / "a,b.md"
        comma.write_text("x")
        refused = memproxy("load", "ada", str(comma))
        assert refused.returncode == 2 and "--name" in refused.stderr.decode()


# --- scores -----------------------------------------------------------------------------------

def test_search_scores_print_as_a_share_of_the_best_hit(memproxy: Memproxy):
    client = memproxy.proxy.client()
    for text in ("the red parrot sings", "a parrot", "parrot parrot red red parrot"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                       extra_headers={"X-Agent-Id": "ada"})
    for argv in (["--search", "red parrot"], ["-c", "default", "--search", "red parrot"]):
        out = memproxy("messages", "ada", *argv).stdout.decode()
        scores = [line.split("(score ", 1)[1].split(")", 1)[0]
                  for line in out.splitlines() if "(score " in line]
        assert scores and scores[0] == "100%", out
        assert all(s.endswith("%") and 0 <= int(s[:-1]) <= 100 for s in scores), out
        assert "e-" not in out
        raw = memproxy("messages", "ada", *argv, "--json").stdout.decode()
        assert '"score"' in raw  # the raw score stays in the JSON


def test_passages_lists_and_searches_archival_memory(memproxy: Memproxy, tmp_path: Path):
    memproxy("agents", "create", "ada")
    doc = tmp_path / "handbook.md"
    doc.write_text(sections("parking", "lunch", "holidays"))
    assert memproxy("load", "ada", str(doc), "--chunk-chars", "400", "--overlap", "0",
                    "--tags", "hr").returncode == 0
    with memproxy.http() as http:
        stored = passages(http)
    listed = memproxy("passages", "ada").stdout.decode().splitlines()
    assert listed[0].split() == ["ID", "CREATED", "TAGS", "TEXT"]
    assert [int(line.split()[0]) for line in listed[1:]] == [p["id"] for p in stored]
    assert all("file:handbook.md,hr" in line for line in listed[1:])
    found = memproxy("passages", "ada", "--search", "holidays rule").stdout.decode()
    header, best, *rest = found.splitlines()
    assert header.split() == ["ID", "SCORE", "CREATED", "TAGS", "TEXT"]
    assert best.split()[1] == "100%" and "holidays" in best
    assert all(line.split()[1].endswith("%") for line in rest) and "e-" not in found
    raw = json.loads(memproxy("passages", "ada", "--search", "holidays", "--json").stdout)
    assert raw and isinstance(raw[0]["score"], float)
    one = memproxy("passages", "ada", "--limit", "1").stdout.decode().splitlines()
    assert len(one) == 3 and one[2] == "(more than 1: raise --limit)"
    assert memproxy("passages", "ada", "--tags", "nope").stdout == (
        b"ID  CREATED  TAGS  TEXT\n(no passages)\n")
    missing = memproxy("passages", "ghost")
    assert missing.returncode == 1 and missing.stderr == b"memproxy: no agent 'ghost'\n"


# --- chat -------------------------------------------------------------------------------------

def user_texts(fake_upstream: FakeUpstream) -> list[str]:
    """What the user said in each turn the model saw: the first call of a turn ends with the
    user's message (later steps of the same turn end with tool results)."""
    return [body["messages"][-1]["content"] for body in fake_upstream.bodies()
            if body["messages"][-1].get("role") == "user"]


def test_chat_edits_and_recalls_lines_at_a_terminal(memproxy: Memproxy,
                                                    fake_upstream: FakeUpstream,
                                                    tmp_path: Path):
    history = tmp_path / "home" / "data" / "memproxy" / "chat_history"
    argv = memproxy.argv("chat", "ada", "--model", MODEL)
    with Terminal(argv, memproxy.environ()) as tty:
        before = tty.settings()
        at = tty.expect("you> ")
        tty.send(b"helo" + LEFT + b"l" + ENTER)  # a typo fixed in place
        at = tty.expect("Echo: hello (saw", after=at)
        at = tty.expect("you> ", after=at)
        tty.send(UP + ENTER)  # the line before, again
        at = tty.expect("Echo: hello (saw", after=at)
        at = tty.expect("you> ", after=at)
        tty.send(UP + b" again" + ENTER)  # recalled, then edited
        at = tty.expect("Echo: hello again", after=at)
        at = tty.expect("you> ", after=at)
        tty.send(b" not kept" + ENTER)  # a leading space: not in the history
        at = tty.expect("Echo: not kept", after=at)
        tty.expect("you> ", after=at)
        tty.send(CTRL_D)
        assert tty.wait() == 0
        assert tty.settings() == before
    assert user_texts(fake_upstream) == ["hello", "hello", "hello again", "not kept"]
    assert not any("\x1b" in text or "^[" in text for text in user_texts(fake_upstream))
    assert history.read_text().splitlines() == ["hello", "hello again"]
    assert history.stat().st_mode & 0o777 == 0o600

    # the next session starts with the history; Ctrl-C leaves the terminal as it was
    with Terminal(argv, memproxy.environ()) as tty:
        before = tty.settings()
        at = tty.expect("you> ")
        tty.send(UP + UP + ENTER)
        at = tty.expect("Echo: hello (saw", after=at)
        tty.expect("you> ", after=at)
        tty.send(CTRL_C)
        assert tty.wait() == 130
        assert tty.settings() == before
        assert b"Traceback" not in tty.output
    assert user_texts(fake_upstream)[-1] == "hello"

    # no history file with --no-history, or an empty $MEMPROXY_CHAT_HISTORY
    history.unlink()
    for options, env in ((["--no-history"], {}), ([], {"MEMPROXY_CHAT_HISTORY": ""})):
        with Terminal([*argv, *options], memproxy.environ(**env)) as tty:
            at = tty.expect("you> ")
            tty.send(b"unrecorded" + ENTER)
            at = tty.expect("you> ", after=tty.expect("Echo: unrecorded", after=at))
            tty.send(UP + ENTER)  # nothing to recall: an empty line, not sent
            # the next prompt first: a Ctrl-D typed between two reads is the terminal's,
            # and lost when readline takes the terminal again
            tty.expect("you> ", after=at)
            tty.send(CTRL_D)
            assert tty.wait() == 0
        assert not history.exists()
    elsewhere = tmp_path / "elsewhere.history"
    with Terminal([*argv, "--history", str(elsewhere)], memproxy.environ()) as tty:
        at = tty.expect("you> ")
        tty.send(b"kept elsewhere" + ENTER)
        tty.expect("you> ", after=tty.expect("Echo: kept elsewhere", after=at))
        tty.send(CTRL_D)
        assert tty.wait() == 0
    assert elsewhere.read_text() == "kept elsewhere\n"


def test_chat_with_piped_input_prints_the_answers_alone(memproxy: Memproxy, tmp_path: Path):
    done = memproxy("chat", "ada", "--model", MODEL, stdin="My name is Ada.\nWhat is my name?\n")
    assert done.returncode == 0
    assert done.stdout == b"Got it, I'll remember that.\nYour name is Ada.\n"
    assert done.stderr == b""  # no prompt, no banner, no escape sequences
    assert not (tmp_path / "home" / "data").exists()  # no history without a terminal


# --- smaller edges --------------------------------------------------------------------------

def run_plain(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *argv], env=_clean_environ({}),
                          capture_output=True, text=True, timeout=60)


def test_a_missing_command_lists_the_commands():
    top = run_plain()
    assert top.returncode == 2 and top.stdout == ""
    assert "    agents " in top.stderr and "    chat " in top.stderr
    assert top.stderr.endswith("memproxy: error: the following arguments are required: COMMAND\n")
    memory = run_plain("memory")
    assert memory.returncode == 2 and "    show " in memory.stderr and "    undo " in memory.stderr


def test_url_mistakes_are_named(fake_upstream: FakeUpstream):
    bare = run_plain("agents", "ls", "--url", "localhost:8080")
    assert (bare.returncode, bare.stderr) == (2, (
        "memproxy: --url must start with http:// or https://, got 'localhost:8080' "
        "(did you mean http://localhost:8080?)\n"))
    root = fake_upstream.url.removesuffix("/v1")  # an OpenAI-compatible server, not memproxy
    other = run_plain("agents", "ls", "--url", root)
    assert other.returncode == 1
    assert other.stderr == (f"memproxy: HTTP 404: Not Found (is {root} a memproxy? --url takes "
                            "the server's root, e.g. http://127.0.0.1:8080)\n")


def test_confirmation_prompts_go_to_stderr_and_ctrl_d_is_no(memproxy: Memproxy, tmp_path: Path):
    memproxy("agents", "create", "ada")
    with Terminal(memproxy.argv("agents", "rm", "ada"), memproxy.environ()) as tty:
        tty.expect("passages? [y/N] ")
        tty.send(CTRL_D)
        assert tty.wait() == 1
        assert tty.output.endswith(b"\r\nmemproxy: not deleted\r\n")
    with Terminal(memproxy.argv("forget", "ada", "--query", "anything"),
                  memproxy.environ()) as tty:
        tty.expect("[y/N] ")
        tty.send(b"n" + ENTER)
        assert tty.wait() == 1 and b"memproxy: nothing forgotten" in tty.output
    log = tmp_path / "rm.log"
    with log.open("wb") as out, Terminal(memproxy.argv("agents", "rm", "ada"),
                                         memproxy.environ(), stdout=out) as tty:
        tty.expect("[y/N] ")  # on the terminal, though stdout is a file
        tty.send(b"y" + ENTER)
        assert tty.wait() == 0
    assert log.read_text() == "deleted agent ada (tenant default)\n"
    with memproxy.http() as http:
        assert http.get("/v1/agents/ada").status_code == 404


def test_chat_at_a_terminal_with_stdout_redirected_keeps_the_prompt_out_of_the_file(
        memproxy: Memproxy, tmp_path: Path):
    log = tmp_path / "answers.txt"
    with log.open("wb") as out, Terminal(memproxy.argv("chat", "ada", "--model", MODEL),
                                         memproxy.environ(), stdout=out) as tty:
        at = tty.expect("you> ")  # on the terminal (stderr)
        tty.send(b"hello" + ENTER)
        tty.expect("you> ", after=at)  # the next prompt: the answer is written
        tty.send(CTRL_D)
        assert tty.wait() == 0
    assert log.read_text() == "Echo: hello (saw 1 user messages)\n"


def test_chat_goes_on_when_the_history_file_cannot_be_used(memproxy: Memproxy,
                                                            tmp_path: Path):
    unusable = tmp_path / "a-directory"
    unusable.mkdir()
    argv = memproxy.argv("chat", "ada", "--model", MODEL, "--history", str(unusable))
    with Terminal(argv, memproxy.environ()) as tty:
        at = tty.expect(f"memproxy: warning: cannot read the chat history {unusable}: "
                        "Is a directory; lines are not kept")
        at = tty.expect("you> ", after=at)
        tty.send(b"helo" + LEFT + b"l" + ENTER)  # line editing works without a file
        tty.expect("you> ", after=tty.expect("Echo: hello (saw", after=at))
        tty.send(CTRL_D)
        assert tty.wait() == 0
        assert tty.output.count(b"warning") == 1


def test_import_from_an_empty_stdin_says_so(memproxy: Memproxy):
    empty = memproxy("import", "-", stdin=b"")
    assert empty.returncode == 1
    assert empty.stderr.decode().startswith(
        "memproxy: stdin is not a JSON document (it is empty): ")
