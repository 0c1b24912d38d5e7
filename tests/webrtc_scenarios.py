"""WebRTC scenarios, run inside ../shared/tools/isolated-net (WebRTC finds no ICE candidates on
loopback alone; the namespace adds a private veth pair whose traffic never leaves it).

    isolated-net python tests/webrtc_scenarios.py SCENARIO [PNG]

SCENARIO: viewers, browser, browser-camera, browser-camera-tls, browser-turn, browser-proxy,
browser-phone, browser-restart, browser-streams, browser-cluster, browser-whep.

Each prints one JSON line of measurements that tests/test_webrtc.py asserts on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from streamer import StreamingTracker  # noqa: E402
from streamer.app import App  # noqa: E402
from streamer.config import Config, ServerConfig  # noqa: E402
from streamer.live.pipeline import Pipeline  # noqa: E402
from streamer.outputs.results import wall_clock  # noqa: E402
from streamer.serve.server import StreamServer  # noqa: E402
from streamer.sources import open_source  # noqa: E402
from tests.clips import clip_path  # noqa: E402

CLIP = clip_path()  # made by the test that runs this (tests/test_webrtc.py), found through its environment
HOST = "10.123.0.2"  # the namespace's second address: a server on the network, not on loopback
TOKEN = "tls-test-token"
TURN_HOST, TURN_USER, TURN_PASSWORD = "10.123.0.1", "viewer", "turn-s3cret-pass"


async def _reply(ws, message: dict) -> dict:
    await ws.send(json.dumps(message))
    while True:
        answer = json.loads(await ws.recv())
        if answer["type"] not in ("state", "hello"):
            return answer


async def join(ws, peer: RTCPeerConnection, stream: str | None = None, codec: str | None = None) -> MediaStreamTrack:
    """Receive-only viewer handshake over the server's websocket; returns the video track.
    ``codec`` (e.g. "H264"): offer that codec only, as a viewer that takes nothing else."""
    transceiver = peer.addTransceiver("video", direction="recvonly")
    if codec is not None:
        codecs = RTCRtpReceiver.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType in (f"video/{codec}", "video/rtx")])
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    peer.on("track", lambda track: got.done() or got.set_result(track))
    await peer.setLocalDescription(await peer.createOffer())
    offer = {"type": "offer", "id": 1, "sdp": peer.localDescription.sdp}
    answer = await _reply(ws, offer if stream is None else {**offer, "stream": stream})
    assert answer["type"] == "answer", answer
    await peer.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    peer.answered_codecs = sorted(set(re.findall(r"a=rtpmap:\d+ ([A-Za-z0-9]+)/90000", answer["sdp"])) - {"rtx"})
    return await asyncio.wait_for(got, 10)


def keep_rtp_timestamps() -> None:
    """aiortc's receiver rebases RTP timestamps to 0; a browser reports them as sent, which is
    what a viewer's video clock and a click's frame_rtp name."""
    from aiortc import rtcrtpreceiver

    rtcrtpreceiver.TimestampMapper.map = lambda self, timestamp: timestamp  # type: ignore[method-assign]


def captured_ms(rtp: int, clock: dict) -> float:
    """A frame's capture time (server clock, ms since the epoch) from its RTP timestamp and the
    viewer's video clock (``state``'s ``video_clock`` entry), as the page computes it."""
    ticks = (rtp - clock["rtp"]) % 2**32
    if ticks >= 2**31:  # a frame before the clock's
        ticks -= 2**32
    return clock["capture_ms"] + ticks / 90


async def view(port: int, frames: int, stream: str | None = None, codec: str | None = None) -> dict:
    """One aiortc viewer: offer over the websocket, receive ``frames`` frames, leave."""
    started = time.monotonic()
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        peer = RTCPeerConnection()
        track = await join(ws, peer, stream, codec)
        first = await asyncio.wait_for(track.recv(), 10)
        joined = time.monotonic() - started
        sizes = {(first.width, first.height)}
        for _ in range(frames - 1):
            frame = await asyncio.wait_for(track.recv(), 10)
            sizes.add((frame.width, frame.height))
        codecs = peer.answered_codecs
        await peer.close()
    return {"join_s": joined, "sizes": sorted(sizes), "codecs": codecs}


async def rtp_lookup(server: StreamServer) -> dict:
    """A browser reports the RTP timestamp of the frame on screen; the server must name that
    frame's camera frame, though aiortc's sender adds a random origin it does not expose. This
    viewer gets raw RTP timestamps as a browser does. Then the video clock of its state dates
    each of those frames, as the page does to measure capture -> screen."""
    keep_rtp_timestamps()
    stream = server.pipeline.stream("main")
    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        peer = RTCPeerConnection()
        track = await join(ws, peer, "main")
        found, received = [], []
        for _ in range(10):
            frame = await asyncio.wait_for(track.recv(), 10)
            index = server.viewers.shown_frame(list(server.viewers.peers), "main", frame.pts)
            found.append(None if index is None else stream.latest.index - index)
            captured = None if index is None else stream.display.captured_at(index)
            received.append((frame.pts, time.time() * 1000, None if captured is None else wall_clock(captured) * 1000))
        while not (state := json.loads(await ws.recv())).get("video_clock"):
            pass
        await peer.close()
    (clock,) = state["video_clock"]
    dated = []
    for rtp, arrived, captured in received:
        capture_ms = captured_ms(rtp, clock)
        error = None if captured is None else capture_ms - captured
        dated.append({"error_ms": error, "to_arrival_ms": arrived - capture_ms})
    return {"rtp_frames_behind": found, "clock_stream": clock["stream"], "dated": dated}


def _resources(server: StreamServer) -> dict:
    return {
        "peers": len(server.viewers.peers),
        "tasks": len(asyncio.all_tasks()),
        # The loop's default executor starts its threads ("asyncio_N") lazily, more of them when
        # the machine is busy, up to a fixed cap: not a leak. Every other thread must be gone.
        "threads": sum(not t.name.startswith("asyncio_") for t in threading.enumerate()),
        "fds": len(os.listdir("/proc/self/fd")),
    }


async def viewers() -> dict:
    tracker = StreamingTracker.build(random_init=True, image_size=128, device="cpu")
    pipeline = Pipeline()
    main = pipeline.add_stream("main", open_source("synthetic", width=320, height=240), tracker)
    pipeline.add_stream("small", open_source("synthetic", width=192, height=144))
    async with App(Config(server=ServerConfig(port=0)), pipeline) as app:
        server = app.server
        assert server is not None
        await main.next_output(-1)
        seq_before = main.latest.seq
        three = await asyncio.gather(view(server.port, 20), view(server.port, 20), view(server.port, 20, "main"))
        encoded = main.encoders["vp8"].frames_encoded
        published = main.latest.seq - seq_before
        other = await view(server.port, 5, "small")
        # A viewer that takes only H.264 beside one that takes VP8, on one stream at once.
        mixed = await asyncio.gather(view(server.port, 20, "main", "H264"), view(server.port, 20, "main"))
        mixed_encoders = sorted(main.encoders)
        lookup = await rtp_lookup(server)
        two = three[:2]
        await asyncio.sleep(1.0)
        before = _resources(server)
        joins = []
        for _ in range(50):
            joins.append((await view(server.port, 2))["join_s"])
        await asyncio.sleep(2.0)
        after = _resources(server)
        return {
            "two_viewers": two,
            "three_viewers_sizes": [v["sizes"] for v in three],
            "encoded_for_three": encoded,
            "published_meanwhile": published,
            "other_stream_sizes": other["sizes"],
            "mixed": [{"codecs": v["codecs"], "sizes": v["sizes"]} for v in mixed],
            "mixed_encoders": mixed_encoders,
            **lookup,
            "churn_join_s": joins,
            "before": before,
            "after": after,
        }


# How strongly the overlay colours a region: mean of (blue - green) over it. Object 1's colour
# is a saturated violet, so a masked area moves this far more than the clip's own motion does.
_TINT_JS = """([cx, cy, r]) => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const tint = (x0, y0, w, h) => {
    const d = g.getImageData(x0, y0, w, h).data; let s = 0;
    for (let i = 0; i < d.length; i += 4) s += d[i + 2] - d[i + 1];
    return s / (d.length / 4);
  };
  const px = Math.round(cx * c.width), py = Math.round(cy * c.height);
  return {frame: tint(0, 0, c.width, c.height), spot: tint(px - r, py - r, 2 * r + 1, 2 * r + 1)};
}"""


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    source: str | list[str],
    port: int,
    image_size: int = 256,
    extra: list[str] | None = None,
    log: list[str] | None = None,
    model: str = "sam2.1_hiera_tiny",
) -> subprocess.Popen[str]:
    """run_stream.py on ``source`` (or several) with ``model``; returns once it prints the URL to open. Its log
    keeps being read on a thread (into ``log``, if given): a full stderr pipe would block the
    server (and its shutdown)."""
    command = [sys.executable, str(ROOT / "run_stream.py"), "--random-weights"]
    for spec in [source] if isinstance(source, str) else source:
        command += ["--source", spec]
    command += [
        "--model",
        model,
        "--image-size",
        str(image_size),
        "--device",
        "cpu",
        "--port",
        str(port),
        *(extra or []),
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = [] if log is None else log
    for line in server.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if "open http://" in line or "open https://" in line:
            break

    def drain() -> None:
        for line in server.stderr:  # type: ignore[union-attr]
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return server


def browser_turn() -> dict:
    """Debian's coturn on 10.123.0.1 as the only way through: server and page both get it as their
    TURN server with the relay-only policy. Chromium plays the video; the pair its connection
    selected is a relay; the TURN password is in no log line and not in /healthz."""
    import socket
    import tempfile
    import urllib.request

    from playwright.sync_api import sync_playwright

    folder = tempfile.TemporaryDirectory()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((TURN_HOST, 0))
        turn_port = probe.getsockname()[1]
    turn_log = Path(folder.name) / "turn.log"
    command = ["turnserver", "-n", f"--listening-ip={TURN_HOST}", f"--listening-port={turn_port}",
               f"--relay-ip={TURN_HOST}", "--lt-cred-mech", f"--user={TURN_USER}:{TURN_PASSWORD}",
               "--realm=sam2.test", "--no-tls", "--no-dtls", "--no-cli", "--fingerprint", "--log-file=stdout",
               "--simple-log", f"--pidfile={folder.name}/turn.pid", f"--userdb={folder.name}/turndb",
               "--min-port=49152", "--max-port=49400"]  # fmt: skip
    with turn_log.open("w") as out:
        turn = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while "Total General servers" not in turn_log.read_text():
        assert time.monotonic() < deadline and turn.poll() is None, turn_log.read_text()[-2000:]
        time.sleep(0.1)
    port, log = free_port(), []
    url = f"turn:{TURN_USER}:{TURN_PASSWORD}@{TURN_HOST}:{turn_port}?transport=udp"
    server = start_server(str(CLIP), port, 128, ["--ice-server", url, "--ice-transport-policy", "relay"], log)
    result: dict = {}
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chrome.new_page()
            opened = time.monotonic()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            result["join_s"] = time.monotonic() - opened
            result["pair"] = page.evaluate(_SELECTED_PAIR_JS)
            chrome.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            result["password_in_healthz"] = TURN_PASSWORD in response.read().decode()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
        turn.terminate()
        turn.wait(timeout=10)
        folder.cleanup()
    result["password_in_log"] = any(TURN_PASSWORD in line for line in log)
    result["ice_logged"] = any(f"ICE servers: turn:{TURN_HOST}:{turn_port}" in line for line in log)
    return result


# The page's peer connection: the candidate types of the pair its transport selected.
_SELECTED_PAIR_JS = """async () => {
  const stats = await window.viewer.pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  stats.forEach((s) => {
    if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
  });
  if (!pair) return null;
  const type = (id) => stats.get(id).candidateType;
  return {local: type(pair.localCandidateId), remote: type(pair.remoteCandidateId)};
}"""


def browser_restart() -> dict:
    """The page reconnects its websocket and WebRTC by itself when the server restarts."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_server(str(CLIP), port)
    result: dict = {}
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chrome.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            first_stream = page.evaluate("document.getElementById('video').srcObject.id")
            server.terminate()
            result["first_exit"] = server.wait(timeout=10)
            page.wait_for_timeout(1500)
            result["status_while_down"] = page.inner_text("#status")
            server = start_server(str(CLIP), port)
            restarted = time.monotonic()
            page.wait_for_function(
                "(id) => { const v = document.getElementById('video');"
                " return v.srcObject && v.srcObject.id !== id && v.currentTime > 0.5; }",
                arg=first_stream,
                timeout=30000,
            )
            result["video_back_s"] = time.monotonic() - restarted
            result["ws_open"] = page.evaluate("window.viewer.ws.readyState === WebSocket.OPEN")
            chrome.close()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
    return result


