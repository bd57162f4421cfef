"""Issue 20 item 5: every recipe of docs/upstreams.md, run.

The recipes' ```toml blocks (and their ```sh environment forms) are read out of the page itself,
so the docs cannot drift from what is tested. Each starts a real memproxy with exactly that
configuration (only the scheme and host of `base_url` are pointed at the scripted upstream; its
path is kept) in front of the scripted upstream made to behave like that server: served under
its URL path only, demanding its authentication (a Bearer key where the server has one, with
that server's 401 shape otherwise), listing its models as it does, and refusing tools the way
it does for a model it serves without them. Through the openai SDK, a fact told in one
conversation must be known in another.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from starlette.responses import JSONResponse

from proxy.config import load_settings
from tests import servers
from tests.conftest import ProxyServer
from tests.fakes.faults import Fault, error_body
from tests.fakes.no_tools import ollama_refusal, refusing_tools
from tests.fakes.scripted_model import scripted_model
from tests.servers import ServerThread

DOC = Path(__file__).resolve().parents[2] / "docs" / "upstreams.md"
KEYS = {"VLLM_API_KEY": "vllm-key-0001", "OPENROUTER_API_KEY": "sk-or-v1-recipe",
        "OPENAI_API_KEY": "sk-recipe-openai", "AZURE_OPENAI_API_KEY": "azure-recipe-key"}


def named_keys(recipe: str) -> dict[str, str]:
    """The environment a recipe's `env:` references read (and nothing else: an
    OPENAI_API_KEY left in the environment would become every upstream's key)."""
    return {k: v for k, v in KEYS.items() if f"env:{k}" in recipe}


def blocks(kind: str, lang: str) -> dict[str, str]:
    """`<!-- KIND: name -->` followed by a fenced LANG block, from docs/upstreams.md."""
    text = DOC.read_text()
    found = re.findall(rf"<!-- {kind}: (\w+) -->\n```{lang}\n(.*?)```", text, re.S)
    return dict(found)


def vllm_refusal(model: str) -> Fault:
    return Fault.http(400, '"auto" tool choice requires --enable-auto-tool-choice and'
                      " --tool-call-parser to be set", type="BadRequestError")


def llamacpp_refusal(model: str) -> Fault:
    return Fault.http(500, "tools param requires --jinja flag", type="server_error")


@dataclass
class Server:
    """How one kind of upstream server answers."""

    prefix: str  # the path its OpenAI API lives under
    key: str | None  # the Bearer key it demands (None: it takes any, or none)
    unauthorized: dict  # its 401 body
    models: list  # its /models listing
    model: str  # a model it serves with tool calling
    no_tools: str | None = None  # a model it serves without, refused as `refusal` says
    refusal: Callable[[str], Fault] = ollama_refusal
    paths: list[str] = field(default_factory=list)


SERVERS = {
    "ollama": Server("/v1", None, {}, ["llama3.1:8b", "gemma3:4b"], "llama3.1:8b",
                     no_tools="gemma3:4b"),
    "vllm": Server("/v1", KEYS["VLLM_API_KEY"], {"error": "Unauthorized"},
                   [{"id": "Qwen/Qwen2.5-7B-Instruct", "max_model_len": 32768},
                    {"id": "meta-llama/Llama-3.1-8B-Instruct", "max_model_len": 32768}],
                   "Qwen/Qwen2.5-7B-Instruct", no_tools="meta-llama/Llama-3.1-8B-Instruct",
                   refusal=vllm_refusal),
    "lmstudio": Server("/v1", None, {}, ["qwen2.5-7b-instruct"], "qwen2.5-7b-instruct"),
    "llamacpp": Server("/v1", None, {}, ["Qwen2.5-7B-Instruct-Q4_K_M.gguf"],
                       "qwen2.5-7b-instruct", no_tools="no-jinja", refusal=llamacpp_refusal),
    "openrouter": Server("/api/v1", KEYS["OPENROUTER_API_KEY"],
                         {"error": {"message": "No auth credentials found", "code": 401}},
                         [{"id": "openai/gpt-4o-mini", "context_length": 128000}],
                         "openai/gpt-4o-mini"),
    "openai": Server("/v1", KEYS["OPENAI_API_KEY"], error_body(
        "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        ["gpt-4o-mini"], "gpt-4o-mini"),
    "azure": Server("/openai/v1", KEYS["AZURE_OPENAI_API_KEY"], {"error": {
        "code": "401", "message": "Access denied due to invalid subscription key or wrong API"
        " endpoint. Make sure to provide a valid key for an active subscription and use a"
        " correct regional API endpoint for your resource."}}, ["chat-4o"], "chat-4o"),
}


class Shaped:
    """The scripted upstream as `server` serves it: only under its path, only with its key."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        server, path = self.server, scope["path"]
        server.paths.append(path)
        if not path.startswith(server.prefix + "/"):
            return await JSONResponse({"error": f"no route {path}"}, 404)(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if server.key is not None and headers.get("authorization") != f"Bearer {server.key}":
            return await JSONResponse(server.unauthorized, 401)(scope, receive, send)
        inner = "/v1" + path[len(server.prefix):]
        await self.app({**scope, "path": inner, "raw_path": inner.encode()}, receive, send)


def responder(server: Server) -> Callable[[dict], Any]:
    memoryless = refusing_tools()  # answers from the system prompt alone

    def respond(body: dict) -> Any:
        if body.get("model") == server.no_tools:
            return server.refusal(server.no_tools) if body.get("tools") else memoryless(body)
        return scripted_model(body)

    return respond


@pytest.fixture
def shaped_upstream(_upstream_server):
    """(start(name) -> (Server, fake, url)): the scripted upstream behind a server's shape."""
    upstream, switch = _upstream_server
    with servers.scripted_upstream(upstream, switch) as fake:
        def start(name: str) -> tuple[Server, Any]:
            server = SERVERS[name]
            server.paths.clear()
            fake.models = server.models
            fake.responder = responder(server)
            switch.target = Shaped(fake.app, server)
            return server, fake
        yield start, upstream.url


def start_memproxy(name: str, root: str, database_url: str, tmp_path: Path) -> ProxyServer:
    """memproxy with the recipe's TOML as its config file, its base_url's path kept."""
    from proxy.app import create_app

    recipe = blocks("recipe", "toml")[name]
    path = urlsplit(tomllib.loads(recipe)["upstream"]["base_url"]).path
    config = tmp_path / f"{name}.toml"
    config.write_text(recipe)
    settings = load_settings(config, environ=named_keys(recipe), overrides={
        "database": {"url": database_url}, "upstream": {"base_url": root + path}})
    proxy = ProxyServer(settings, ServerThread(create_app(settings)))
    proxy.server.start()
    return proxy


def ask(client: openai.OpenAI, model: str, text: str, conversation: str,
        agent: str = "ada") -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}],
        extra_headers={"X-Agent-Id": agent, "X-Conversation-Id": conversation})
    return reply.choices[0].message.content or ""


