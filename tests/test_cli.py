"""The command line: tracking a real clip end to end, and its error messages."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.assets import CONFIG_DIR
from streamer.cli import main
from streamer.config import Config, ConfigError, ModelConfig, load_config
from streamer.config.files import DEFAULTS_FILE
from streamer.video.overlay import color_for

from .clips import clip_path

ROOT = Path(__file__).resolve().parents[1]


def test_tracks_a_clip_into_an_overlaid_video(tmp_path: Path) -> None:
    """run_stream.py reads a real clip, tracks a clicked object and writes it with the mask drawn."""
    out = tmp_path / "tracked.mp4"
    command = [sys.executable, str(ROOT / "run_stream.py"), "--source", str(clip_path())]
    command += ["--random-weights", "--image-size", "128", "--device", "cpu", "--point", "0.5,0.5"]
    command += ["--max-frames", "4", "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "tracked 4 frames" in run.stderr
    video = cv2.VideoCapture(str(out))
    written = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        written.append(frame)
    assert len(written) == 4
    original = cv2.VideoCapture(str(clip_path()))
    ok, first = original.read()
    # the overlay changed pixels, and many of them carry object 1's colour tint
    diff = np.abs(written[0].astype(int) - first.astype(int)).sum(axis=2)
    assert (diff > 60).mean() > 0.01


def test_tracks_a_live_synthetic_source(tmp_path: Path) -> None:
    """A live source (the synthetic pattern) goes through open_source and is tracked and written."""
    out = tmp_path / "live.mp4"
    args = ["--source", "synthetic", "--random-weights", "--image-size", "128", "--device", "cpu"]
    assert main([*args, "--box", "0.1,0.1,0.6,0.6", "--max-frames", "3", "--out", str(out)]) == 0
    video = cv2.VideoCapture(str(out))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and video.get(cv2.CAP_PROP_FRAME_WIDTH) == 640


def test_the_file_takes_the_style_asked_for(tmp_path: Path) -> None:
    """``--out`` draws in ``--style`` as the live video would: cutout puts the key green behind."""
    out = tmp_path / "cutout.mp4"
    args = ["--source", "synthetic", "--random-weights", "--image-size", "128", "--device", "cpu", "--style", "cutout"]
    assert main([*args, "--box", "0.1,0.1,0.6,0.6", "--max-frames", "2", "--out", str(out)]) == 0
    ok, frame = cv2.VideoCapture(str(out)).read()  # BGR
    key = (frame[:, :, 1] > 200) & (frame[:, :, 0] < 60) & (frame[:, :, 2] < 60)
    assert ok and key.mean() > 0.05, key.mean()  # the scene itself has no pure green


def test_bad_sources_are_clear_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A missing file or an unknown spec exits with status 2 and says so, without a traceback."""
    assert main(["--source", str(tmp_path / "nope.mp4"), "--random-weights", "--image-size", "128"]) == 2
    assert "no such file" in caplog.text
    assert main(["--source", "bogus", "--random-weights", "--image-size", "128"]) == 2
    assert "unknown source 'bogus'" in caplog.text


def test_bad_point_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """Points are checked when parsing: two numbers in 0..1."""
    with pytest.raises(SystemExit):
        main(["--source", "x.mp4", "--point", "2,0.5"])
    assert "expected 2 comma-separated numbers in 0..1" in capsys.readouterr().err


def test_config_files_load_and_reject_unknown_keys(tmp_path: Path) -> None:
    """Every shipped config loads, by path or by name; defaults.yaml says exactly the dataclasses'
    defaults (so the file to copy never lies), and each model's file differs from it only in the
    model; a misspelt key is named in the error."""
    assert load_config(DEFAULTS_FILE) == Config() == load_config("defaults")
    models = sorted(CONFIG_DIR.glob("sam2.1_hiera_*.yaml"))
    assert len(models) == 4
    for path in models:
        config = load_config(path)
        assert config.model.name == path.stem
        assert config == dataclasses.replace(Config(), model=ModelConfig(name=path.stem))
    assert load_config("small").model.name == "sam2.1_hiera_small"  # shipped, by name
    assert load_config("sam2.1_hiera_large").model.name == "sam2.1_hiera_large"
    edgetam = load_config("edgetam")
    assert edgetam == dataclasses.replace(Config(), model=ModelConfig(name="edgetam", image_size=512))
    with pytest.raises(ConfigError, match="shipped: base_plus, edgetam, large, small, tiny, defaults"):
        load_config("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  histroy: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'histroy'"):
        load_config(bad)


