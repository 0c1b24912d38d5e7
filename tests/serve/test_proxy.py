"""Behind a reverse proxy: Debian's nginx with docs/nginx.conf's location block in front of a
server at the sub-path /cams/ (``--base-path``, ``--trust-proxy``): page, endpoints and
websocket through it; the token and the origin check hold there; forwarded headers are believed
only with --trust-proxy. (Chromium viewing and prompting through nginx: tests/test_webrtc.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.config import ServerConfig
from streamer.live.pipeline import Pipeline
from streamer.serve.server import StreamServer

from ..nginx import Nginx
from ..oracle_server import oracle_server
from .test_server import _get as get


def test_served_at_a_sub_path_through_nginx(tmp_path, caplog) -> None:
    async def main() -> None:
        async with oracle_server(token="s3cret", base_path="/cams/", trust_proxy=True) as server:
            assert server.url == f"http://127.0.0.1:{server.port}/cams/?token=s3cret"
            with Nginx(tmp_path, server.port) as nginx:
                proxy = nginx.port
                status, headers, page = await asyncio.to_thread(get, proxy, "/cams/?token=s3cret")
                assert status == 200 and b"app.js" in page
                # The address viewers use is the proxy's, and the server says so once.
                assert f"viewers reach this server at http://127.0.0.1:{proxy}/cams/" in caplog.text
                assert "Path=/cams/" in headers["Set-Cookie"] and "Secure" not in headers["Set-Cookie"]
                assert (await asyncio.to_thread(get, proxy, "/cams/app.js"))[0] == 401  # the token holds
                status, _, body = await asyncio.to_thread(get, proxy, "/cams/healthz?token=s3cret")
                assert status == 200 and json.loads(body)["streams"]["cam"]["source_alive"]
                for port in (proxy, server.port):  # nginx redirects /cams itself; so does the server
                    status, headers, _ = await asyncio.to_thread(get, port, "/cams?token=s3cret")
                    assert status == 301 and headers["Location"].endswith("/cams/?token=s3cret")
                # The proxy says the browser used https: the cookie is then Secure.
                forwarded = {"X-Forwarded-Proto": "https"}
                _, headers, _ = await asyncio.to_thread(get, server.port, "/cams/?token=s3cret", forwarded)
                assert headers["Set-Cookie"].endswith("; Secure")
                # Outside the sub-path there is nothing, directly or through nginx.
                assert (await asyncio.to_thread(get, server.port, "/healthz?token=s3cret"))[0] == 404
                url = f"ws://127.0.0.1:{proxy}/cams/ws?token=s3cret"
                async with connect(url, origin=f"http://127.0.0.1:{proxy}") as ws:
                    assert json.loads(await ws.recv())["type"] == "hello"
                    await ws.send(json.dumps({"type": "add_box", "id": 1, "obj_id": 3, "box": [0.2, 0.2, 0.6, 0.6]}))
                    while (reply := json.loads(await ws.recv()))["type"] == "state":
                        pass
                    assert reply == {"type": "ack", "id": 1, "stream": "cam", "objects": [3]}
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url, origin="http://evil.example"):
                        pass
                assert refused.value.response.status_code == 403
                # The page's origin is the proxy's: a browser that came straight to the server's
                # port with a proxy's origin is refused too.
                direct = f"ws://127.0.0.1:{server.port}/cams/ws?token=s3cret"
                with pytest.raises(InvalidStatus):
                    async with connect(direct, origin=f"http://127.0.0.1:{proxy}"):
                        pass

    asyncio.run(main())


def test_forwarded_headers_are_ignored_without_trust_proxy() -> None:
    """Anyone can send X-Forwarded-Host: a server not told it is behind a proxy ignores it, so a
    page from another origin cannot pass the origin check by claiming it."""

    async def main() -> None:
        async with oracle_server() as server:
            url = f"ws://127.0.0.1:{server.port}/ws"
            headers = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, origin="http://evil.example", additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
            async with connect(url, origin=f"http://127.0.0.1:{server.port}") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"

    asyncio.run(main())


def test_bad_base_path_is_a_clear_error() -> None:
    with pytest.raises(Exception, match=r"base path '/cams/\?x' must be like /cams/"):
        StreamServer(Pipeline(), ServerConfig(base_path="/cams/?x"))
    assert StreamServer(Pipeline(), ServerConfig(base_path="cams")).base == "/cams/"