def test_every_server_has_a_recipe_and_its_environment_form() -> None:
    assert sorted(blocks("recipe", "toml")) == sorted(SERVERS)
    assert sorted(blocks("recipe-env", "sh")) == sorted(SERVERS)


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_the_environment_form_says_what_the_toml_says(name: str, tmp_path: Path) -> None:
    config = tmp_path / "recipe.toml"
    recipe = blocks("recipe", "toml")[name]
    config.write_text(recipe)
    from_file = load_settings(config, environ=named_keys(recipe))
    environ = {}
    for line in blocks("recipe-env", "sh")[name].splitlines():
        var, _, value = line.partition("=")
        environ[var] = KEYS.get(value[1:], value) if value.startswith("$") else value
    if environ.get("OPENAI_API_KEY") == "sk-...":
        environ["OPENAI_API_KEY"] = KEYS["OPENAI_API_KEY"]
    from_env = load_settings(environ=environ)
    assert from_env.upstream.base_url == from_file.upstream.base_url
    assert from_env.upstream.api_key == from_file.upstream.api_key


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_recipe_gives_a_stateful_chat(name, shaped_upstream, database_url, tmp_path):
    start, root = shaped_upstream
    server, fake = start(name)
    proxy = start_memproxy(name, root, database_url, tmp_path)
    try:
        client = proxy.client()
        assert ask(client, server.model, "My name is Ada", "c1") == "Got it, I'll remember that."
        assert ask(client, server.model, "What is my name?", "c2") == "Your name is Ada."
        chats = [r for r in fake.requests]
        assert chats and all(r.json.get("tools") for r in chats)  # the memory loop ran
        assert any(p == f"{server.prefix}/chat/completions" for p in server.paths)
        assert all(p.startswith(server.prefix + "/") for p in server.paths)
        if server.key is not None:  # the recipe's key, as the server wants it
            assert {r.headers.get("authorization") for r in chats} == {f"Bearer {server.key}"}
        if server.no_tools:
            fake.clear()
            # a model served without tool calling: memory in the prompt, recall across chats
            assert ask(client, server.no_tools, "My name is Bea", "c3", "bea")  # no error
            assert ask(client, server.no_tools, "What is my name?", "c4", "bea") == (
                "Your name is Bea.")
            refused = [r for r in fake.requests if r.json.get("tools")]
            configured = name == "ollama"  # [models."gemma3:*"] tools = false
            assert len(refused) == (0 if configured else 1)  # learned once, then never again
    finally:
        proxy.stop()


def test_a_wrong_key_is_the_servers_401_not_a_500(shaped_upstream, database_url, tmp_path):
    start, root = shaped_upstream
    server, _ = start("azure")
    server.key = "another-key"
    try:
        proxy = start_memproxy("azure", root, database_url, tmp_path)
        try:
            with pytest.raises(openai.AuthenticationError) as info:
                ask(proxy.client(), server.model, "hello", "c1")
            assert "Access denied" in str(info.value)
        finally:
            proxy.stop()
    finally:
        server.key = KEYS["AZURE_OPENAI_API_KEY"]
