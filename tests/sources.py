"""Real source servers on 127.0.0.1 that count what they serve, for cache tests and benchmarks.

- :class:`HTTPSource`: the standard library's ``http.server`` serving a directory
  (a Zarr on disk) in a thread, with byte ranges, counting GETs per path.
- :class:`S3Source`: moto's S3 API server (``moto.server.ThreadedMotoServer``) in a
  thread, counting object GETs per key; reached with s3fs.

Both are servers other processes reach over TCP: counts are what the source
really served, whoever asked.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["HTTPSource", "S3Source"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Counts:
    """GETs and bytes served per path, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gets: collections.Counter[str] = collections.Counter()
        self.bytes = 0

    def add(self, path: str, nbytes: int) -> None:
        with self._lock:
            self.gets[path] += 1
            self.bytes += nbytes

    def reset(self) -> None:
        with self._lock:
            self.gets.clear()
            self.bytes = 0

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.gets)


class _Handler(SimpleHTTPRequestHandler):
    """Serves files with ``Range`` support (fsspec's HTTP reads ask for ranges)."""

    counts: _Counts

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def do_GET(self) -> None:
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            super().do_GET()  # an HTML index, which fsspec's HTTP listing reads
            return
        if not os.path.isfile(path):
            self.send_error(404, f"no file {self.path}")
            return
        with open(path, "rb") as f:
            data = f.read()
        start, end = 0, len(data)
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            a, b = match.groups()
            if a:
                start, end = int(a), min(len(data), int(b) + 1 if b else len(data))
            else:
                start = max(0, len(data) - int(b))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:end]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)
        self.counts.add(self.path.split("?", 1)[0].lstrip("/"), len(body))


class _CountedSource:
    """What both sources report: the GETs they served (per path, or ``bucket/key``)."""

    _counts: _Counts

    def gets(self) -> collections.Counter[str]:
        """GETs served per path so far."""
        return self._counts.snapshot()

    @property
    def bytes_served(self) -> int:
        return self._counts.bytes

    def reset(self) -> None:
        self._counts.reset()


class HTTPSource(_CountedSource):
    """An HTTP server of *directory* on 127.0.0.1 (a free port), in a thread.

    Use as a context manager; :attr:`url` is its root, :meth:`gets` the GETs
    per path (relative to the directory) so far.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._counts = _Counts()
        handler = type("Handler", (_Handler,), {"counts": self._counts})
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(handler, directory=str(self.directory))
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HTTPSource:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _CountingApp:
    """WSGI middleware that counts object GETs (``/bucket/key``) and bytes sent."""

    def __init__(self, app: Any, counts: _Counts) -> None:
        self.app = app
        self.counts = counts

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = self.app(environ, start_response)
        path = environ.get("PATH_INFO", "").lstrip("/")
        if (
            environ.get("REQUEST_METHOD") == "GET"
            and "/" in path
            and not environ.get("QUERY_STRING")
        ):
            chunks = list(body)
            self.counts.add(path, sum(len(c) for c in chunks))
            return chunks
        return body


class S3Source(_CountedSource):
    """moto's S3 server on 127.0.0.1 (a free port), in a thread, counting object GETs.

    :attr:`storage_options` are the s3fs options that reach it.
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._counts = _Counts()

    @property
    def endpoint(self) -> str:
        # moto's werkzeug server (get_host_and_port() is not in moto 5.0.0)
        wsgi = self._server._server
        assert wsgi is not None, "start the server first"
        host, port = wsgi.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            "use_listings_cache": False,
        }

    def __enter__(self) -> S3Source:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request else
        self._server.start()
        # The server's WSGI app, wrapped to count what it serves (moto has no log of it).
        wsgi = self._server._server
        assert wsgi is not None
        wsgi.app = _CountingApp(wsgi.app, self._counts)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
