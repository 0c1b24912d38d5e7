"""Real RTSP servers that receive a published stream, for the restream tests: FFmpeg listening
(``-rtsp_flags listen``) and GStreamer's RTSP server in record mode (tests/rtsp_server.py
``--record``, run by the system Python). Each writes what arrives to an MPEG-TS file (readable even when the
receiver is killed mid-stream), can be killed and started again on its port, and ``probe`` reads
a file with ``ffprobe``, a reader nobody here wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .mosquitto import free_port
from .rtsp import SERVER_SCRIPT, SYSTEM_PYTHON


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install ffmpeg (.ci/run does)")
    return found


class Receiver:
    """One receiving server on a fixed loopback port; each ``start`` writes a new file."""

    kind = ""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.files: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    @property
    def file(self) -> Path:
        return self.files[-1]

    def start(self) -> None:
        self.files.append(self.folder / f"{self.kind}-{len(self.files)}.ts")
        self.process = self._launch(self.files[-1])

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _launch(self, out: Path) -> subprocess.Popen[bytes]:
        raise NotImplementedError


class FfmpegReceiver(Receiver):
    kind = "ffmpeg"

    def _launch(self, out: Path) -> subprocess.Popen[bytes]:
        command = [_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-rtsp_flags", "listen"]
        command += ["-i", self.url, "-c", "copy", "-f", "mpegts", str(out)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_listening(self.port, process)
        return process


class GstReceiver(Receiver):
    kind = "gstreamer"

    def _launch(self, out: Path) -> subprocess.Popen[bytes]:
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port), "--record", str(out)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            process.kill()
            needs = "python3-gi, gir1.2-gst-rtsp-server-1.0 and gstreamer1.0-plugins-{base,good,bad}"
            pytest.fail(f"the GStreamer RTSP record server did not start: it needs Debian's {needs} (see .ci/run)")
        return process


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until something accepts on ``port`` (FFmpeg prints nothing when it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ffmpeg exited: {process.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        if _listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ffmpeg did not listen on {port} within {timeout} s")


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (from /proc: connecting would be FFmpeg's one client)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return True
    return False


def probe(path: Path) -> dict:
    """What ffprobe reads of the file's video: codec, size, frame rate, frames and duration."""
    command = [_tool("ffprobe"), "-v", "error", "-select_streams", "v:0", "-count_frames"]
    command += ["-show_entries", "stream=codec_name,width,height,avg_frame_rate,r_frame_rate,nb_read_frames"]
    command += ["-show_entries", "format=duration", "-of", "json", str(path)]
    found = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout)
    stream = found["streams"][0]
    num, den = (int(x) for x in stream["avg_frame_rate"].split("/"))
    return {
        "codec": stream["codec_name"],
        "width": stream["width"],
        "height": stream["height"],
        "fps": num / den if den else 0.0,
        "frames": int(stream["nb_read_frames"]),
        "duration": float(found["format"]["duration"]),
    }
