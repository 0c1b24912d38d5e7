"""WHEP's HTTP side on 127.0.0.1: the offer answered (201, Location, the SDP answer), the session
ended by DELETE, CORS for listed origins only, the token as a bearer, and every malformed request
answered with a status and a reason while the stream goes on. (The video itself reaching a WHEP
player nobody here wrote is tests/serve/test_webrtc.py's browser-whep scenario.)"""

from __future__ import annotations

import asyncio
import http.client
import socket

import pytest
from aiortc import RTCPeerConnection

from streamer import StreamingTracker
from streamer.serve.http import MAX_BODY_BYTES

from .test_server import get, main_stream, running


@pytest.fixture(scope="module")
def tracker() -> StreamingTracker:
    return StreamingTracker.build(random_init=True, image_size=128, device="cpu")


async def offer_sdp(audio: bool = True) -> str:
    """A receive-only offer as WHEP players make it (video, and audio the server has none of)."""
    peer = RTCPeerConnection()
    peer.addTransceiver("video", direction="recvonly")
    if audio:
        peer.addTransceiver("audio", direction="recvonly")
    await peer.setLocalDescription(await peer.createOffer())
    sdp = peer.localDescription.sdp
    await peer.close()
    return sdp


def _request(port: int, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    result = answer.status, dict(answer.getheaders()), answer.read()
    conn.close()
    return result


def exchange(port: int, data: bytes) -> bytes:
    """Raw bytes to the server, and the first of its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(data)
        return raw.recv(200)


async def request(server, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict, bytes]:
    return await asyncio.to_thread(_request, server.port, method, path, body, headers)


def test_an_offer_gets_a_session_and_delete_ends_it(tracker) -> None:
    async def main() -> None:
        async with running(tracker) as server:
            offer = (await offer_sdp()).encode()
            status, headers, body = await request(
                server, "POST", "/whep/main", offer, **{"Content-Type": "application/sdp"}
            )
            assert status == 201, body
            assert headers["Content-Type"] == "application/sdp"
            answer = body.decode()
            assert answer.startswith("v=0") and "m=video" in answer and "a=sendonly" in answer
            # The audio the player offered to receive is refused (this server has none), not an error.
            assert "m=audio 0" in answer or "a=inactive" in answer.split("m=audio")[1], answer
            location = headers["Location"]
            assert location.startswith("/whep/main/") and len(location) > len("/whep/main/") + 10
            assert server.viewers.count("main") == 1
            stream = main_stream(server)
            assert (await get(server, "/healthz"))[2].count(b'"viewers": 1') == 2  # the stream's and the server's
            status, _, _ = await request(server, "DELETE", location)
            assert status == 200
            assert server.viewers.count("main") == 0 and not server.whep.sessions
            assert (await request(server, "DELETE", location))[0] == 404  # gone
            # No trickle ICE: the answer has the candidates.
            status, headers, _ = await request(
                server, "PATCH", location, b"a=candidate", **{"Content-Type": "application/trickle-ice-sdpfrag"}
            )
            assert status == 405
            await asyncio.wait_for(stream.next_output(stream.latest.seq), 10)  # the video goes on

    asyncio.run(main())


def test_bad_requests_say_what_is_wrong(tracker) -> None:
    async def main() -> None:
        async with running(tracker) as server:
            sdp = {"Content-Type": "application/sdp"}
            offer = (await offer_sdp()).encode()
            assert (await request(server, "POST", "/whep/nowhere", offer, **sdp))[0] == 404
            status, _, body = await request(server, "POST", "/whep/main", offer, **{"Content-Type": "text/plain"})
            assert status == 415 and b"application/sdp" in body
            foreign = offer.replace(b"VP8/90000", b"XV8/90000").replace(b"H264/90000", b"XH4/90000")
            status, _, body = await request(server, "POST", "/whep/main", foreign, **sdp)
            assert status == 406 and b"codec" in body, body  # no codec this server sends
            status, _, body = await request(server, "POST", "/whep/main", b"v=0 nonsense", **sdp)
            assert status == 400 and body, body
            status, _, body = await request(server, "POST", "/whep/main", b"\xff\xfe", **sdp)
            assert status == 400 and b"UTF-8" in body
            status, _, body = await request(server, "POST", "/whep/main", b"x" * (MAX_BODY_BYTES + 1), **sdp)
            assert status == 413, body
            status, headers, _ = await request(server, "GET", "/whep/main")
            assert status == 405 and "POST" in headers["Allow"]
            status, _, body = await request(server, "POST", "/healthz", b"{}", **sdp)  # only WHEP takes a POST
            assert status == 405 and b"WHEP" in body
            # Chunked bodies are refused with a reason (not a dropped connection).
            chunked = b"POST /whep/main HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            assert (await asyncio.to_thread(exchange, server.port, chunked)).startswith(b"HTTP/1.1 411")
            # Nothing above made a peer, and the stream and the page still work.
            assert not server.viewers.peers and not server.whep.sessions
            assert (await get(server, "/healthz"))[0] == 200

    asyncio.run(main())


def test_a_body_that_waits_for_100_continue_gets_it(tracker) -> None:
    """curl sends a body of more than 1 kB only after ``100 Continue`` (or a second's wait)."""

    async def main() -> None:
        async with running(tracker) as server:
            offer = (await offer_sdp()).encode()

            def post() -> bytes:
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                    fields = ["Host: x", "Content-Type: application/sdp", f"Content-Length: {len(offer)}"]
                    head = "\r\n".join(["POST /whep/main HTTP/1.1", *fields, "Expect: 100-continue", "", ""])
                    raw.sendall(head.encode())
                    raw.settimeout(0.5)  # much less than curl's own wait
                    interim = raw.recv(100)
                    raw.settimeout(10)
                    raw.sendall(offer)
                    final = b""
                    while b"\r\n\r\n" not in final:
                        final += raw.recv(4096)
                    return interim + final

            answer = await asyncio.to_thread(post)
            assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201"), answer[:80]

    asyncio.run(main())


def test_token_as_bearer_and_origins(tracker) -> None:
    """With a token: refused without it, taken as ``Authorization: Bearer``. A browser's player on
    another page is refused unless its origin is listed; a listed one gets CORS headers and its
    preflight answered (a preflight carries no token)."""

    async def main() -> None:
        listed = "https://dash.example.com"
        async with running(tracker, token="s3cret", whep_origins=[listed]) as server:
            offer = (await offer_sdp()).encode()
            sdp = {"Content-Type": "application/sdp"}
            status, headers, _ = await request(server, "POST", "/whep/main", offer, **sdp)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
            wrong = {**sdp, "Authorization": "Bearer nope"}
            assert (await request(server, "POST", "/whep/main", offer, **wrong))[0] == 401
            bearer = {**sdp, "Authorization": "Bearer s3cret"}
            status, headers, _ = await request(server, "POST", "/whep/main", offer, **bearer)
            assert status == 201 and "Access-Control-Allow-Origin" not in headers  # no Origin: not a browser
            stranger = {**bearer, "Origin": "https://evil.example.net"}
            assert (await request(server, "POST", "/whep/main", offer, **stranger))[0] == 403
            preflight = {"Origin": listed, "Access-Control-Request-Method": "POST"}
            status, headers, _ = await request(server, "OPTIONS", "/whep/main", **preflight)
            assert status == 204 and headers["Access-Control-Allow-Origin"] == listed
            assert "POST" in headers["Access-Control-Allow-Methods"]
            assert "Authorization" in headers["Access-Control-Allow-Headers"]
            status, headers, _ = await request(
                server, "OPTIONS", "/whep/main", **{"Origin": "https://evil.example.net"}
            )
            assert status == 403
            status, headers, _ = await request(server, "POST", "/whep/main", offer, **{**bearer, "Origin": listed})
            assert status == 201 and headers["Access-Control-Allow-Origin"] == listed
            assert "Location" in headers["Access-Control-Expose-Headers"]
            # The token is needed to end a session too.
            assert (await request(server, "DELETE", headers["Location"]))[0] == 401
            assert (await request(server, "DELETE", headers["Location"], Authorization="Bearer s3cret"))[0] == 200
            assert len(server.viewers.peers) == 1  # the first player's session is still there

    asyncio.run(main())
