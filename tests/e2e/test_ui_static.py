"""The web inspector's files as served by a real memproxy (no browser needed).

`/ui` and every file the page loads (followed from index.html through each module's imports)
come back with the right content type, the security and cache headers, ETag revalidation, and
OpenAI-shaped errors for unknown files and wrong methods. The page is static: it holds no key
(the configured client, admin and upstream keys appear in no served byte), has no inline
script, and builds its DOM without HTML strings.
"""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from proxy.ui import CONTENT_TYPES, STATIC_DIR, load_assets

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "sk-client-5d41402abc4b2a76"
ADMIN_KEY = "sk-admin-7d793037a0760186"
UPSTREAM_KEY = "sk-upstream-9e107d9d372bb682"
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"]*?\bfrom\s+["']([^"']+)["']""", re.M)
HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
              "new Function")


class _PageParser(HTMLParser):
    """Collects what index.html loads and anything inline that would run or style."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}=...>")
        if tag == "script":
            self._in_script = True
            if values.get("src"):
                self.loads.append(str(values["src"]))
            else:
                self.inline.append("<script> without src")
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.loads.append(str(values["href"]))
        elif tag == "style":
            self.inline.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script text")


def _media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def _crawl(http: httpx.Client, page_url: str, loads: list[str]) -> dict[str, httpx.Response]:
    """Fetch every file the page loads, following ES module imports; URL path → response."""
    seen: dict[str, httpx.Response] = {}
    queue = [str(httpx.URL(page_url).join(ref)) for ref in loads]
    while queue:
        url = queue.pop()
        path = httpx.URL(url).path
        if path in seen:
            continue
        response = http.get(url)
        seen[path] = response
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        if path.endswith(".js"):
            queue += [str(httpx.URL(url).join(ref)) for ref in IMPORT.findall(response.text)]
    return seen


@pytest.fixture
def proxy(make_proxy):
    return make_proxy({
        "auth": {"keys": {CLIENT_KEY: "acme"}, "admin_keys": [ADMIN_KEY]},
        "upstream": {"api_key": UPSTREAM_KEY},
    })


def test_ui_and_every_file_it_loads_are_served_with_the_right_types(proxy) -> None:
    with proxy.http() as http:
        redirect = http.get("/ui")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == "ui/"  # relative: works under a path prefix

        page = http.get("/ui/")  # no key: the page is static and holds no data
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-content-type-options"] == "nosniff"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "'unsafe-inline'" not in csp

        parser = _PageParser()
        parser.feed(page.text)
        assert parser.inline == [], "index.html must not carry inline script or style"
        assert any(ref.endswith(".js") for ref in parser.loads)
        files = _crawl(http, f"{proxy.url}/ui/", parser.loads)

        # The API itself still wants a key.
        refused = http.get("/v1/agents/someone/context")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"

    served = {path.removeprefix("/ui/static/") for path in files}
    on_disk = set(load_assets())
    assert served == {p for p in on_disk if p != "index.html"}, "a file is unused or missing"
    for path, response in files.items():
        expected = CONTENT_TYPES[Path(path).suffix]
        assert response.headers["content-type"] == expected, path
        assert response.headers["etag"], path
        assert response.headers["cache-control"] == "no-cache", path
    assert _media_type(files["/ui/static/js/app.js"]) == "text/javascript"
    assert _media_type(files["/ui/static/style.css"]) == "text/css"


def test_ui_holds_no_secret_and_builds_no_html_from_strings(proxy) -> None:
    with proxy.http() as http:
        page = http.get("/ui/")
        texts = {"index.html": page.text}
        for name in load_assets():
            texts[name] = http.get(f"/ui/static/{name}").text
    for name, text in texts.items():
        for secret in (CLIENT_KEY, ADMIN_KEY, UPSTREAM_KEY):
            assert secret not in text, f"{name} contains a configured key"
        assert not re.search(r"Bearer\s+[A-Za-z0-9_-]{8,}", text), f"{name} holds a bearer token"
        if name.endswith(".js"):
            for sink in HTML_SINKS:
                assert sink not in text, f"{name} uses {sink}: build DOM nodes with textContent"


def test_ui_revalidation_and_errors(proxy) -> None:
    with proxy.http() as http:
        first = http.get("/ui/static/js/api.js")
        etag = first.headers["etag"]
        again = http.get("/ui/static/js/api.js", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        changed = http.get("/ui/static/js/api.js", headers={"If-None-Match": '"stale"'})
        assert changed.status_code == 200 and changed.content == first.content

        head = http.head("/ui/static/style.css")
        assert head.status_code == 200
        assert head.headers["content-type"] == "text/css; charset=utf-8"

        for path in ("/ui/static/missing.js", "/ui/static/..%2F__init__.py",
                     "/ui/static/js/../../__init__.py", "/ui/static/"):
            missing = http.get(path)
            assert missing.status_code == 404, path
            error = missing.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["code"] == "not_found"

        wrong = http.post("/ui/", content=b"{}")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"


def _package_data_match(name: str, pattern: str) -> bool:
    """setuptools' package-data globs: `*` stays within one directory, `**/` spans any."""
    regex = (re.escape(pattern).replace(r"\*\*/", "(?:.*/)?")
             .replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))
    return re.fullmatch(regex, name) is not None


def test_every_static_file_ships_in_the_wheel() -> None:
    """pyproject's package-data must cover every file the page serves, or a wheel (and the
    Docker image, which installs one) would answer 404 for it."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["proxy.ui"]
    package_dir = STATIC_DIR.parent
    files = [p.relative_to(package_dir).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert "static/index.html" in files
    for name in files:
        assert any(_package_data_match(name, pattern) for pattern in patterns), (
            f"{name} is not in [tool.setuptools.package-data] proxy.ui")
    assert {Path(name).suffix for name in files} <= set(CONTENT_TYPES), "a file type is not served"
    assert not _package_data_match("static/js/views/x.js", "static/js/*.js")  # the matcher