def browser_phone(screenshot: str | None) -> dict:
    """Chromium's mobile emulation (390x844 CSS pixels, touch, 3x pixels): the layout, then a tap,
    a long press and a drag on the video, as touch events, and what the page sent for each."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_server(str(CLIP), port)
    result: dict = {}
    rects = """(() => {
      const r = (el) => { const b = el.getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; };
      const drag = document.getElementById('drag');
      return {video: r(document.getElementById('video')), aside: r(document.querySelector('aside')),
              viewport: [innerWidth, innerHeight], touch_action: getComputedStyle(drag).touchAction};
    })()"""
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = chrome.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True, has_touch=True
            )
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            result["layout"] = page.evaluate(rects)
            x, y, width, height = result["layout"]["video"]
            cdp = context.new_cdp_session(page)

            def touch(kind: str, px: float, py: float) -> None:
                points = [] if kind == "touchEnd" else [{"x": px, "y": py}]
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

            page.touchscreen.tap(x + width * 0.5, y + height * 0.55)
            page.wait_for_function("window.viewer.acks.length > 0", timeout=15000)
            result["tap_ack"] = page.evaluate("window.viewer.acks[0]")
            touch("touchStart", x + width * 0.3, y + height * 0.5)  # a long press: exclude
            page.wait_for_timeout(700)
            touch("touchEnd", 0, 0)
            touch("touchStart", x + width * 0.2, y + height * 0.2)  # a drag: a box
            for step in range(1, 6):
                touch("touchMove", x + width * (0.2 + 0.06 * step), y + height * (0.2 + 0.06 * step))
            touch("touchEnd", 0, 0)
            page.wait_for_function("window.viewer.prompts.length >= 3 && window.viewer.acks.length >= 3", timeout=15000)
            result["prompts"] = page.evaluate(
                "window.viewer.prompts.map(m => [m.type, m.labels || null, m.box || null])"
            )
            result["acks"] = page.evaluate("window.viewer.acks.map(a => a.type)")
            result["scroll_y"] = page.evaluate("window.scrollY")
            if screenshot:
                page.screenshot(path=screenshot)
            chrome.close()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
    return result


def browser_streams(screenshot: str | None) -> dict:
    """Two cameras in one server: the page's picker switches between them, the grid shows both."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_server([f"room={CLIP}", "pattern=synthetic"], port, image_size=128)
    size = "(() => { const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight]; })()"
    result: dict = {}
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chrome.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            result["options"] = page.eval_on_selector_all("#stream-picker option", "os => os.map(o => o.value)")
            result["first_size"] = page.evaluate(size)
            page.select_option("#stream-picker", "pattern")
            page.wait_for_function(
                "(w) => { const v = document.getElementById('video'); return v.videoWidth && v.videoWidth !== w"
                " && v.currentTime > 0.5; }",
                arg=result["first_size"][0],
                timeout=30000,
            )
            result["second_size"] = page.evaluate(size)
            result["hash"] = page.evaluate("location.hash")
            page.click("#grid-toggle")
            page.wait_for_function(
                "[...document.querySelectorAll('#grid video')].filter(v => v.currentTime > 0.5).length === 2",
                timeout=30000,
            )
            result["tiles"] = page.eval_on_selector_all("#grid .tile", "ts => ts.map(t => t.dataset.stream)")
            if screenshot:
                page.screenshot(path=screenshot)
            page.click("#grid .tile[data-stream='room']")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            result["after_tile_click"] = [page.evaluate("window.viewer.stream"), page.evaluate(size)]
            chrome.close()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
    return result


