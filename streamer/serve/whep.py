"""WHEP (the WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep): any WHEP player watches a masked
stream without our page, as it would watch mediamtx or a CDN.

``POST /whep/STREAM`` with an SDP offer (``application/sdp``) answers with ``201 Created``, the
answer and a ``Location`` naming the session; ``DELETE`` on that location ends it. The answer holds
every candidate of the server (aiortc gathers them before it answers), so there is no trickle ICE:
``PATCH`` is ``405``, as the draft says for a server without it. A session is a viewer like the
page's: the same encoded stream, the same cap on peers, the same ICE servers (also sent as the
draft's ``Link: rel="ice-server"`` headers). The token works as for the page (``?token=``, the
cookie) and as a bearer token (``Authorization: Bearer``), the way WHEP players send it. Browsers'
players on another web page need that page's origin in ``server.whep_origins`` (CORS, answered to
their ``OPTIONS`` preflight); players outside a browser send no ``Origin`` and need nothing.
"""

from __future__ import annotations

import http
import logging
import re
import secrets
import urllib.parse
from dataclasses import dataclass

from aiortc import RTCPeerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from ..errors import StreamerError
from .http import response
from .webrtc import NoCodecError, OfferError, TooManyViewersError, Viewers

logger = logging.getLogger(__name__)

_PATH = re.compile(r"/whep/(?P<stream>[^/]+)(?:/(?P<session>[A-Za-z0-9_-]+))?/?")
_CORS_METHODS = "POST, DELETE, PATCH, OPTIONS"


def is_whep(path: str) -> bool:
    """Whether ``path`` (below the server's base) is a WHEP endpoint or session."""
    return _PATH.fullmatch(path) is not None


@dataclass(frozen=True)
class WhepRequest:
    method: str
    path: str  # below the server's base path, e.g. /whep/main
    headers: Headers
    body: bytes
    own_origin: str  # the server's origin as the client sees it, e.g. https://cams.example.com
    authorised: bool  # the token, when one is set, was given


class Whep:
    """The WHEP endpoints of one server: one per stream, and one resource per session."""

    def __init__(self, viewers: Viewers, base: str, origins: list[str]) -> None:
        self.viewers, self.base, self.origins = viewers, base, origins
        self.sessions: dict[str, RTCPeerConnection] = {}

    async def handle(self, request: WhepRequest) -> Response:
        found = _PATH.fullmatch(request.path)
        assert found is not None, "check is_whep first"
        stream, session = urllib.parse.unquote(found["stream"]), found["session"]
        origin = request.headers.get("Origin")
        allowed = origin is None or origin == request.own_origin or "*" in self.origins or origin in self.origins
        cors = self._cors(origin) if allowed and origin not in (None, request.own_origin) else {}
        if request.method == "OPTIONS":  # a browser's preflight carries no credentials: answer it first
            if not allowed:
                return response(http.HTTPStatus.FORBIDDEN, _not_allowed(origin))
            preflight = {
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Max-Age": "600",
            }
            return response(http.HTTPStatus.NO_CONTENT, headers={**cors, **preflight, "Allow": _CORS_METHODS})
        if not allowed:
            return response(http.HTTPStatus.FORBIDDEN, _not_allowed(origin))
        if not request.authorised:
            missing = "missing or wrong token: send it as Authorization: Bearer TOKEN (or ?token=)\n"
            return response(http.HTTPStatus.UNAUTHORIZED, missing, headers={**cors, "WWW-Authenticate": "Bearer"})
        if session is None and request.method == "POST":
            return await self._offer(stream, request, cors)
        if session is not None and request.method == "DELETE":
            return await self._end(stream, session, cors)
        if session is not None and request.method == "PATCH":
            text = "this server sends every candidate in its answer: no trickle ICE, no ICE restart\n"
            return response(http.HTTPStatus.METHOD_NOT_ALLOWED, text, headers={**cors, "Allow": "DELETE"})
        allow = "POST, OPTIONS" if session is None else "DELETE, OPTIONS"
        text = f"{request.method} is not a WHEP request here: {allow}\n"
        return response(http.HTTPStatus.METHOD_NOT_ALLOWED, text, headers={**cors, "Allow": allow})

    async def close_all(self) -> None:
        """Forget the sessions (their peers close with the server's viewers)."""
        self.sessions.clear()

    async def _offer(self, stream: str, request: WhepRequest, cors: dict[str, str]) -> Response:
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/sdp":
            text = f"send the SDP offer as Content-Type: application/sdp (got {kind or 'none'})\n"
            return response(http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE, text, headers=cors)
        self._forget_closed()
        try:
            offer = request.body.decode("utf-8")
            if "m=video" not in offer:
                raise OfferError("the offer has no video: WHEP here sends a stream's video")
            peer, answer = await self.viewers.answer(offer, stream, receive_only=True)
        except UnicodeDecodeError:
            return response(http.HTTPStatus.BAD_REQUEST, "the offer is not UTF-8 text\n", headers=cors)
        except StreamerError as exc:
            return response(_status(exc), f"{exc}\n", headers=cors)
        session = secrets.token_urlsafe(16)
        self.sessions[session] = peer
        location = f"{self.base}whep/{urllib.parse.quote(stream, safe='')}/{session}"
        headers = {**cors, "Location": location, "ETag": f'"{session}"'}
        links = self._ice_links()
        if links:
            headers["Link"] = ", ".join(links)
        logger.info("%s: a WHEP player joined (%d watching over WHEP)", stream, len(self.sessions))
        return response(http.HTTPStatus.CREATED, answer, "application/sdp", headers)

    async def _end(self, stream: str, session: str, cors: dict[str, str]) -> Response:
        peer = self.sessions.pop(session, None)
        if peer is None:
            return response(http.HTTPStatus.NOT_FOUND, f"no WHEP session {session} on {stream!r}\n", headers=cors)
        await self.viewers.close(peer)
        return response(http.HTTPStatus.OK, headers=cors)

    def _forget_closed(self) -> None:
        """Sessions whose peer has gone (failed, or closed with its stream) are no longer resources."""
        for session, peer in list(self.sessions.items()):
            if peer not in self.viewers.peers:
                del self.sessions[session]

    def _ice_links(self) -> list[str]:
        links = []
        for server in self.viewers.ice.servers:
            for url in server.urls:
                link = f'<{url}>; rel="ice-server"'
                if server.username:
                    link += (
                        f'; username="{server.username}"; credential="{server.credential}"; credential-type="password"'
                    )
                links.append(link)
        return links

    def _cors(self, origin: str | None) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": origin or "*",
            "Access-Control-Expose-Headers": "Location, Link, ETag",
            "Vary": "Origin",
        }


def _status(exc: StreamerError) -> http.HTTPStatus:
    if exc.code == "unknown_stream":
        return http.HTTPStatus.NOT_FOUND
    if isinstance(exc, TooManyViewersError):
        return http.HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(exc, NoCodecError):
        return http.HTTPStatus.NOT_ACCEPTABLE
    return http.HTTPStatus.BAD_REQUEST


def _not_allowed(origin: str | None) -> str:
    return f"pages from {origin} may not watch here: add it to server.whep_origins (--whep-origin)\n"


__all__ = ["Whep", "WhepRequest", "is_whep"]
