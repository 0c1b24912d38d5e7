"""HTTPS and WSS: a server with a certificate from a test CA (trustme) serves the page, the
websocket and the endpoints over TLS only, marks the token cookie Secure and still needs the
token off loopback; the self-signed certificate is made once, cached, covers this machine and
has the fingerprint printed; bad certificates are clear errors."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from websockets.asyncio.client import connect

from streamer.cli import main as cli_main
from streamer.cli import parse_args
from streamer.config import ServerConfig
from streamer.live.pipeline import Pipeline
from streamer.serve.server import StreamServer
from streamer.serve.tls import TlsError, fingerprint, local_names, self_signed
from streamer.sources import open_source

from ..oracle_server import oracle_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def issued(ca: trustme.CA, tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", path)
    response = conn.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return result


def test_everything_is_served_over_tls_only(ca, issued) -> None:
    cert, key = issued

    async def main() -> None:
        async with oracle_server(token="s3cret", tls_cert=cert, tls_key=key) as server:
            assert server.url == f"https://127.0.0.1:{server.port}/?token=s3cret"
            context = client_context(ca)
            status, headers, page = await asyncio.to_thread(https_get, server.port, "/?token=s3cret", context)
            assert status == 200 and b"app.js" in page
            cookie = headers["Set-Cookie"]
            assert "HttpOnly" in cookie and cookie.endswith("; Secure")
            assert (await asyncio.to_thread(https_get, server.port, "/healthz", context))[0] == 401
            status, _, body = await asyncio.to_thread(https_get, server.port, "/healthz?token=s3cret", context)
            assert status == 200 and json.loads(body)["streams"]["cam"]["source_alive"]
            url = f"wss://127.0.0.1:{server.port}/ws?token=s3cret"
            async with connect(url, ssl=context, origin=f"https://127.0.0.1:{server.port}") as ws:
                assert json.loads(await ws.recv())["type"] == "hello"
            # Plain http to the TLS port gets no answer but a failed handshake.
            plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            with pytest.raises((http.client.HTTPException, ConnectionError)):
                await asyncio.to_thread(plain.request, "GET", "/?token=s3cret")
                await asyncio.to_thread(plain.getresponse)
            plain.close()
            # A client that does not trust the certificate is refused.
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.to_thread(https_get, server.port, "/", ssl.create_default_context())

    asyncio.run(main())


def test_a_public_host_with_tls_still_needs_a_token(issued) -> None:
    cert, key = issued

    async def main() -> None:
        pipeline = Pipeline()
        pipeline.add_stream("cam", open_source("synthetic", width=64, height=48), tracker=_NoTracker())
        with pytest.raises(Exception, match="refusing to listen on 0.0.0.0 without --token"):
            StreamServer(pipeline, ServerConfig(host="0.0.0.0", tls_cert=cert, tls_key=key))
        await pipeline.stop()

    asyncio.run(main())


class _NoTracker:
    """Enough of a tracker to hold a stream that is never started."""

    history = 8


def test_self_signed_certificate_is_made_once_and_covers_the_machine(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path / "cache"))
    names = local_names("0.0.0.0")
    assert "localhost" in names and "127.0.0.1" in names
    made = self_signed(names)
    first = made.fingerprint
    assert made.cert.parent == tmp_path / "cache" / "tls"
    assert oct(made.key.stat().st_mode & 0o777) == "0o600"
    again = self_signed(names)
    assert again.fingerprint == first  # reused: a phone that trusted it keeps trusting it
    sans = x509.load_pem_x509_certificate(made.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "localhost" in sans.value.get_values_for_type(x509.DNSName)
    wider = self_signed([*names, "cams.example"])  # a name it does not cover: made anew
    assert wider.fingerprint != first
    assert fingerprint(wider.cert) == wider.fingerprint and len(wider.fingerprint) == 95

    async def main() -> None:
        async with oracle_server(tls_cert=str(wider.cert), tls_key=str(wider.key)) as server:
            context = ssl.create_default_context(cafile=str(wider.cert))  # trusted as a phone would, once
            status, _, _ = await asyncio.to_thread(https_get, server.port, "/", context)
            assert status == 200

    asyncio.run(main())


def test_bad_tls_settings_are_clear_errors(issued, tmp_path, ca, caplog) -> None:
    cert, key = issued
    other = ca.issue_cert("127.0.0.1")
    other_key = tmp_path / "other.key"
    other.private_key_pem.write_to_path(str(other_key))
    pipeline = Pipeline()
    with pytest.raises(TlsError, match="does not exist"):
        StreamServer(pipeline, ServerConfig(tls_cert=str(tmp_path / "nope.pem"), tls_key=key))
    with pytest.raises(TlsError, match="do they match"):
        StreamServer(pipeline, ServerConfig(tls_cert=cert, tls_key=str(other_key)))
    with pytest.raises(ValueError, match="needs both"):
        ServerConfig(tls_cert=cert)
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--tls-cert", cert])
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--tls-self-signed", "--tls-cert", cert, "--tls-key", key])
    argv = ["--source", "synthetic", "--random-weights", "--image-size", "128", "--device", "cpu", "--port", "0"]
    assert cli_main([*argv, "--tls-cert", cert, "--tls-key", str(other_key)]) == 2
    assert "do they match?" in caplog.text


def test_command_line_self_signed_prints_its_fingerprint(tmp_path) -> None:
    """``--tls-self-signed``: the server says https and the certificate's fingerprint, a client
    that trusts that very certificate gets the page, Ctrl-C ends it cleanly."""
    env = {**os.environ, "STREAMER_CACHE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "streamer", "--source", "synthetic", "--random-weights", "--image-size", "128",
               "--device", "cpu", "--port", "0", "--tls-self-signed"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if match := re.search(r"open https://127\.0\.0\.1:(\d+)/", line):
                break
        else:
            raise AssertionError("".join(lines))
        cert = tmp_path / "tls" / "self-signed.pem"
        assert f"SHA-256 fingerprint {fingerprint(cert)}" in "".join(lines)
        context = ssl.create_default_context(cafile=str(cert))
        assert https_get(int(match.group(1)), "/", context)[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
