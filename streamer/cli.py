"""Command line: serve a live source to browsers, or track a video into a file.

Live (the default): open the printed URL, click objects, watch them tracked. With ``--out`` the
prompts given on the command line are applied to the first frame and the tracked video is
written with the masks drawn in: a video file frame by frame, a live source newest frame first.

This module only parses: the flags go over the config file into the one ``Config`` (a value
either refuses is a usage error), which ``App`` serves or ``offline`` tracks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import re
import sys
import urllib.parse
from pathlib import Path
from typing import TypeVar

from . import version_text
from .app import App
from .config import MASK_FORMATS, Config, StreamConfig, load_config
from .config.values import STYLES, check_restream_url, check_style, parse_ice_url, parse_labels
from .errors import StreamerError
from .live.stream import STREAM_NAME
from .model.families import AUTO, MODELS, describe_models
from .model.tracker import StreamingTracker
from .offline import OfflineJob, track_offline
from .sources import mask_credentials

logger = logging.getLogger("streamer")
T = TypeVar("T")


def _floats(text: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers in 0..1, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sam2-stream",
        description=__doc__.splitlines()[0],
        epilog="sam2-stream doctor: check this machine (torch, GPU, checkpoint, codecs, port) and say what to fix",
    )
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "--source",
        action="append",
        metavar="[NAME=]SPEC",
        help="video file, camera ('0', 'webcam:0'), rtsp:// or http(s):// URL, 'synthetic', or 'browser' "
        "(the viewer's own camera; default: webcam 0 when there is one). Repeat it to serve several "
        "cameras from one model; NAME= names a stream (default: from the spec)",
    )
    parser.add_argument(
        "--config",
        help="YAML file, or a shipped one by name: tiny, small, base_plus, large, edgetam (flags override it)",
    )
    parser.add_argument(
        "--model",
        choices=[AUTO, *MODELS],
        metavar="MODEL",
        help=f"{AUTO} (default: SAM 2.1 tiny on a CUDA GPU, else EdgeTAM at 512 px) or one of: {describe_models()}",
    )
    parser.add_argument("--checkpoint", help="official .pt file (default: download to the cache)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights (the model's and --auto's detectors'): smoke tests only",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="model input size (default: the model's native 1024; SAM 2.1 takes multiples of 32, EdgeTAM of 256)",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model: minutes of warm-up, then faster GPU frames"
    )
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        type=lambda t: _floats(t, 2),
        metavar="X,Y",
        help="a click on the first frame, 0..1 of width and height; each one a new object",
    )
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        type=lambda t: _floats(t, 4),
        metavar="X0,Y0,X1,Y1",
        help="a box on the first frame, 0..1 of width and height; each one a new object",
    )
    parser.add_argument(
        "--mask-motion",
        choices=["flow", "hold"],
        help="between tracked frames, carry masks along the optical flow (flow, the default) or leave "
        "them where they were computed (hold)",
    )
    parser.add_argument(
        "--results",
        metavar="PATH",
        help="write every tracked frame's results and every event as JSON Lines (rotated by size; live and --out)",
    )
    parser.add_argument(
        "--results-masks", choices=MASK_FORMATS, help="masks in the --results file: none (default), rle or polygon"
    )
    parser.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish events and objects to mqtt://[user:pass@]HOST[:PORT][/PREFIX] (prefix default: sam2)",
    )
    parser.add_argument(
        "--record",
        metavar="DIR",
        help="write MP4 clips of the masked video around events (an object added, a zone entered) to DIR, "
        "listed at /recordings (also recordings: in YAML)",
    )
    parser.add_argument(
        "--record-segments",
        type=float,
        metavar="SECONDS",
        help="with --record: also record everything, in segments this long",
    )
    parser.add_argument(
        "--max-width", type=int, help="send viewers video at most this wide (a 4K camera shown at 1280, say)"
    )
    parser.add_argument("--bitrate", type=int, help="bits per second of each stream's video (default 2500000)")
    parser.add_argument(
        "--style",
        action="append",
        metavar="[NAME=]STYLE",
        help=f"how objects look in the video: {', '.join(STYLES)}; NAME= for one stream (default: all)",
    )
    parser.add_argument(
        "--blur",
        metavar="LABELS",
        help="blur every object with these labels in every video output, e.g. person,face (privacy)",
    )
    parser.add_argument(
        "--restream",
        action="append",
        metavar="[NAME=]URL",
        help="publish a stream's masked video to an RTSP server (go2rtc, mediamtx, an NVR): "
        "rtsp://HOST:PORT/PATH, in H.264; NAME= picks the stream (default: the only one). Repeat it per stream",
    )
    parser.add_argument("--out", help="track into this video file instead of serving browsers")
    parser.add_argument("--max-frames", type=int, default=0, help="with --out: stop after this many frames")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, help="port (default 8765; 0: any free port)")
    parser.add_argument("--token", help="secret the page, websocket and endpoints require")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --token")
    parser.add_argument(
        "--ice-server",
        action="append",
        metavar="URL",
        help="STUN or TURN server for the server's and the page's peers: stun:HOST[:PORT] or "
        "turn:USER:PASS@HOST[:PORT][?transport=udp|tcp] (repeatable; also server.ice_servers)",
    )
    parser.add_argument(
        "--ice-transport-policy", choices=["all", "relay"], help="relay: connect through TURN relays only"
    )
    parser.add_argument("--base-path", metavar="PATH", help="serve under this path, e.g. /cams/ behind a reverse proxy")
    parser.add_argument(
        "--trust-proxy",
        action="store_true",
        help="behind a reverse proxy: origin checks and cookies follow its X-Forwarded-Host and X-Forwarded-Proto",
    )
    parser.add_argument(
        "--whep-origin",
        action="append",
        metavar="ORIGIN",
        help="a web origin (https://dash.example.com, or *) whose WHEP players may watch from their own pages "
        "(repeatable; also server.whep_origins); players outside a browser need none",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve https and wss with this certificate (and its chain)")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    parser.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="serve https with a self-signed certificate for this machine (made once, cached; for a LAN)",
    )
    parser.add_argument(
        "--stream-control",
        action="store_true",
        help="let viewers add and remove streams at run time (the server then opens files and URLs they name)",
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="track the streams on a Ray cluster's workers: ray://HEAD:10001, auto (the cluster this machine "
        "belongs to) or HEAD:6379 (needs pip install 'sam2-streamer[cluster]'; docs/cluster.md)",
    )
    parser.add_argument("--max-streams-per-worker", type=int, help="with --cluster: streams one worker takes at most")
    parser.add_argument(
        "--auto",
        metavar="LABELS",
        help="track what a detector finds, with no click: person,car (COCO classes for the default rtdetr "
        "detector; any words for owlv2); 'all' for every class it knows (needs pip install 'sam2-streamer[auto]')",
    )
    parser.add_argument(
        "--auto-detector",
        metavar="NAME",
        help="rtdetr (default), owlv2, faces, or your own: package.module:function (frame -> boxes, labels, scores)",
    )
    parser.add_argument("--auto-every", type=int, metavar="N", help="run the detector on every Nth tracked frame (5)")
    parser.add_argument("--auto-threshold", type=float, help="a detection's score to start an object (0.5)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="json: one object per line")
    args = parser.parse_args(argv)
    try:
        args.config_data = load_config(args.config)
    except StreamerError as exc:
        parser.error(str(exc))
    try:
        args.streams = streams_from(args.source, args.config_data)
    except ValueError as exc:
        parser.error(str(exc))
    if args.out and len(args.streams) != 1:
        parser.error("--out tracks one source into one file: pass a single --source")
    try:
        _restreams_over(args.streams, args.restream or [])
    except ValueError as exc:
        parser.error(str(exc))
    if args.out and args.restream:
        parser.error("--restream publishes a live server's stream; with --out the video goes to the file")
    args.source = args.streams[0].source
    config = args.config_data
    model = config.model  # flags over the YAML, into the one dataclass everything reads
    model.name = args.model or model.name
    model.checkpoint = args.checkpoint or model.checkpoint
    model.device = args.device or model.device
    model.random_weights = args.random_weights or model.random_weights
    model.image_size = args.image_size or model.image_size
    model.compile = args.compile or model.compile
    display = {"mask_motion": args.mask_motion, "max_width": args.max_width, "bitrate": args.bitrate}
    by_stream = {stream.name: stream for stream in args.streams}
    for text in args.style or []:
        name, sep, style = text.rpartition("=")
        if sep and name not in by_stream:
            parser.error(f"--style: no stream named {name!r}; streams are {', '.join(by_stream)}")
        try:
            check_style(style, "--style")
        except ValueError as exc:
            parser.error(str(exc))
        if sep:
            by_stream[name].style = style
        else:
            display["style"] = style
    if args.blur:
        try:
            blurred = dict.fromkeys(parse_labels(args.blur, "--blur"), "blur")
        except ValueError as exc:
            parser.error(str(exc))
        display["styles"] = {**config.display.styles, **blurred}
    config.display = _flags_over(parser, config.display, **display)
    if args.results:
        config.results.path = args.results
    if args.results_masks:
        config.results.masks = args.results_masks
    config.mqtt = _flags_over(parser, config.mqtt, url=args.mqtt)
    config.recordings = _flags_over(
        parser, config.recordings, "recordings: ", dir=args.record, segment_s=args.record_segments
    )
    if config.recordings.segment_s is not None and not config.recordings.dir:
        parser.error("--record-segments needs --record DIR (or recordings.dir)")
    auto: dict[str, object] = {
        "detector": args.auto_detector,
        "every_frames": args.auto_every,
        "threshold": args.auto_threshold,
    }
    if args.auto is not None:
        auto["enabled"] = True
        auto["labels"] = [] if args.auto.strip() == "all" else args.auto
    config.auto = _flags_over(parser, config.auto, "auto: ", **auto)
    if args.out and config.auto.enabled:
        parser.error("--auto tracks a live server's streams; with --out give --point or --box")
    if args.out and config.mqtt.url:
        parser.error("--mqtt publishes a live server's results; with --out use --results")
    flags = {"address": args.cluster, "max_streams_per_worker": args.max_streams_per_worker}
    config.cluster = _flags_over(parser, config.cluster, "cluster: ", **flags)
    if config.cluster.address and args.out:
        parser.error("--out tracks a file in this process; leave out --cluster")
    if config.cluster.address:
        from .cluster.front import ClusterError, check_cluster_source

        try:
            for stream in args.streams:
                check_cluster_source(stream.source)
        except ClusterError as exc:
            parser.error(str(exc))
    server = config.server
    ice_servers = [*server.ice_servers, *(parse_ice_url(url) for url in args.ice_server or [])]
    config.server = _flags_over(
        parser,
        server,
        "server: ",
        host=args.host,
        port=args.port,
        token=args.token,
        insecure=args.insecure or None,
        stream_control=args.stream_control or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_self_signed=args.tls_self_signed or None,
        ice_servers=ice_servers,
        ice_transport_policy=args.ice_transport_policy,
        base_path=args.base_path,
        trust_proxy=args.trust_proxy or None,
        whep_origins=[*server.whep_origins, *(args.whep_origin or [])],
    )
    return args


def _flags_over(parser: argparse.ArgumentParser, section: T, where: str = "", **flags: object) -> T:
    """``section`` with the flags given (not None) over its values, checked again by its dataclass;
    a value it refuses is a usage error."""
    try:
        # T is always a config section (a dataclass); TypeVar bounds cannot say "a dataclass".
        return dataclasses.replace(section, **{k: v for k, v in flags.items() if v is not None})  # type: ignore[type-var]
    except ValueError as exc:
        parser.error(f"{where}{exc}")


def streams_from(sources: list[str] | None, config: Config) -> list[StreamConfig]:
    """The streams to serve: ``--source`` flags, else the config's ``streams`` or ``source``,
    else webcam 0. Unnamed streams are named from their spec (file stem, host...), made unique."""
    if sources:
        streams = [_named(text) for text in sources]
    elif config.streams:
        streams = list(config.streams)
    elif config.source.spec is not None:
        streams = [StreamConfig("", config.source.spec)]
    elif Path("/dev/video0").exists():
        streams = [StreamConfig("", "0")]
    else:
        raise ValueError("no camera found (/dev/video0); pass --source synthetic, a video file or an rtsp:// URL")
    taken: set[str] = {s.name for s in streams if s.name}
    for stream in streams:
        if not stream.name:
            base = stream.name = _default_name(stream.source)
            n = 2
            while stream.name in taken:
                stream.name, n = f"{base}-{n}", n + 1
            taken.add(stream.name)
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
        raise ValueError(f"stream names must be unique, got {names}")
    return streams


def _restreams_over(streams: list[StreamConfig], flags: list[str]) -> None:
    """``--restream [NAME=]URL`` flags over the streams' own ``restream`` settings."""
    by_name = {stream.name: stream for stream in streams}
    for text in flags:
        name, sep, url = text.partition("=")
        if not sep or "://" in name:
            if len(streams) != 1:
                raise ValueError(
                    f"--restream {mask_credentials(text)}: say which stream, NAME=URL (streams: {', '.join(by_name)})"
                )
            name, url = streams[0].name, text
        if name not in by_name:
            raise ValueError(f"--restream: no stream named {name!r}; streams are {', '.join(by_name)}")
        by_name[name].restream = check_restream_url(url, "--restream")


