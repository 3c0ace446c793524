"""The console's built files (clients/web, `npm run build`), served from memory.

The build writes into `execplan/console/static/`, which ships as package data. At
start every file there is read once; a request can only ever get one of those files
(no path from a URL touches the disk), and any other path gets `index.html`, since
the app routes in the browser (`/executions/ID` is a page, not a file).

Vite names assets by content hash (`assets/index-3f2a9c.js`): those are cached for
a year; `index.html` is never cached, so a new build is picked up on reload.

A source tree where nobody ran the build has no `static/`: the console then answers
with a page saying how to build it, and the server logs the same once.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
BUILD_HINT = (
    "the web console is not built: run `npm ci --prefix clients/web && "
    "npm run build --prefix clients/web`, then restart the server"
)
# Files a build may contain, and their types (anything else is not served).
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    immutable: bool


class Assets:
    def __init__(self, files: dict[str, Asset]) -> None:
        self._files = files

    @classmethod
    def load(cls, root: Path = STATIC) -> Assets:
        files: dict[str, Asset] = {}
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
                if not path.is_file() or content_type is None:
                    continue
                body = path.read_bytes()
                name = "/" + path.relative_to(root).as_posix()
                files[name] = Asset(
                    body=body,
                    content_type=content_type,
                    etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
                    immutable=name.startswith("/assets/"),
                )
        return cls(files)

    @property
    def built(self) -> bool:
        return "/index.html" in self._files

    def find(self, path: str) -> Asset | None:
        """The file at `path`, `index.html` for app routes; None when not built."""
        asset = self._files.get(path)
        if asset is not None:
            return asset
        if path.startswith("/assets/"):
            return None  # a missing hashed file is a 404, not the app shell
        return self._files.get("/index.html")
