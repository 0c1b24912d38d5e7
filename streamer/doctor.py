"""``sam2-stream doctor``: what a user runs when something does not work.

Each check says what it found and, for every problem, what to do about it. The checks import
torch, sam2, PyAV and OpenCV themselves (and nothing at module level), so a broken install is
reported as a finding instead of a traceback before any check has run.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .assets import CONFIG_DIR, PACKAGE_DIR, RESULTS_SCHEMA, WEB_DIR
from .config import ClusterConfig, ModelConfig, ServerConfig, load_config  # no implementation: safe without torch
from .model.families import AUTO, CPU_SECONDS_PER_FRAME, MODELS, default_model, model_spec
from .model.weights import cache_dir, is_cached

OK, WARN, FAIL = "ok", "warn", "fail"
TEST_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad chromium mosquitto coturn nginx ffmpeg"
)
BROKER_ANSWER_S = 5.0


@dataclass
class Finding:
    """One thing checked: ``status`` is ok, warn (works, with a caveat) or fail (will not work)."""

    check: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class DoctorConfig:
    """What the checks look at: the address to serve on and the model to run (the server's own
    defaults, from the config's dataclasses)."""

    host: str = ServerConfig.host
    port: int = ServerConfig.port
    model: str = ModelConfig.name
    checkpoint: str | None = None
    mqtt: str | None = None  # the broker URL results go to
    results: str | None = None  # the JSON Lines file results go to
    cluster: str | None = None  # the Ray cluster streams are tracked on
    cluster_workers: str = ClusterConfig.workers
    cpus_per_worker: float = ClusterConfig.cpus_per_worker
    auto_detector: str | None = None  # the detector automatic tracking runs (None: auto is off)


def check_python(_: DoctorConfig) -> list[Finding]:
    where = f"{platform.python_version()} ({platform.system()} {platform.machine()}) at {sys.executable}"
    return [Finding("python", OK, where)]


def check_package(_: DoctorConfig) -> list[Finding]:
    """The viewer page and the configs must be inside the installed package (package data)."""
    root = PACKAGE_DIR
    shipped = (WEB_DIR / "index.html", WEB_DIR / "app.js", WEB_DIR / "style.css", RESULTS_SCHEMA)
    missing = [p for p in shipped if not p.is_file()]
    configs = sorted(CONFIG_DIR.glob("*.yaml"))
    detail = f"sam2-streamer {__version__} at {root}"
    if missing or not configs:
        lost = [str(p) for p in missing] + ([] if configs else [f"{CONFIG_DIR}/*.yaml"])
        return [
            Finding(
                "package",
                FAIL,
                f"{detail}; missing: {', '.join(lost)}",
                "reinstall from a wheel or sdist built by `python -m build` (or `pip install -e .` in a checkout)",
            )
        ]
    return [Finding("package", OK, f"{detail}: viewer page and {len(configs)} configs present")]


def check_torch(_: DoctorConfig) -> list[Finding]:
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken CUDA/numpy library under it
        return [
            Finding(
                "torch",
                FAIL,
                f"cannot import torch: {exc}",
                "install torch first: `pip install torch torchvision` (the README says how to pick a CPU-only build)",
            )
        ]
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    findings = [Finding("torch", OK, f"torch {torch.__version__} ({build}), {torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            detail = (
                f"cuda:{index} {props.name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), "
                f"compute {props.major}.{props.minor}"
            )
            if props.major >= 8:  # native bfloat16, what precision "auto" picks on a GPU
                findings.append(Finding("device", OK, detail + ", bfloat16"))
            else:
                fix = "set `model.precision: float32` in your config if frames fail or are slow"
                findings.append(Finding("device", WARN, detail + ": no native bfloat16 (before Ampere)", fix))
        return findings
    cores = os.cpu_count() or 1
    if torch.version.cuda and shutil.which("nvidia-smi"):
        findings.append(
            Finding(
                "device",
                FAIL,
                f"nvidia-smi is here but torch sees no GPU; the model would run on {cores} CPU cores",
                "check `nvidia-smi` and CUDA_VISIBLE_DEVICES; the driver must support "
                f"CUDA {torch.version.cuda}, else install a torch build for an older CUDA",
            )
        )
        return findings
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        findings.append(
            Finding(
                "device",
                WARN,
                f"Apple GPU (MPS) available; the server uses the CPU ({cores} cores) unless told otherwise",
                "`--device mps` may be faster; this project has not tested it",
            )
        )
        return findings
    expect = ", ".join(
        f"{model_spec(name).title} {size} px {seconds:g} s" for (name, size), seconds in CPU_SECONDS_PER_FRAME.items()
    )
    findings.append(
        Finding(
            "device",
            WARN,
            f"no GPU: the model runs on {cores} CPU cores; --model auto is {default_model(cuda=False).why}. "
            f"Seconds per frame with one object, measured on 2 cores: {expect}",
            "each extra object costs a little more, and a viewer's video takes a share of the CPU"
            + (
                "; this torch is a CUDA build: a CPU-only one is several GB smaller (README)"
                if torch.version.cuda
                else ""
            ),
        )
    )
    return findings


def check_sam2(config: DoctorConfig) -> list[Finding]:
    try:
        import sam2  # noqa: F401
    except Exception as exc:
        return [
            Finding(
                "sam2",
                FAIL,
                f"cannot import sam2: {exc}",
                'install torch first, then `SAM2_BUILD_CUDA=0 pip install --no-build-isolation "sam2==1.1.0"`',
            )
        ]
    version = importlib.metadata.version("sam2")
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return [
            Finding(
                "sam2",
                OK,
                f"sam2 {version}; its optional CUDA extension is not built, so small mask holes are not "
                "filled (as the official predictor without it)",
            )
        ]
    return [Finding("sam2", OK, f"sam2 {version} with its CUDA extension")]


def check_checkpoint(config: DoctorConfig) -> list[Finding]:
    if config.checkpoint:
        path = Path(config.checkpoint).expanduser()
        if not path.is_file():
            return [Finding("checkpoint", FAIL, f"{path} does not exist", "pass the path of an official .pt file")]
        return [Finding("checkpoint", OK, f"{path} ({path.stat().st_size / 1e6:.0f} MB)")]
    spec = model_spec(_resolved(config.model))
    cache = cache_dir()
    cached = [name for name, s in MODELS.items() if is_cached(s.checkpoint, cache / s.filename)]
    others = ", ".join(c for c in cached if c != spec.name)
    others = f"; also cached: {others}" if others else ""
    target = cache / spec.filename
    if spec.name in cached:
        return [Finding("checkpoint", OK, f"{spec.name} cached at {target}{others}")]
    probe = next((p for p in (cache, *cache.parents) if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        return [
            Finding(
                "checkpoint",
                FAIL,
                f"{spec.name} is not cached and {probe} is not writable",
                "set STREAMER_CACHE_DIR to a writable folder, or pass --checkpoint PATH",
            )
        ]
    free, need = shutil.disk_usage(probe).free, spec.checkpoint.expected_bytes
    if free < need * 1.1:
        return [
            Finding(
                "checkpoint",
                FAIL,
                f"{spec.name} needs {need / 1e6:.0f} MB in {cache}, only {free / 1e6:.0f} MB free",
                "free disk space or set STREAMER_CACHE_DIR to a larger disk",
            )
        ]
    partial = target.with_name(target.name + ".part")
    state = f"partly downloaded ({partial.stat().st_size / 1e6:.0f} MB, resumes)" if partial.is_file() else "not cached"
    return [
        Finding(
            "checkpoint",
            WARN,
            f"{spec.name} {state}: {need / 1e6:.0f} MB are downloaded into {cache} on first run{others}",
            f"offline? fetch {spec.checkpoint.url} elsewhere and put it at {target}, or pass --checkpoint PATH",
        )
    ]


def _resolved(model: str) -> str:
    """``auto`` as the server would resolve it on this machine."""
    if model != AUTO:
        return model
    try:
        import torch

        cuda = torch.cuda.is_available()
    except Exception:  # check_torch reports a broken torch
        cuda = False
    return default_model(cuda).name


def check_codecs(_: DoctorConfig) -> list[Finding]:
    try:
        import av
        import av.codec
    except Exception as exc:
        return [Finding("codecs", FAIL, f"cannot import PyAV: {exc}", "`pip install --force-reinstall av`")]

    def has(name: str, mode: Literal["r", "w"]) -> bool:
        try:
            av.codec.Codec(name, mode)
        except Exception:  # UnknownCodecError
            return False
        return True

    wanted = {  # name: (present, needed by every setup)
        "VP8 encoder (the viewer's video)": (has("libvpx", "w"), True),
        "H.264 decoder (RTSP cameras, clips)": (has("h264", "r"), True),
        "H.264 encoder": (has("libx264", "w"), False),
        "HEVC decoder (H.265 cameras)": (has("hevc", "r"), False),
    }
    found = ", ".join(name.split(" (")[0] for name, (ok, _) in wanted.items() if ok)
    detail = f"PyAV {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}): {found}"
    lost = [name for name, (ok, _) in wanted.items() if not ok]
    if not lost:
        return [Finding("codecs", OK, detail)]
    status = FAIL if any(needed and not ok for ok, needed in wanted.values()) else WARN
    return [
        Finding(
            "codecs",
            status,
            f"{detail}; missing: {', '.join(lost)}",
            "PyAV's wheels bundle an FFmpeg with these: `pip install --force-reinstall av` (a PyAV "
            "built from source against a system FFmpeg has only that FFmpeg's codecs)",
        )
    ]


def check_libraries(_: DoctorConfig) -> list[Finding]:
    findings, versions = [], []
    for module, dist in (("cv2", "opencv-python"), ("aiortc", "aiortc"), ("websockets", "websockets")):
        try:
            versions.append(f"{dist} {importlib.import_module(module).__version__}")
        except Exception as exc:
            fix = f"`pip install --force-reinstall {dist}`"
            findings.append(Finding(dist, FAIL, f"cannot import {module}: {exc}", fix))
    return findings or [Finding("libraries", OK, ", ".join(versions))]


def check_cameras(_: DoctorConfig) -> list[Finding]:
    devices = sorted(Path("/dev").glob("video*"))
    if not devices:
        return [Finding("cameras", OK, "no local camera (/dev/video*): use --source rtsp://..., a file or synthetic")]
    blocked = [str(d) for d in devices if not os.access(d, os.R_OK | os.W_OK)]
    if blocked:
        return [
            Finding(
                "cameras",
                WARN,
                f"{', '.join(blocked)} not readable by this user",
                "add yourself to the camera's group: `sudo usermod -aG video $USER`, then log in again",
            )
        ]
    return [Finding("cameras", OK, ", ".join(map(str, devices)))]


def check_port(config: DoctorConfig) -> list[Finding]:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            busy = exc.errno == errno.EADDRINUSE
            return [
                Finding(
                    "port",
                    FAIL,
                    f"{config.host}:{config.port} "
                    + ("is in use (another sam2-stream?)" if busy else f"cannot be used: {exc.strerror}"),
                    "pass --port N (0: any free port)" + (", or stop what holds it" if busy else ", or another --host"),
                )
            ]
    return [Finding("port", OK, f"{config.host}:{config.port} is free")]


def check_outputs(config: DoctorConfig) -> list[Finding]:
    """Where results would go: the file can be written, the MQTT broker answers and takes us."""
    findings = []
    if config.results:
        folder = Path(config.results).resolve().parent
        while not folder.exists():
            folder = folder.parent
        if os.access(folder, os.W_OK):
            findings.append(Finding("results file", OK, f"{config.results} can be written"))
        else:
            findings.append(
                Finding(
                    "results file",
                    FAIL,
                    f"{config.results} cannot be written ({folder} is not writable)",
                    "pass a --results path in a folder you can write",
                )  # fmt: skip
            )
    if config.mqtt:
        findings.append(_check_broker(config.mqtt))
    return findings


def _check_broker(url: str) -> Finding:
    from .config.values import parse_broker
    from .outputs.mqtt import CREDENTIALS_FIX, paho_client

    try:
        broker = parse_broker(url)
    except ValueError as exc:
        return Finding("mqtt", FAIL, str(exc), "fix --mqtt or mqtt.url")
    answer: dict[str, Any] = {}
    client = paho_client(broker, f"sam2-stream-doctor-{os.getpid()}")
    client.on_connect = lambda _client, _data, _flags, reason, _props: answer.setdefault("reason", reason)
    fix = "start the broker, or fix the host and port in --mqtt or mqtt.url"
    try:
        client.connect(broker.host, broker.port, keepalive=5)
    except OSError as exc:
        reach = f"cannot reach the broker at {broker.address}: {exc.strerror or exc}"
        return Finding("mqtt", WARN, reach + " (the server would start and keep retrying)", fix)
    deadline = time.monotonic() + BROKER_ANSWER_S
    while "reason" not in answer and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    reason = answer.get("reason")
    if reason is None:
        return Finding("mqtt", WARN, f"the broker at {broker.address} did not answer in {BROKER_ANSWER_S:g} s", fix)
    if reason.is_failure:
        refused = f"the broker at {broker.address} refused the connection ({reason})"
        return Finding("mqtt", FAIL, refused, CREDENTIALS_FIX)
    return Finding("mqtt", OK, f"the broker at {broker.address} accepts the connection")


def check_cluster(config: DoctorConfig) -> list[Finding]:
    """Ray, for --cluster; with a cluster address, whether it answers and what workers it has room for."""
    install = "`pip install 'sam2-streamer[cluster]'` (here and on every node)"
    try:
        ray = importlib.import_module("ray")
    except ImportError:
        if config.cluster:
            return [Finding("cluster", FAIL, "--cluster needs Ray, which is not installed", install)]
        return [Finding("cluster", OK, f"Ray not installed: only --cluster needs it ({install})")]
    if not config.cluster:
        return [Finding("cluster", OK, f"ray {ray.__version__} (for --cluster)")]
    from .cluster.placement import worker_slots

    nodes = _cluster_nodes(ray, config.cluster)
    if isinstance(nodes, str):
        fix = "start the cluster (`ray start --head` on the head node), check the address and that its ports are open"
        return [Finding("cluster", FAIL, f"cannot join the Ray cluster at {config.cluster}: {nodes}", fix)]
    gpu, slots = worker_slots(nodes, config.cluster_workers, config.cpus_per_worker)
    alive, total = len(slots), sum(slots.values())
    if not total:
        kind = "a GPU" if gpu else f"{config.cpus_per_worker:g} CPU(s)"
        fix = "join nodes to it: `ray start --address=HEAD:6379` on each (with --num-gpus=N on GPU machines)"
        return [Finding("cluster", WARN, f"{config.cluster}: {alive} node(s), none with {kind} for a worker", fix)]
    kind = "GPU" if gpu else "CPU"
    return [Finding("cluster", OK, f"{config.cluster}: {alive} node(s), room for {total} {kind} worker(s)")]


def check_auto(config: DoctorConfig) -> list[Finding]:
    """transformers, for --auto's built-in detectors; with a detector named, whether it can load."""
    install = "`pip install 'sam2-streamer[auto]'`"
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        if config.auto_detector in ("rtdetr", "owlv2"):
            return [Finding("auto", FAIL, f"--auto with {config.auto_detector} needs transformers", install)]
        return [Finding("auto", OK, f"transformers not installed: only --auto's rtdetr and owlv2 need it ({install})")]
    found = [Finding("auto", OK, f"transformers {transformers.__version__} (for --auto)")]
    if config.auto_detector is not None and ":" in config.auto_detector:
        from .auto.detectors import import_callable
        from .errors import DetectorError

        try:
            import_callable(config.auto_detector)
        except DetectorError as exc:
            return [Finding("auto", FAIL, str(exc), "check the import path package.module:function")]
        found.append(Finding("auto", OK, f"detector {config.auto_detector} imports"))
    return found


def _cluster_nodes(ray: Any, address: str, timeout: float = 20.0) -> list[dict] | str:
    """The cluster's nodes, or why they could not be listed."""
    from .cluster.join import join_ray

    try:
        join_ray(ray, address, timeout, logging_level="ERROR")
        return ray.nodes()
    except Exception as exc:
        return str(exc) if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    finally:
        if ray.is_initialized():
            ray.shutdown()


def check_test_tools(_: DoctorConfig) -> list[Finding]:
    """Only the test suite needs these (GStreamer's RTSP server, run by the system Python; Chromium;
    the mosquitto broker; the coturn TURN server; nginx; FFmpeg, an RTSP server for the restream)."""
    missing = []
    if not Path("/usr/bin/chromium").exists():
        missing.append("chromium")
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        missing.append("mosquitto")
    if not shutil.which("turnserver"):
        missing.append("coturn")
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx")
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        missing.append("ffmpeg")
    system_python = "/usr/bin/python3"
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    if not Path(system_python).exists() or subprocess.run([system_python, "-c", probe], capture_output=True).returncode:
        missing.append("GStreamer RTSP server for the system Python")
    if missing:
        return [
            Finding(
                "test tools",
                WARN,
                f"missing {', '.join(missing)}: needed only to run the tests",
                f"Debian/Ubuntu: `sudo apt-get install {TEST_PACKAGES}`",
            )
        ]
    found = "Chromium, GStreamer's RTSP server, mosquitto, coturn, nginx and FFmpeg (for the tests)"
    return [Finding("test tools", OK, found)]


CHECKS: tuple[Callable[[DoctorConfig], list[Finding]], ...] = (
    check_python,
    check_package,
    check_torch,
    check_sam2,
    check_checkpoint,
    check_codecs,
    check_libraries,
    check_cameras,
    check_port,
    check_outputs,
    check_cluster,
    check_auto,
    check_test_tools,
)


def diagnose(config: DoctorConfig) -> list[Finding]:
    """Every check; one that raises becomes a failed finding instead of hiding the others."""
    findings: list[Finding] = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        try:
            findings.extend(check(config))
        except Exception as exc:
            findings.append(Finding(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings


def render(findings: list[Finding]) -> str:
    width = max(len(f.check) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"{f.status:<5} {f.check:<{width}}  {f.detail}")
        if f.fix:
            lines.append(f"{'':<5} {'':<{width}}  -> {f.fix}")
    failed = sum(f.status == FAIL for f in findings)
    lines.append(f"{failed} problem(s) to fix" if failed else "no problems found")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the findings; exit 1 when any check failed."""
    parser = argparse.ArgumentParser(prog="sam2-stream doctor", description="check this machine for sam2-stream")
    parser.add_argument("--config", help="the YAML (or shipped config name) you serve with: its host, port and model")
    parser.add_argument("--host", help="address the server will listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port the server will listen on (default 8765)")
    parser.add_argument(
        "--model",
        choices=[AUTO, *MODELS],
        metavar="MODEL",
        help=f"model to check (default {AUTO}): {', '.join(MODELS)}",
    )
    parser.add_argument("--checkpoint", help="a checkpoint file you pass to the server")
    parser.add_argument("--mqtt", metavar="URL", help="the MQTT broker you pass to the server: does it take us")
    parser.add_argument("--results", metavar="PATH", help="the results file you pass to the server: is it writable")
    parser.add_argument("--cluster", metavar="ADDRESS", help="the Ray cluster you pass to the server: its room")
    parser.add_argument("--json", action="store_true", help="the findings as a JSON list")
    args = parser.parse_args(argv)
    config, findings = DoctorConfig(), []
    if args.config:
        try:
            loaded = load_config(args.config)
            config = DoctorConfig(
                loaded.server.host,
                loaded.server.port,
                loaded.model.name,
                loaded.model.checkpoint,
                loaded.mqtt.url,
                loaded.results.path,
                loaded.cluster.address,
                loaded.cluster.workers,
                loaded.cluster.cpus_per_worker,
                loaded.auto.detector if loaded.auto.enabled else None,
            )
        except Exception as exc:
            findings.append(Finding("config", FAIL, f"cannot use {args.config}: {exc}", "fix the file or its path"))
    for name in ("host", "port", "model", "checkpoint", "mqtt", "results", "cluster"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    findings += diagnose(config)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        print(f"sam2-stream {__version__} doctor")
        print(render(findings))
    return 1 if any(f.status == FAIL for f in findings) else 0