def test_object_colours_are_distinct() -> None:
    """Neighbouring object ids get clearly different colours."""
    colours = [np.array(color_for(i)) for i in range(1, 9)]
    for a, b in zip(colours, colours[1:]):
        assert np.abs(a - b).sum() > 100


def test_live_server_prints_url_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """The live mode (source and port from a YAML config, JSON logs) prints the URL to open,
    serves the page, and stops within 2 s of Ctrl-C without a traceback (the process then exits:
    the interpreter's teardown of torch alone takes 1-2 s on this machine's slow days)."""
    import json
    import signal
    import time
    import urllib.request

    config = tmp_path / "live.yaml"
    config.write_text("source:\n  spec: synthetic\nserver:\n  port: 0\nmodel:\n  image_size: 128\n")
    command = [sys.executable, str(ROOT / "run_stream.py"), "--config", str(config), "--random-weights"]
    command += ["--device", "cpu", "--log-format", "json"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:  # type: ignore[union-attr]
            entry = json.loads(line)
            assert {"time", "level", "logger", "message"} <= entry.keys()
            if "open http://" in entry["message"]:
                url = entry["message"].split("open ", 1)[1].split()[0]
                assert "serving synthetic" in entry["message"]
                break
        assert url and url.startswith("http://127.0.0.1:")
        assert b"app.js" in urllib.request.urlopen(url, timeout=10).read()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        rest = proc.stderr.read()  # type: ignore[union-attr]
        assert "Traceback" not in rest
        stopped = [json.loads(line)["message"] for line in rest.splitlines() if "stopped in" in line]
        assert stopped and float(stopped[0].split()[2]) < 2.0, stopped
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="a camera is present")
def test_no_camera_suggests_synthetic(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --source and without a camera, the CLI says so and suggests --source synthetic."""
    with pytest.raises(SystemExit):
        main(["--random-weights"])
    err = capsys.readouterr().err
    assert "no camera found" in err and "--source synthetic" in err


def test_streams_are_named_from_flags_or_specs() -> None:
    """Repeated --source gives several streams; NAME=SPEC names one, others are named from their
    spec (host, file stem, camera) and made unique; an '=' inside a URL is not a name."""
    from streamer.cli import streams_from
    from streamer.config import Config

    specs = ["front=rtsp://u:p@cam1/x", "rtsp://cam2.local/live?a=b", "/data/lobby.mp4", "synthetic", "synthetic"]
    streams = streams_from([*specs, "0"], Config())
    assert [s.name for s in streams] == ["front", "cam2.local", "lobby", "synthetic", "synthetic-2", "webcam0"]
    assert streams[0].source == "rtsp://u:p@cam1/x" and streams[1].source == "rtsp://cam2.local/live?a=b"
    with pytest.raises(ValueError, match="unique"):
        streams_from(["a=synthetic", "a=synthetic"], Config())


def test_streams_section_of_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``streams:`` list in YAML names each camera with its own options; mistakes are named."""
    from streamer.cli import parse_args

    config = tmp_path / "cams.yaml"
    config.write_text(
        "streams:\n"
        "  - {name: door, source: 'rtsp://10.0.0.5/s', options: {transport: udp}}\n"
        "  - {name: yard, source: synthetic}\n"
    )
    args = parse_args(["--config", str(config)])
    assert [(s.name, s.source, s.options) for s in args.streams] == [
        ("door", "rtsp://10.0.0.5/s", {"transport": "udp"}),
        ("yard", "synthetic", {}),
    ]
    assert [s.name for s in parse_args(["--config", str(config), "--source", "synthetic"]).streams] == ["synthetic"]
    for text, error in [
        ("streams:\n  - {name: a}\n", "needs a name and a source"),
        ("streams:\n  - {name: a, source: x, colour: red}\n", "unknown key 'colour'"),
        ("streams:\n  - {name: a, source: x}\n  - {name: a, source: y}\n", "unique"),
    ]:
        config.write_text(text)
        with pytest.raises(ConfigError, match=error):
            load_config(config)
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--source", "x.mp4", "--out", "o.mp4"])
    assert "--out tracks one source" in capsys.readouterr().err


def test_stream_options_from_a_config_reach_the_source(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Flat options (``transport: udp``) become the network source's settings; an option no
    source takes is a clear error, not a traceback."""
    import asyncio

    from streamer.sources import open_source

    source = open_source("rtsp://127.0.0.1:9/none", transport="udp", stall_timeout=1.5)
    assert source.options.transport == "udp" and source.options.stall_timeout == 1.5
    asyncio.run(source.close())
    config = tmp_path / "bad.yaml"
    config.write_text("streams:\n  - {name: a, source: synthetic, options: {colour: red}}\nserver:\n  port: 0\n")
    assert main(["--config", str(config), "--random-weights", "--image-size", "128", "--device", "cpu"]) == 2
    assert "stream a: bad options" in caplog.text and "colour" in caplog.text


def test_compile_flag_reaches_the_model() -> None:
    """--compile wraps the model's components with torch.compile (compiling itself waits for the
    first frame, so this is cheap); without it they stay eager."""
    from streamer.cli import build_tracker, parse_args

    base = ["--source", "synthetic", "--random-weights", "--image-size", "128", "--device", "cpu"]
    compiled = build_tracker(parse_args([*base, "--compile"]).config_data)
    assert getattr(compiled.model, "_streamer_compiled", False)
    assert "forward" in vars(compiled.model.image_encoder)  # replaced by the compiled wrapper
    eager = build_tracker(parse_args(base).config_data)
    assert not getattr(eager.model, "_streamer_compiled", False) and "forward" not in vars(eager.model.image_encoder)


def test_random_weights_from_a_config_show_the_banner(tmp_path: Path) -> None:
    """``model.random_weights: true`` in YAML builds random weights, and the page is told so, as
    with --random-weights; without it the model is not random and no banner is asked for."""
    import asyncio
    import json

    from websockets.asyncio.client import connect

    from streamer.app import App
    from streamer.cli import build_tracker, parse_args
    from streamer.config import Config, ServerConfig
    from streamer.live.pipeline import Pipeline
    from streamer.sources import open_source

    config = tmp_path / "random.yaml"
    config.write_text("model:\n  random_weights: true\n  image_size: 128\n  device: cpu\n")
    tracker = build_tracker(parse_args(["--config", str(config), "--source", "synthetic"]).config_data)
    assert tracker.random_weights

    async def hello() -> dict:
        pipeline = Pipeline()
        pipeline.add_stream("main", open_source("synthetic", width=64, height=48), tracker)
        async with App(Config(server=ServerConfig(port=0)), pipeline) as app:
            assert app.server is not None
            async with connect(f"ws://127.0.0.1:{app.server.port}/ws") as ws:
                return json.loads(await ws.recv())

    said = asyncio.run(hello())
    assert said["random_weights"] is True
    assert said["model"]["title"] == "SAM 2.1 tiny" and said["model"]["image_size"] == 128
    tracker.random_weights = False  # as a real checkpoint's tracker
    assert asyncio.run(hello())["random_weights"] is False


def test_mask_motion_flag_overrides_the_config(tmp_path: Path) -> None:
    from streamer.cli import parse_args

    config = tmp_path / "hold.yaml"
    config.write_text("display:\n  mask_motion: hold\n")
    assert parse_args(["--source", "synthetic"]).config_data.display.mask_motion == "flow"
    assert parse_args(["--source", "synthetic", "--config", str(config)]).config_data.display.mask_motion == "hold"
    flagged = parse_args(["--source", "synthetic", "--config", str(config), "--mask-motion", "flow"])
    assert flagged.config_data.display.mask_motion == "flow"


def test_model_choice_by_name_and_by_device(caplog) -> None:
    """``--model edgetam`` builds EdgeTAM; the default ``auto`` builds EdgeTAM at 512 px on a machine
    without CUDA and says why in the log; an input size EdgeTAM cannot take is refused by name."""
    from streamer import ModelError
    from streamer.cli import build_tracker, parse_args
    from streamer.config import ModelConfig

    assert ModelConfig().name == "auto"
    base = ["--source", "synthetic", "--random-weights", "--device", "cpu"]
    edgetam = build_tracker(parse_args([*base, "--model", "edgetam", "--image-size", "256"]).config_data)
    assert edgetam.describe()["title"] == "EdgeTAM" and edgetam.model.image_size == 256
    auto = build_tracker(parse_args(base).config_data)
    assert (auto.spec.name, auto.model.image_size) == ("edgetam", 512)
    assert "EdgeTAM at 512 px, as no CUDA GPU is here" in caplog.text
    small = build_tracker(parse_args([*base, "--image-size", "128"]).config_data)
    assert (small.spec.name, small.model.image_size) == ("sam2.1_hiera_tiny", 128)
    assert "SAM 2.1 tiny at 128 px, as EdgeTAM does not take 128 px" in caplog.text
    shipped = build_tracker(parse_args([*base, "--config", "edgetam"]).config_data)
    assert shipped.spec.name == "edgetam" and shipped.model.image_size == 512
    with pytest.raises(ModelError, match="EdgeTAM takes input sizes that are positive multiples of 256"):
        build_tracker(parse_args([*base, "--model", "edgetam", "--image-size", "320"]).config_data)
    with pytest.raises(SystemExit):
        parse_args([*base, "--model", "sam3"])
