"""One server, one port: the viewer page and its files, /healthz, /metrics, /results, and the
websocket that carries prompts, state, results and the WebRTC offer/answer.

The ``websockets`` server answers plain HTTP through its ``process_request`` hook, so no second web
framework is needed: ``http.py`` lets it take the other methods and bodies that WHEP (``whep.py``)
needs. Secure by default: loopback unless told otherwise, https and wss when given
a certificate (``tls.py``), a token on everything when one is set (query ``?token=`` or the cookie
the page sets), websocket ``Origin`` checked against the served host, only files under ``web/``
served, message size and rate capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import ipaddress
import json
import logging
import mimetypes
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..assets import WEB_DIR
from ..concurrency.waits import stop_tasks
from ..config import MASK_FORMATS, ServerConfig
from ..errors import StreamerError
from ..live.serving import Serving
from .http import HttpConnection, redirect, response
from .protocol import (
    MAX_MESSAGE_BYTES,
    ProtocolError,
    encode,
    error_reply,
)
from .session import Session, rounded
from .tls import server_context
from .webrtc import Viewers
from .whep import Whep, WhepRequest, is_whep

if TYPE_CHECKING:
    from ..video.recordings import RecordingStore

logger = logging.getLogger(__name__)

COOKIE = "streamer_token"
CLOSE_TIMEOUT_S = 2.0
MAX_PUBLIC_URLS = 8


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StreamServer:
    """Serves every stream of one pipeline (local, or a cluster's front) to any number of viewers."""

    def __init__(
        self,
        pipeline: Serving,
        config: ServerConfig,
        web_dir: Path = WEB_DIR,
        recordings: RecordingStore | None = None,
    ) -> None:
        if not is_loopback(config.host) and not config.token and not config.insecure:
            raise StreamerError(
                f"refusing to listen on {config.host} without --token: anyone on the network could "
                "watch and control the stream. Pass --token SECRET (or --insecure if you really mean it)."
            )
        self.tls = None
        if config.tls_cert is not None and config.tls_key is not None:  # ServerConfig has both or neither
            self.tls = server_context(config.tls_cert, config.tls_key)
        self.base = "/" + config.base_path.strip("/") + "/" if config.base_path.strip("/") else "/"
        if not re.fullmatch(r"/([A-Za-z0-9._~-]+/)*", self.base):
            raise StreamerError(
                f"base path {config.base_path!r} must be like /cams/ (letters, digits, '.', '_', '-', '~')"
            )
        self.pipeline, self.config, self.web_dir = pipeline, config, web_dir.resolve()
        self.recordings = recordings
        self._public: set[tuple[str, str]] = set()  # proxied addresses already logged
        self.viewers = Viewers(pipeline, config.max_peers, config.ice)
        self.whep = Whep(self.viewers, self.base, config.whep_origins)
        self.connections: set[ServerConnection] = set()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        pipeline.on_error = self._broadcast_error

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        query = f"?token={urllib.parse.quote(self.config.token)}" if self.config.token else ""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{self.base}{query}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            create_connection=HttpConnection,  # also POST, PATCH, DELETE, OPTIONS (WHEP)
            ssl=self.tls,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            # Also how long shutdown waits on a half-closed HTTP connection (Chromium keeps the one
            # for a 404 favicon open): the default 10 s held Ctrl-C up.
            close_timeout=CLOSE_TIMEOUT_S,
        )

    async def stop(self) -> None:
        """Stop accepting, close websockets and peers, in that order."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.whep.close_all()
        await self.viewers.close_all()

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        method = connection.method if isinstance(connection, HttpConnection) else "GET"
        if isinstance(connection, HttpConnection) and connection.problem is not None:
            return response(connection.problem[0], connection.problem[1] + "\n")
        url = urllib.parse.urlsplit(request.path)
        if url.path == self.base.rstrip("/") and self.base != "/":  # /cams: the page's URLs are relative
            return redirect(self.base + (f"?{url.query}" if url.query else ""))
        if not url.path.startswith(self.base):
            return response(http.HTTPStatus.NOT_FOUND, f"not found: this server is at {self.base}\n")
        path = "/" + url.path[len(self.base) :]
        query = urllib.parse.parse_qs(url.query)
        scheme, host = self._seen_as(request.headers)
        authorised = self._authorised(request.headers, query)
        if is_whep(path):
            assert isinstance(connection, HttpConnection)  # the server makes only these
            whep = WhepRequest(method, path, request.headers, connection.body, f"{scheme}://{host}", authorised)
            return await self.whep.handle(whep)
        if method != "GET":
            text = f"{method} is not served here (only WHEP, at {self.base}whep/STREAM, takes other methods)\n"
            return response(http.HTTPStatus.METHOD_NOT_ALLOWED, text, headers={"Allow": "GET"})
        if not authorised:
            return response(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token: open the URL the server printed\n")
        if path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin)[:2] != (scheme, host):
                return response(http.HTTPStatus.FORBIDDEN, "websocket origin does not match this server\n")
            return None  # go on with the websocket handshake
        if path == "/healthz":
            return response(http.HTTPStatus.OK, json.dumps(self.health()), "application/json")
        if path == "/metrics":
            return response(http.HTTPStatus.OK, self.pipeline.metrics.render(), "text/plain; version=0.0.4")
        if path == "/results":
            return await self._results(query)
        if path == "/recordings" or path.startswith("/recordings/"):
            return await self._recording(path.removeprefix("/recordings").strip("/"), query, request.headers)
        page = self._static(path)
        if page.status_code == 200 and path in ("/", "/index.html"):
            self._note_public_url(scheme, host)
            if self.config.token:
                secure = "; Secure" if scheme == "https" else ""  # never sent back over plain http
                cookie = f"{COOKIE}={self.config.token}; HttpOnly; SameSite=Strict; Path={self.base}{secure}"
                page.headers["Set-Cookie"] = cookie
        return page

    def _note_public_url(self, scheme: str, host: str) -> None:
        """Behind a proxy, say once per address where viewers actually reach the server (what
        the startup line cannot know); at most a few, whatever clients claim."""
        if self.config.trust_proxy and (scheme, host) not in self._public and len(self._public) < MAX_PUBLIC_URLS:
            self._public.add((scheme, host))
            logger.info("viewers reach this server at %s://%s%s", scheme, host, self.base)

    def _seen_as(self, headers: Headers) -> tuple[str, str]:
        """The scheme and host the browser used: this server's own, or, with ``trust_proxy``, what
        the proxy says in X-Forwarded-Proto and X-Forwarded-Host (never trusted otherwise: anyone
        could send them)."""
        scheme, host = ("https" if self.tls else "http"), headers.get("Host", "")
        if self.config.trust_proxy:
            scheme = headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip().lower()
            host = headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return scheme, host

    def _authorised(self, headers: Headers, query: dict[str, list[str]]) -> bool:
        if not self.config.token:
            return True
        offered = query.get("token", [""])[0]
        scheme, _, bearer = headers.get("Authorization", "").partition(" ")
        if not offered and scheme.lower() == "bearer":  # how WHEP players send a token
            offered = bearer.strip()
        if not offered:
            for part in headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    offered = value
        return hmac.compare_digest(offered.encode(), self.config.token.encode())

    def _static(self, path: str) -> Response:
        relative = urllib.parse.unquote(path).lstrip("/") or "index.html"
        target = (self.web_dir / relative).resolve()
        if not target.is_relative_to(self.web_dir) or not target.is_file():
            return response(http.HTTPStatus.NOT_FOUND, "not found\n")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return response(http.HTTPStatus.OK, target.read_bytes(), kind)

    async def _results(self, query: dict[str, list[str]]) -> Response:
        """The newest results of ``?stream=NAME`` (default: the first stream), ``&masks=rle|polygon``."""
        masks = query.get("masks", ["none"])[0]
        try:
            if masks not in MASK_FORMATS:
                raise ProtocolError("bad_field", f"masks must be one of {', '.join(MASK_FORMATS)}")
            stream = self.pipeline.stream(query.get("stream", [None])[0])
        except StreamerError as exc:
            status = http.HTTPStatus.NOT_FOUND if exc.code == "unknown_stream" else http.HTTPStatus.BAD_REQUEST
            return response(status, error_reply(exc), "application/json")
        text = await self.pipeline.hub.snapshot(stream.name, masks)
        if text is None:
            missing = ProtocolError("no_frame", f"stream {stream.name!r} has no tracked frame yet")
            return response(http.HTTPStatus.NOT_FOUND, error_reply(missing), "application/json")
        return response(http.HTTPStatus.OK, text, "application/json")

    async def _recording(self, name: str, query: dict[str, list[str]], headers: Headers) -> Response:
        """``/recordings`` (``?stream=NAME``): the finished recordings, newest first;
        ``/recordings/NAME.mp4`` or ``.json``: one of their files (byte ranges for a player's seeks)."""
        if self.recordings is None:
            return response(http.HTTPStatus.NOT_FOUND, "recordings are off: start with --record DIR\n")
        store = self.recordings
        if not name:
            listing = await asyncio.to_thread(store.listing, query.get("stream", [None])[0])
            return response(http.HTTPStatus.OK, json.dumps({"recordings": listing}), "application/json")
        path = store.file(urllib.parse.unquote(name))
        if path is None:
            return response(http.HTTPStatus.NOT_FOUND, "no such recording\n")
        kind = "video/mp4" if path.suffix == ".mp4" else "application/json"
        try:
            size = path.stat().st_size
            wanted = _byte_range(headers.get("Range"), size)
            if wanted is None:
                return response(
                    http.HTTPStatus.OK, await asyncio.to_thread(path.read_bytes), kind, {"Accept-Ranges": "bytes"}
                )
            first, last = wanted
            data = await asyncio.to_thread(_read_range, path, first, last)
        except OSError:  # deleted meanwhile (the folder's bounds)
            return response(http.HTTPStatus.NOT_FOUND, "no such recording\n")
        except ValueError:
            unsatisfiable = {"Content-Range": f"bytes */{size}"}
            return response(http.HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "bad range\n", headers=unsatisfiable)
        ranged = {"Accept-Ranges": "bytes", "Content-Range": f"bytes {first}-{last}/{size}"}
        return response(http.HTTPStatus.PARTIAL_CONTENT, data, kind, ranged)

    def health(self) -> dict:
        streams = {}
        for name, stream in self.pipeline.streams.items():
            status = stream.status()
            streams[name] = {
                "source_alive": status.source_alive,
                "reconnecting": status.reconnecting,
                "source": status.source,
                "video_fps": round(status.video_fps, 2),
                "mask_fps": round(status.mask_fps, 2),
                "mask_age_ms": rounded(status.mask_age_ms),
                "source_fps": round(status.source_fps, 2),
                "latency_ms": {"p50": status.latency_p50, "p90": status.latency_p90},
                "viewers": self.viewers.count(name),
                "objects": status.objects,
                "labels": status.labels,
                "auto": status.auto,
                "last_error": status.last_error,
                "placement": status.placement,
                "worker": status.worker,
                "restream": status.restream,
            }
        where = self.pipeline.describe()  # e.g. the cluster, which has an ok of its own
        running = all(s["source_alive"] and s["placement"] in ("local", "running") for s in streams.values())
        return {
            "ok": running and all(part.get("ok", True) for part in where.values()),
            "model": self.pipeline.model,
            "streams": streams,
            "viewers": len(self.viewers.peers),
            "connections": len(self.connections),
            **where,
        }

    # -- websocket ----------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        """One websocket: its session answers, this reads and writes the socket."""
        self.connections.add(ws)
        session = Session(self.pipeline, self.viewers, self.config, ws.send)
        pusher = asyncio.create_task(self._push_state(ws, session), name="state pusher")
        try:
            await ws.send(session.hello())
            async for raw in ws:
                await ws.send(await session.reply(raw))
                session.replied()
        except ConnectionClosed:
            pass
        finally:
            await stop_tasks(pusher, what="state pusher")
            await session.close()
            self.connections.discard(ws)

    async def _push_state(self, ws: ServerConnection, session: Session) -> None:
        failed = False
        while True:
            await asyncio.sleep(self.config.state_interval)
            try:
                await ws.send(session.status())
            except ConnectionClosed:
                return
            except Exception:  # a bug: said once per viewer; the next state may get through
                if not failed:
                    logger.exception("a viewer's state failed; trying again every %g s", self.config.state_interval)
                failed = True

    def _broadcast_error(self, stream: str, code: str, message: str) -> None:
        """Called from the tracker thread: hand the message to the event loop."""
        if self._loop is None:
            return
        text = encode("error", id=None, stream=stream, code=code, message=message)
        for ws in list(self.connections):
            asyncio.run_coroutine_threadsafe(_send_quietly(ws, text), self._loop)


async def _send_quietly(ws: ServerConnection, text: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(text)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range of ``Range: bytes=A-B`` (or ``A-``, ``-N``) as (first, last), inclusive; None
    without the header or for several ranges (the whole file is sent); ValueError if unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    start, _, end = header.removeprefix("bytes=").strip().partition("-")
    if not start:  # the last N bytes
        if not end.isdigit():
            raise ValueError(header)
        first, last = max(size - int(end), 0), size - 1
    elif start.isdigit() and (not end or end.isdigit()):
        first, last = int(start), min(int(end) if end else size - 1, size - 1)
    else:
        raise ValueError(header)
    if first > last or first >= size:
        raise ValueError(header)
    return first, last


def _read_range(path: Path, first: int, last: int) -> bytes:
    with path.open("rb") as f:
        f.seek(first)
        return f.read(last - first + 1)