def browser_text() -> dict:
    """The page's text field and auto switch: "cat" typed and sent, the text detector (a user's,
    by import path: one box labelled with the first word) finds it, and the object list shows the
    new object with its label and origin; the auto box switches the stream's automatic tracking."""
    import tempfile

    from playwright.sync_api import sync_playwright

    port = free_port()
    folder = Path(tempfile.mkdtemp())
    config = folder / "text.yaml"
    detector = "tests.auto.test_detectors:boxes_and_words"
    config.write_text(f"auto:\n  detector: {detector}\n  text_detector: {detector}\n")
    server = start_server(str(CLIP), port, image_size=128, extra=["--config", str(config)])
    result: dict = {}
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chrome.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            page.fill("#text", "cat, red car")
            page.click("#text-form button[type=submit]")
            page.wait_for_function(
                "[...document.querySelectorAll('#objects li')].some(li => li.textContent.includes('cat'))",
                timeout=30000,
            )
            result["objects"] = page.eval_on_selector_all("#objects li .name", "ns => ns.map(n => n.textContent)")
            page.check("#auto")
            page.wait_for_function("window.viewer.ws && document.getElementById('auto').checked", timeout=10000)
            time.sleep(1.5)  # two state messages
            result["auto"] = next(iter(_health(port)["streams"].values())).get("auto")
            result["labels"] = next(iter(_health(port)["streams"].values())).get("labels")
            chrome.close()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
    return result


