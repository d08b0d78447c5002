"""The web explorer: ``GET /`` and ``GET /explorer/<file>``, static files shipped in the package.

The page (``serving/explorer/``) is plain HTML, CSS and an ES module: no build step,
no CDN, and it talks to the service only through the public HTTP API. Only the files
named in :data:`FILES` are served, so no request path ever reaches the file system.
They are read once, through ``importlib.resources``, which finds them in an installed
wheel as in the checkout.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from serving.asgi import Request, Response
from serving.errors import ApiError
from serving.service import Service

PREFIX = "/explorer/"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
# No versioned file names (that would need a build step): browsers revalidate each time
# and a 304 answers when the ETag still matches, so a new release is seen at once.
CACHE = "no-cache"
# The page loads nothing from elsewhere and runs no inline script; the samples are PNG
# answers shown as blob: URLs.
POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def load(name: str) -> bytes:
    """One shipped file's bytes (``name`` must be in :data:`FILES`)."""
    return resources.files("serving").joinpath("explorer", name).read_bytes()


def routes(service: Service):
    files = {name: (load(name), media) for name, media in FILES.items()}
    etags = {
        name: '"' + hashlib.sha256(body).hexdigest()[:20] + '"' for name, (body, _) in files.items()
    }

    def serve(name: str, request: Request) -> Response:
        body, media = files[name]
        headers = {
            "cache-control": CACHE,
            "etag": etags[name],
            "x-content-type-options": "nosniff",
            "content-security-policy": POLICY,
        }
        if request.headers.get("if-none-match") == etags[name]:
            return Response(304, b"", media, headers)
        return Response(200, body, media, headers)

    async def index(request: Request) -> Response:
        return serve("index.html", request)

    async def asset(request: Request) -> Response:
        name = request.path[len(PREFIX) :]
        if name not in files:
            shipped = ", ".join(PREFIX + n for n in FILES)
            raise ApiError(404, f"no explorer file {name[:60]!r}; the page ships {shipped}")
        return serve(name, request)

    return [
        ("/", "explorer", index, ("GET",)),
        (PREFIX, "explorer_file", asset, ("GET",)),
    ]