def _named(text: str) -> StreamConfig:
    name, sep, spec = text.partition("=")
    if sep and STREAM_NAME.fullmatch(name) and not Path(text).exists():
        return StreamConfig(name, spec)
    return StreamConfig("", text)


def _default_name(spec: str) -> str:
    if "://" in spec:
        host = urllib.parse.urlsplit(spec).hostname or "camera"
        name = host.replace(":", "-")
    elif spec.isdigit() or spec.startswith("webcam:"):
        name = "webcam" + spec.removeprefix("webcam:")
    else:
        name = Path(spec).stem
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("_.-")[:32]
    return name or "stream"


def build_tracker(config: Config) -> StreamingTracker:
    return StreamingTracker.build(**config.model.build_options(config.tracker))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(kind: str) -> None:
    handler = logging.StreamHandler()
    if kind == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # websockets says every HTTP request and connection at INFO: a /healthz poller would flood the log.
    logging.getLogger("websockets").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_format)
    config: Config = args.config_data
    try:
        tracker = None if config.cluster.address else build_tracker(config)
        if args.out:
            assert tracker is not None  # --out refuses --cluster
            job = OfflineJob(args.streams[0], args.out, args.point, args.box, args.max_frames)
            count = asyncio.run(track_offline(job, config, tracker))
            logger.info("tracked %d frames into %s", count, args.out)
        else:
            asyncio.run(serve(config, args.streams, tracker))
    except (StreamerError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def serve(config: Config, streams: list[StreamConfig], tracker: StreamingTracker | None) -> None:
    """Serve ``streams`` until SIGINT/SIGTERM (``App``); without a tracker, on the cluster the
    config names."""
    app = await App.build(config, streams, tracker)
    await app.serve()


if __name__ == "__main__":
    sys.exit(main())