def tls_for(host: str, folder: Path) -> tuple[list[str], list[str]]:
    """A certificate for ``host`` from a test CA: the server's TLS flags, and the Chromium flag
    that trusts it (its public key's SHA-256, as a phone's user accepts a LAN certificate)."""
    import base64
    import hashlib

    import trustme
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509 import load_pem_x509_certificate

    issued = trustme.CA().issue_cert(host)
    cert, key = folder / "server.pem", folder / "server.key"
    issued.private_key_and_cert_chain_pem.write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    public = load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    trusted = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return ["--tls-cert", str(cert), "--tls-key", str(key)], [f"--ignore-certificate-errors-spki-list={trusted}"]


def browser(screenshot: str | None, camera: bool = False, tls: bool = False, proxy: bool = False) -> dict:
    """Chromium opens the page, plays the video, clicks an object, sees it coloured, removes it.

    With ``camera`` the server's source is the browser's own (fake) camera, sent up over WebRTC.
    With ``tls`` the server is on the network (10.123.0.2) with a token and a certificate: the
    page is a secure context there, which a camera needs; the same page over plain http is not.
    With ``proxy`` the page and the websocket go through nginx (docs/nginx.conf) at /cams/.
    """
    import tempfile

    from playwright.sync_api import sync_playwright

    port = free_port()
    server_args, chromium_args, url = [], [], f"http://127.0.0.1:{port}/"
    result: dict = {}
    folder = tempfile.TemporaryDirectory()
    if tls:
        server_args, chromium_args = tls_for(HOST, Path(folder.name))
        server_args += ["--host", HOST, "--token", TOKEN]
        url = f"https://{HOST}:{port}/?token={TOKEN}"
    if proxy:
        server_args = ["--base-path", "/cams/", "--trust-proxy"]
    server = start_server("browser" if camera else str(CLIP), port, extra=server_args)
    nginx = None
    if proxy:
        from tests.nginx import Nginx

        nginx = Nginx(Path(folder.name), port).start()
        url = f"http://127.0.0.1:{nginx.port}/cams/"
    try:
        args = CHROMIUM_ARGS + chromium_args
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] if camera else []
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            page = chrome.new_page(viewport={"width": 1280, "height": 720})
            if tls:
                plain_port = free_port()
                plain = start_server("browser", plain_port, image_size=128, extra=["--host", HOST, "--token", TOKEN])
                try:
                    page.goto(f"http://{HOST}:{plain_port}/?token={TOKEN}")
                    result["http_secure_context"] = page.evaluate("window.isSecureContext")
                    result["http_camera_api"] = page.evaluate("Boolean(navigator.mediaDevices)")
                finally:
                    plain.terminate()
                    plain.wait(timeout=10)
            opened = time.monotonic()
            page.goto(url)
            result["secure_context"] = page.evaluate("window.isSecureContext")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            result["first_video_s"] = time.monotonic() - opened
            t0 = page.evaluate("document.getElementById('video').currentTime")
            page.wait_for_timeout(1500)
            result["video_advanced_s"] = page.evaluate("document.getElementById('video').currentTime") - t0
            result["banner_shown"] = page.is_visible("#banner")
            result["hud_model"] = page.text_content("#model-name")
            spot = [0.5, 0.55, 12]
            result["before"] = page.evaluate(_TINT_JS, spot)
            box = page.locator("#drag").bounding_box()
            video_box = page.evaluate(
                "(() => { const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight]; })()"
            )
            scale = min(box["width"] / video_box[0], box["height"] / video_box[1])
            x = box["x"] + (box["width"] - video_box[0] * scale) / 2 + spot[0] * video_box[0] * scale
            y = box["y"] + (box["height"] - video_box[1] * scale) / 2 + spot[1] * video_box[1] * scale
            clicked = time.monotonic()
            page.mouse.click(x, y)
            page.wait_for_function("window.viewer.acks.length > 0", timeout=15000)
            result["ack"] = page.evaluate("window.viewer.acks[0]")
            result["ack_s"] = time.monotonic() - clicked
            page.wait_for_selector("#objects li[data-obj-id='1'] button.remove", timeout=5000)
            page.wait_for_timeout(4000)
            result["with_object"] = page.evaluate(_TINT_JS, spot)
            result["while_tracking"] = page.evaluate(
                "({video_fps: window.viewer.videoFps, shown_rtp: window.viewer.shownRtp,"
                " mask_fps: Number(document.getElementById('mask-fps').textContent),"
                " mask_age_ms: Number(document.getElementById('mask-age').textContent),"
                " screen_latency: window.viewer.screenLatency,"
                " latency_shown: Number(document.getElementById('latency').textContent)})"
            )
            if not (tls or proxy):
                (stream,) = _health(port)["streams"].values()
                result["while_tracking"]["server_latency_ms"] = stream["latency_ms"]
                result["while_tracking"]["tracker_threads"] = _metric(port, "streamer_tracker_threads")
            if screenshot:
                page.screenshot(path=screenshot)
            page.click("#objects li[data-obj-id='1'] button.remove")
            page.wait_for_function("window.viewer.acks.length > 1", timeout=15000)
            result["remove_ack"] = page.evaluate("window.viewer.acks[1]")
            page.wait_for_timeout(4000)
            result["after_remove"] = page.evaluate(_TINT_JS, spot)
            chrome.close()
    finally:
        if nginx is not None:
            result["proxied_requests"] = (Path(folder.name) / "access.log").read_text().count("/cams/")
            nginx.stop()
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
        folder.cleanup()
    return result


