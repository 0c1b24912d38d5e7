"""WebRTC end to end, inside a private network namespace (see tests/webrtc_scenarios.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..clips import clip_path

ROOT = Path(__file__).resolve().parents[2]
ISOLATED_NET = ROOT.parent / "shared" / "tools" / "isolated-net"


def run_scenario(*args: str) -> dict:
    if not ISOLATED_NET.exists():
        pytest.skip(
            f"{ISOLATED_NET} not found: WebRTC peers gather no ICE candidates on loopback alone, so these "
            "tests run in a private network namespace that script makes (root and iproute2)"
        )
    clip_path()  # made here; the scenario finds it through the environment
    command = [str(ISOLATED_NET), sys.executable, str(ROOT / "tests" / "webrtc_scenarios.py"), *args]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_viewers_share_the_stream_and_churn_leaks_nothing() -> None:
    """Three aiortc viewers at once decode the same stream, encoded once for all of them; a viewer
    of another stream gets that stream; 50 connect/disconnect cycles each join (on a fresh
    keyframe) in under a second and leave no peer connection, task, thread or file behind."""
    result = run_scenario("viewers")
    assert result["three_viewers_sizes"] == [[[320, 240]]] * 3
    # Encoded once for all three viewers (one encoder would run per viewer otherwise).
    assert 20 <= result["encoded_for_three"] <= result["published_meanwhile"] + 1, result
    assert result["other_stream_sizes"] == [[192, 144]]
    # A viewer that offers only H.264 gets H.264, beside a VP8 viewer of the same stream: one
    # encoder per codec in use, both viewers decode the stream's frames.
    assert [v["codecs"] for v in result["mixed"]] == [["H264"], ["VP8"]], result["mixed"]
    assert all(v["sizes"] == [[320, 240]] for v in result["mixed"]), result["mixed"]
    assert result["mixed_encoders"] == ["h264", "vp8"]
    # Each received frame's RTP timestamp names a recent camera frame (a click names what it saw).
    assert all(behind is not None and 0 <= behind < 30 for behind in result["rtp_frames_behind"][1:]), result
    # The video clock in each viewer's state dates any frame it got by its RTP timestamp: the
    # capture time the server recorded for it (to a tick), and some milliseconds before it arrived.
    assert result["clock_stream"] == "main"
    dated = [d for d in result["dated"][1:] if d["error_ms"] is not None]
    assert len(dated) >= 5 and all(abs(d["error_ms"]) < 1 for d in dated), result["dated"]
    assert all(0 < d["to_arrival_ms"] < 1000 for d in dated), result["dated"]
    assert len(result["churn_join_s"]) == 50 and max(result["churn_join_s"]) < 1.0
    assert result["after"] == result["before"]
    assert result["after"]["peers"] == 0


def test_browser_click_tracks_and_remove_clears() -> None:
    """Headless Chromium plays the live video of a real clip; a click is acked, the object is
    listed, the pixels under it take the overlay colour, and removing it takes the colour away."""
    result = run_scenario("browser")
    assert result["banner_shown"], "random-weights banner missing"
    assert result["hud_model"] == "SAM 2.1 tiny 256 px", result["hud_model"]  # start_server asks for 256
    _check_click_and_remove(result)
    # The video does not wait for the tracker: counted in the page (requestVideoFrameCallback), it
    # runs well above the mask rate the page is told; the frame on screen is known by its RTP time.
    tracking = result["while_tracking"]
    assert tracking["video_fps"] > 2 * tracking["mask_fps"] > 0, tracking
    assert isinstance(tracking["shown_rtp"], int) and tracking["mask_age_ms"] >= 0, tracking
    # Capture -> screen, measured in the page for each frame presented (its RTP timestamp dated by
    # the video clock): more than the server's capture -> encoded, well under a second here, and
    # what the page shows as its latency.
    screen, server = tracking["screen_latency"], tracking["server_latency_ms"]
    assert screen["frames"] >= 20 and server["p50"] < screen["p50"] <= screen["p90"] < 1000, tracking
    assert server["p50"] < tracking["latency_shown"] < 1000, tracking
    # While the page watches, the tracker leaves a core to the video (concurrency/share.py).
    assert tracking["tracker_threads"] == max(1, torch.get_num_threads() - 1), tracking


def test_browser_camera_mode() -> None:
    """--source browser: Chromium's (fake) camera goes up over WebRTC, is tracked, and comes back
    overlaid; a click colours the object and removal clears it."""
    # Chromium's fake camera moves a green shape through the clicked spot, so the colour check
    # looks at the whole frame here.
    _check_click_and_remove(run_scenario("browser-camera"), region="frame")


def test_browser_camera_over_https_on_the_network() -> None:
    """A server on 10.123.0.2 with a token and a certificate: the page is a secure context, so
    Chromium sends its (fake) camera and gets it back tracked; the same server over plain http is
    no secure context and the page has no camera API at all."""
    result = run_scenario("browser-camera-tls")
    assert result["secure_context"] is True
    assert result["http_secure_context"] is False and result["http_camera_api"] is False
    _check_click_and_remove(result, region="frame")


def test_viewer_through_a_turn_relay_only() -> None:
    """coturn as the only way through (relay-only policy on both ends): Chromium plays the video
    over a relay pair; the TURN password reaches neither the log nor /healthz."""
    from aiortc import rtcconfiguration

    result = run_scenario("browser-turn")
    assert result["pair"] is not None and result["pair"]["local"] == "relay", result
    if hasattr(rtcconfiguration, "RTCIceTransportPolicy"):  # aiortc 1.16+: the server relays too
        assert result["pair"]["remote"] == "relay", result
    assert result["ice_logged"] and not result["password_in_log"] and not result["password_in_healthz"]
    assert result["server_exit"] == 0


def test_browser_through_nginx_at_a_sub_path() -> None:
    """Debian's nginx (docs/nginx.conf's location block) in front of the server at /cams/: the page
    and its websocket come through the proxy; Chromium plays, clicks, sees the object, removes it."""
    result = run_scenario("browser-proxy")
    assert result["proxied_requests"] >= 3  # the page, its script and the websocket at least
    _check_click_and_remove(result)


def test_phone_layout_and_touch() -> None:
    """Chromium's mobile emulation (390x844, touch): the video takes the whole width at its shape
    with the controls below it; a tap adds the object (acked), a long press sends an exclusion, a
    drag a box; the gestures neither scroll nor zoom the page."""
    result = run_scenario("browser-phone")
    layout = result["layout"]
    x, y, width, height = layout["video"]
    assert (x, width) == (0, 390) and abs(height - 390 * 9 / 16) < 2, layout
    assert layout["aside"][1] >= y + height - 1 and layout["aside"][2] == 390, layout
    assert layout["touch_action"] == "none"
    assert result["tap_ack"]["type"] == "ack" and result["tap_ack"]["objects"] == [1]
    kinds = [(kind, labels) for kind, labels, _ in result["prompts"]]
    assert kinds == [("add_points", [1]), ("add_points", [0]), ("add_box", None)], result["prompts"]
    assert result["acks"] == ["ack", "ack", "ack"] and result["scroll_y"] == 0
    assert result["server_exit"] == 0


def _check_click_and_remove(result: dict, region: str = "spot") -> None:
    """Video played; the click was acked and tinted the region (violet: blue minus green rises);
    removal was acked and the tint went away; the server exited cleanly on SIGTERM."""
    assert result["video_advanced_s"] > 0.5, "video is not playing"
    assert result["ack"]["type"] == "ack" and result["ack"]["objects"] == [1]
    assert result["remove_ack"]["objects"] == []
    before, during, after = result["before"], result["with_object"], result["after_remove"]
    assert during[region] > before[region] + 40, result
    assert after[region] < during[region] - 40, result
    assert result["server_exit"] == 0


def test_page_reconnects_after_server_restart() -> None:
    """When the server restarts, the page says it is reconnecting, then gets a new websocket and
    a new WebRTC stream by itself."""
    result = run_scenario("browser-restart")
    assert result["first_exit"] == 0 and result["server_exit"] == 0
    assert "reconnecting" in result["status_while_down"]
    assert result["ws_open"] and result["video_back_s"] < 20


def test_viewer_keeps_watching_through_a_cluster_failover() -> None:
    """The clip tracked on a two-node Ray cluster: Chromium clicks an object and sees it coloured;
    the node of the stream's worker is killed. Within 10 s the stream runs on the other worker with
    its object under the same id, and the page's same peer connection goes on playing, the object
    coloured again, with no reload or reconnect."""
    pytest.importorskip("ray", reason="the cluster tests need Ray: pip install -e '.[cluster]'")
    result = run_scenario("browser-cluster")
    assert result["ack"]["objects"] == [1]
    before, during, after = result["before"], result["with_object"], result["after_failover"]
    assert during["frame"] > before["frame"] + 40, result
    assert result["failover_s"] < 10 and result["new_worker"] != result["old_worker"], result
    assert result["same_peer"] and result["played_after_s"] > 3 and result["objects"] == [1]
    assert after["frame"] > before["frame"] + 40, result
    assert result["server_exit"] == 0


def test_browser_picks_streams_and_shows_a_grid() -> None:
    """Two cameras in one server: the picker lists both and switches the video between them (the
    URL remembers the choice), the grid plays both at once, and a tile click opens that stream."""
    result = run_scenario("browser-streams")
    assert result["options"] == ["room", "pattern"]
    assert result["first_size"] == [960, 540] and result["second_size"] == [640, 480], result
    assert result["hash"] == "#stream=pattern"
    assert result["tiles"] == ["room", "pattern"]
    assert result["after_tile_click"] == ["room", [960, 540]]
    assert result["server_exit"] == 0


def test_a_text_typed_in_the_page_adds_objects_with_their_labels() -> None:
    """The page's text field sends the words; the text detector's find is in the object list with
    its label and origin (and in /healthz); the auto box turns automatic tracking on."""
    result = run_scenario("browser-text")
    assert any("cat" in name and "text" in name for name in result["objects"]), result
    assert result["auto"] is True
    assert [v["label"] for v in result["labels"].values()] == ["cat"], result
    assert all(v["origin"] == "text" for v in result["labels"].values())
    assert result["server_exit"] == 0


def test_a_whep_player_nobody_here_wrote_plays_the_masked_stream() -> None:
    """Eyevinn's @eyevinn/webrtc-player (npm, bundled by the test), on a page of its own origin,
    watches over WHEP: frames at the rate the server publishes, the object added meanwhile in its
    overlay colour, and its session gone once it unloads."""
    from ..whep_player import PlayerUnavailableError, player_bundle

    try:
        player_bundle()
    except PlayerUnavailableError as exc:
        pytest.skip(str(exc))
    result = run_scenario("browser-whep")
    assert result["size"] == [960, 540], result  # the clip's own size
    assert result["viewers"] == 1, result
    # The camera's rate, as the server publishes it, reaches the player.
    assert result["server_video_fps"] > 15 and result["player_fps"] >= 0.8 * result["server_video_fps"], result
    assert result["add"].get("objects") == [1], result["add"]
    assert result["colour_before"] < 50 and max(result["colour_after"]) >= 300, result
    assert result["viewers_after_unload"] == 0, result
    assert result["server_exit"] == 0, result
