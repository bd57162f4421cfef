"""The web inspector at `/ui`: static HTML, CSS and ES modules shipped inside the package.

The page holds no data and no secrets: it is the same for every caller, and it reads everything
through the agents REST API (docs/api.md) with the key the operator types in. So these routes
need no authentication, and the files can be served straight from `proxy/ui/static/` (declared
as package data in pyproject.toml so a wheel or the Docker image carries them).

Why a small handler instead of Starlette's StaticFiles: the set of files is fixed and tiny, so
they are read once at start-up into memory with an explicit content type per extension (no
dependence on the host's mimetypes table, no path handling on user input beyond a dict lookup),
an ETag for cheap revalidation, and the same security headers on every answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = "index.html"

CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# Files have unversioned names, so browsers must revalidate (cheap: ETag → 304) rather than
# keep a stale copy after an upgrade.
CACHE_CONTROL = "no-cache"

# Everything comes from this origin; no inline script or style, no framing, no form posts.
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    """One static file, held in memory."""

    body: bytes
    content_type: str
    etag: str


def load_assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file under `directory` with a known extension, keyed by its relative POSIX path."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if not path.is_file() or content_type is None:
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path.relative_to(directory).as_posix()] = Asset(body, content_type, etag)
    return assets


def _serve(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "cache-control": CACHE_CONTROL, "etag": asset.etag}
    match = request.headers.get("if-none-match", "")
    if asset.etag in {tag.strip() for tag in match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def ui_routes(assets: dict[str, Asset] | None = None) -> list[BaseRoute]:
    """The inspector's routes: `/ui` (redirects to `/ui/`), `/ui/` and `/ui/static/{path}`.

    `/ui` redirects with a relative Location so the page's relative links (and its API calls,
    which are relative to the page) keep working behind a reverse proxy that adds a prefix.
    """
    table = load_assets() if assets is None else assets
    if INDEX not in table:
        raise RuntimeError(f"the web inspector's {INDEX} is missing from {STATIC_DIR}")

    async def redirect(request: Request) -> Response:
        return RedirectResponse("ui/", status_code=308, headers={"cache-control": CACHE_CONTROL})

    async def index(request: Request) -> Response:
        return _serve(request, table[INDEX])

    async def static(request: Request) -> Response:
        asset = table.get(request.path_params["path"])
        if asset is None:  # answered like any unknown path, by the app's 404 handler
            raise HTTPException(404)
        return _serve(request, asset)

    return [
        Route("/ui", redirect, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        Route("/ui/static/{path:path}", static, methods=["GET"]),
    ]