_WHEP_PAGE = """<!doctype html>
<html><body>
<video id="video" autoplay muted playsinline></video>
<script src="player.js"></script>
<script>
window.play = (url, auth) => {
  const video = document.getElementById("video");
  window.player = new WebRTCPlayer({video, type: "whep", iceServers: [], debug: true});
  return window.player.load(new URL(url), auth);
};
window.frameRate = (ms) => new Promise((done) => {
  const v = document.getElementById("video"); let n = 0; const t0 = performance.now();
  const tick = () => {
    n += 1;
    if (performance.now() - t0 < ms) v.requestVideoFrameCallback(tick);
    else done(n * 1000 / (performance.now() - t0));
  };
  v.requestVideoFrameCallback(tick);
});
window.colourCount = ([r, g, b, tol]) => {
  const v = document.getElementById("video"), c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext("2d"); ctx.drawImage(v, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (Math.abs(d[i] - r) <= tol && Math.abs(d[i + 1] - g) <= tol && Math.abs(d[i + 2] - b) <= tol) n += 1;
  return n;
};
</script></body></html>
"""


def browser_whep() -> dict:
    """Eyevinn's WHEP player (npm), on a page of another origin listed in --whep-origin, plays the
    server's stream with the token as a bearer; an object added over the websocket shows in the
    player's frames in its overlay colour; unloading the player ends its session (DELETE)."""
    import functools
    import http.server
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright
    from websockets.sync.client import connect as sync_connect

    from streamer.video.overlay import color_for
    from tests.whep_player import FOLDER

    port, page_port = free_port(), free_port()
    page_origin, server_url = f"http://{HOST}:{page_port}", f"http://{HOST}:{port}"
    folder = tempfile.TemporaryDirectory()
    shutil.copy(FOLDER / "player.js", Path(folder.name) / "player.js")  # bundled by the test, outside
    (Path(folder.name) / "index.html").write_text(_WHEP_PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # the base class's name
            pass

    handler = functools.partial(Quiet, directory=folder.name)
    pages = http.server.ThreadingHTTPServer((HOST, page_port), handler)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    extra = ["--host", HOST, "--token", TOKEN, "--whep-origin", page_origin]
    log: list[str] = []
    server = start_server(str(CLIP), port, extra=extra, log=log)
    result: dict = {}

    def health() -> dict:
        return _health(port, HOST, TOKEN)

    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chrome.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(f"{page_origin}/index.html")
            (name,) = health()["streams"]
            page.evaluate("([url, auth]) => window.play(url, auth)", [f"{server_url}/whep/{name}", f"Bearer {TOKEN}"])
            try:
                page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=30000)
            except Exception:
                sys.stderr.write("player console:\n" + "\n".join(console) + "\nserver log:\n" + "".join(log[-30:]))
                raise
            result["size"] = page.evaluate(
                "[document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]"
            )
            result["player_fps"] = page.evaluate("window.frameRate(4000)")
            stream = health()["streams"][name]
            result["server_video_fps"], result["viewers"] = stream["video_fps"], stream["viewers"]
            colour = [*color_for(1), 40]
            result["colour_before"] = page.evaluate("window.colourCount", colour)
            with sync_connect(f"ws://{HOST}:{port}/ws?token={TOKEN}", origin=server_url) as ws:
                ws.send(json.dumps({"type": "add_box", "id": 1, "obj_id": 1, "box": [0.25, 0.25, 0.75, 0.75]}))
                while (answer := json.loads(ws.recv()))["type"] in ("hello", "state"):
                    pass
                result["add"] = answer
                deadline = time.monotonic() + 20
                counts = []
                while time.monotonic() < deadline and (not counts or max(counts) < 300):
                    page.wait_for_timeout(500)
                    counts.append(page.evaluate("window.colourCount", colour))
                result["colour_after"] = counts
            page.evaluate("window.player.unload()")
            deadline = time.monotonic() + 10
            while health()["streams"][name]["viewers"] and time.monotonic() < deadline:
                time.sleep(0.2)
            result["viewers_after_unload"] = health()["streams"][name]["viewers"]
            chrome.close()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=10)
        pages.shutdown()
        folder.cleanup()
    return result


