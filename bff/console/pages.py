"""The console's page and its files, served from the package (no build step).

Only the files shipped in ``bff/console/static`` are served, read once at
start; any other name is a 404.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from pagi.errors import ApiError

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def load_files(folder: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """Every servable file of ``folder``: name -> (content, media type)."""
    return {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def build_pages_router() -> APIRouter:
    """``/`` and ``/console`` lead to the page; ``/console/static/NAME`` serves its files."""
    files = load_files()
    page, page_type = files.pop("index.html")
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    @router.get("/console")
    async def console_without_slash() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=308)

    @router.get("/console/")
    async def console_page() -> Response:
        return Response(page, media_type=page_type)

    @router.get("/console/static/{name}")
    async def static_file(
        name: str = PathParam(pattern=r"^[a-z0-9_-]{1,64}\.(js|css|svg)$"),
    ) -> Response:
        found = files.get(name)
        if found is None:
            raise ApiError(404, "not_found", "no such file")
        content, media_type = found
        return Response(content, media_type=media_type)

    return router
