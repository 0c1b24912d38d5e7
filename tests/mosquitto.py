"""A real MQTT broker for the tests: Debian's mosquitto on a free loopback port, and a subscriber.

``Mosquitto`` starts the broker, kills it (SIGKILL: a broker that vanishes) and starts it again on
the same port; with ``users`` it requires those user names and passwords. It saves its state
every second, so a ``Listener`` (a paho-mqtt client subscribed to ``#`` with a persistent
session, recording every message) keeps its subscription across a kill, and what is published
before it has reconnected waits for it: tests need not race the client they test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    def __init__(self, folder: Path, users: dict[str, str] | None = None, port: int | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is missing: apt-get install mosquitto (.ci/run does)")
        self.folder, self.port = folder, port or free_port()
        self.log = folder / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "log_dest stderr", "log_type all", "persistence true",
                 f"persistence_location {folder}/", "autosave_interval 1"]  # fmt: skip
        if os.geteuid() == 0:  # else it becomes user mosquitto, who cannot read the test's files
            lines.append("user root")
        if users:
            passwords = folder / "passwords"
            passwords.touch()
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"mosquitto exited: {self.log.read_text()[-2000:]}"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"mosquitto did not start listening in 10 s: {self.log.read_text()[-2000:]}")

    def saved(self, timeout: float = 10.0) -> None:
        """Wait until the broker has saved its state (sessions, subscriptions) since now."""
        database, since = self.folder / "mosquitto.db", time.time()
        deadline = time.monotonic() + timeout
        while not (database.exists() and database.stat().st_mtime > since):
            assert time.monotonic() < deadline, "mosquitto did not save its state"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the broker is gone without a word."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.payload)


class Listener:
    """Subscribed to everything on a broker; reconnects by itself if the broker restarts. Give
    each listener of a broker its own ``name``: the broker keeps one session per name."""

    def __init__(self, port: int, name: str = "listener", topic: str = "#") -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{name}", clean_session=False)
        self._client.reconnect_delay_set(0.1, 0.5)
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port, keepalive=5)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the test listener could not subscribe"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, message.payload, message.retain, time.monotonic()))

    def on(self, topic: str, since: float = 0.0) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic and m.at >= since]

    def wait_for(self, topic: str, payload: bytes | None = None, since: float = 0.0, timeout: float = 15.0) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.on(topic, since):
                if payload is None or message.payload == payload:
                    return message
            time.sleep(0.02)
        seen = sorted({m.topic for m in self.messages})
        raise AssertionError(f"no {payload!r} on {topic} within {timeout} s (topics seen: {seen})")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
