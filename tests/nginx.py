"""Debian's nginx as a reverse proxy for the tests, with the map and location block of
docs/nginx.conf (the documented config, not a copy), listening on a free loopback port."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def documented_blocks(upstream_port: int) -> tuple[str, str]:
    """The map and the location block of docs/nginx.conf, proxying to ``upstream_port``."""
    text = (ROOT / "docs" / "nginx.conf").read_text()
    mapping = re.search(r"^map .*?^}", text, re.S | re.M)
    location = re.search(r"^    location /cams/ \{.*?^    }", text, re.S | re.M)
    assert mapping and location, "docs/nginx.conf lost its map or location block"
    return mapping.group(0), location.group(0).replace("127.0.0.1:8765", f"127.0.0.1:{upstream_port}")


class Nginx:
    def __init__(self, folder: Path, upstream_port: int, listen: str = "127.0.0.1") -> None:
        if not Path(NGINX).exists():
            pytest.fail("nginx is missing: apt-get install nginx (.ci/run does)")
        with socket.socket() as probe:
            probe.bind((listen, 0))
            self.port = probe.getsockname()[1]
        self.folder, self.listen = folder, listen
        mapping, location = documented_blocks(upstream_port)
        temp = " ".join(
            f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = folder / "nginx.conf"
        self.conf.write_text(
            f"daemon off;\nmaster_process off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log info;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n access_log {folder}/access.log;\n {temp}\n{mapping}\n"
            f" server {{\n  listen {listen}:{self.port};\n{location}\n }}\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        self.process = subprocess.Popen([NGINX, "-c", str(self.conf), "-e", str(self.folder / "error.log")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex((self.listen, self.port)) == 0:
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not start: {(self.folder / 'error.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