def _health(port: int, host: str = "127.0.0.1", token: str | None = None) -> dict:
    import urllib.request

    query = f"?token={token}" if token else ""
    with urllib.request.urlopen(f"http://{host}:{port}/healthz{query}", timeout=10) as response:
        return json.loads(response.read())


def _metric(port: int, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return None


def _until(check, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def browser_cluster() -> dict:
    """The clip tracked on a Ray cluster of two one-CPU nodes (tests/ray_cluster.py, on this
    namespace's loopback); Chromium views it through the front, clicks an object and sees it
    coloured. The node of the stream's worker is killed: the stream restarts on the other worker
    with its object, and the page's same peer connection goes on playing, the object coloured
    again, with no reload and no reconnect."""
    from playwright.sync_api import sync_playwright

    from tests.ray_cluster import LocalCluster

    cluster = LocalCluster()
    cluster.add_node()
    cluster.add_node()
    port = free_port()
    server = start_server(str(CLIP), port, 128, ["--cluster", cluster.address])
    result: dict = {}
    try:
        _until(lambda: _health(port)["streams"]["scene_540p"]["placement"] == "running", 90, "the stream placed")
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = chrome.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=60000)
            page.evaluate("window.viewer.pc.firstPeer = true")  # marks this peer connection
            spot = [0.5, 0.55, 12]
            result["before"] = page.evaluate(_TINT_JS, spot)
            box = page.locator("#drag").bounding_box()
            x, y = box["x"] + spot[0] * box["width"], box["y"] + spot[1] * box["height"]  # video fills the box
            page.mouse.click(x, y)
            page.wait_for_function("window.viewer.acks.length > 0", timeout=30000)
            result["ack"] = page.evaluate("window.viewer.acks[0]")
            page.wait_for_timeout(4000)
            result["with_object"] = page.evaluate(_TINT_JS, spot)

            worker = _health(port)["streams"]["scene_540p"]["worker"]
            node = next(w["node"] for w in _health(port)["cluster"]["workers"] if w["id"] == worker)
            played = page.evaluate("document.getElementById('video').currentTime")
            killed = time.monotonic()
            cluster.kill_node(cluster.node_of(node))

            def moved() -> bool:
                stream = _health(port)["streams"]["scene_540p"]
                return stream["placement"] == "running" and stream["worker"] != worker and stream["objects"] == [1]

            with contextlib.suppress(TimeoutError):  # the test says what a slow failover means
                _until(moved, 30, "the stream on the other worker")
            result["failover_s"] = time.monotonic() - killed
            result["new_worker"] = _health(port)["streams"]["scene_540p"]["worker"]
            result["old_worker"] = worker
            page.wait_for_function(
                "(t) => document.getElementById('video').currentTime > t + 3", arg=played, timeout=30000
            )
            result["played_after_s"] = page.evaluate("document.getElementById('video').currentTime") - played
            page.wait_for_timeout(3000)
            result["after_failover"] = page.evaluate(_TINT_JS, spot)
            result["same_peer"] = page.evaluate("window.viewer.pc.firstPeer === true")
            result["objects"] = page.evaluate("window.viewer.objects")
            chrome.close()
    finally:
        server.terminate()
        result["server_exit"] = server.wait(timeout=30)
        cluster.shutdown()
    return result


def main() -> None:
    scenario = sys.argv[1]
    if scenario == "browser-cluster":
        result = browser_cluster()
    elif scenario == "browser-restart":
        result = browser_restart()
    elif scenario == "browser-turn":
        result = browser_turn()
    elif scenario == "browser-phone":
        result = browser_phone(sys.argv[2] if len(sys.argv) > 2 else None)
    elif scenario == "browser-whep":
        result = browser_whep()
    elif scenario == "browser-text":
        result = browser_text()
    elif scenario == "browser-streams":
        result = browser_streams(sys.argv[2] if len(sys.argv) > 2 else None)
    elif scenario in ("browser", "browser-camera", "browser-camera-tls", "browser-proxy"):
        screenshot = sys.argv[2] if len(sys.argv) > 2 else None
        camera = scenario.startswith("browser-camera")
        result = browser(screenshot, camera, tls=scenario.endswith("-tls"), proxy=scenario == "browser-proxy")
    else:
        result = asyncio.run(viewers())
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
