"""HTTP requests that ``websockets`` alone would refuse: methods other than GET, and a body.

The server is ``websockets``' (one port for the page, the websocket and every HTTP endpoint), and
its parser takes a websocket handshake: a GET without a body. WHEP needs POST with an SDP body,
PATCH, DELETE and OPTIONS. ``HttpConnection`` reads such a request's head and body itself, keeps the
method and the body, and hands ``websockets`` the head as a bodiless GET of the same path, which its
``process_request`` hook then answers from ``method`` and ``body`` (never as a websocket: the server
answers every non-GET request itself). GET requests pass through untouched.
"""

from __future__ import annotations

import http
import re

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

MAX_HEAD_BYTES = 16 * 1024  # longer heads are handed on as they are: websockets refuses them
MAX_BODY_BYTES = 64 * 1024  # an SDP offer is a few kB

_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.I | re.M)
_DROPPED = re.compile(rb"^(content-length|transfer-encoding|expect):", re.I)


class HttpConnection(ServerConnection):
    """A websockets server connection that also takes HTTP requests with other methods and a body.

    After the head: ``method`` is the request's own; ``body`` its bytes; ``problem``, when set, an
    HTTP status and reason the request cannot be served for (a body too large, a chunked one).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # websockets' own parameters
        self.method = "GET"
        self.body = b""
        self.problem: tuple[int, str] | None = None
        self._buffer: bytearray | None = bytearray()  # None: handed on, websockets reads what follows
        self._continued = False

    def data_received(self, data: bytes) -> None:
        if self._buffer is None:
            super().data_received(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._hand_on(bytes(self._buffer))
            return
        head, rest = bytes(self._buffer[: end + 4]), bytes(self._buffer[end + 4 :])
        line, _, fields = head[:-4].partition(b"\r\n")
        method, _, target = line.partition(b" ")
        if method == b"GET":
            self._hand_on(bytes(self._buffer))
            return
        found = _LENGTH.search(fields)
        length = int(found.group(1)) if found else 0
        if re.search(rb"^transfer-encoding:", fields, re.I | re.M):
            self.problem = (411, "send the body with a Content-Length (chunked bodies are not taken)")
        elif length > MAX_BODY_BYTES:
            self.problem = (413, f"the body is over {MAX_BODY_BYTES} bytes")
        elif len(rest) < length:
            if not self._continued and re.search(rb"^expect:\s*100-continue", fields, re.I | re.M):
                self._continued = True  # curl waits for this before it sends a body
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        else:
            self.body = rest[:length]
        self.method = method.decode("ascii", "replace")
        kept = [f for f in fields.split(b"\r\n") if not _DROPPED.match(f)]
        self._hand_on(b"\r\n".join([b"GET " + target, *kept]) + b"\r\n\r\n")

    def _hand_on(self, data: bytes) -> None:
        self._buffer = None
        super().data_received(data)


def response(
    status: http.HTTPStatus | int,
    body: str | bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> Response:
    """An HTTP response the server sends: never cached, never sniffed."""
    status = http.HTTPStatus(status)
    data = body.encode() if isinstance(body, str) else body
    fields = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    for name, value in (headers or {}).items():
        fields[name] = value
    return Response(status.value, status.phrase, fields, data)


def redirect(location: str) -> Response:
    return response(http.HTTPStatus.MOVED_PERMANENTLY, f"moved to {location}\n", headers={"Location": location})


__all__ = ["MAX_BODY_BYTES", "HttpConnection", "redirect", "response"]
