"""Launcher for the GStreamer RTSP test server (tests/rtsp_server.py, run by the system Python)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    """A real RTSP server on 127.0.0.1 serving ``clip``; can be killed and restarted on its port."""

    def __init__(self, clip: Path) -> None:
        self.clip, self.port = clip, 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port), str(self.clip)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ready"):
            self.kill()
            raise RuntimeError(
                "the RTSP test server did not start: it needs Debian's python3-gi, "
                "gir1.2-gst-rtsp-server-1.0 and gstreamer1.0-plugins-{base,good,bad} (see .ci/run)"
            )
        self.port = int(line.split()[1])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()  # type: ignore[union-attr]
            self.proc = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/clip"
