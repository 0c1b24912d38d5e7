"""MQTT against a real broker (Debian's mosquitto, started on a free loopback port): topics and
payloads, availability and the last will, a broker that dies and comes back, one that is not
there at start, refused credentials, and the bounded buffer while disconnected."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.config import MqttConfig
from streamer.config.values import parse_broker
from streamer.doctor import FAIL, OK, WARN, _check_broker
from streamer.metrics import Metrics
from streamer.outputs.events import Event
from streamer.outputs.mqtt import MqttPublisher

from ..conftest import wait_for_line
from ..mosquitto import Listener, Mosquitto
from ..oracle_server import click_shape, oracle_server
from .test_results import check

ROOT = Path(__file__).resolve().parents[2]


async def until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_broker_urls() -> None:
    broker = parse_broker("mqtt://home:p%40ss@10.0.0.2:1884/house/cams")
    assert (broker.host, broker.port, broker.prefix, broker.username, broker.password) == (
        "10.0.0.2",
        1884,
        "house/cams",
        "home",
        "p@ss",
    )
    assert "p@ss" not in repr(broker) and broker.address == "mqtt://home:***@10.0.0.2:1884/house/cams"
    assert parse_broker("mqtt://broker").port == 1883 and parse_broker("mqtt://broker").prefix == "sam2"
    with pytest.raises(ValueError, match=r"'mqtt://u:\*\*\*@b:x' has a bad port") as caught:
        parse_broker("mqtt://u:hunter2@b:x")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="must start with mqtt://"):
        parse_broker("mqtts://broker")
    with pytest.raises(ValueError, match="may not hold"):
        parse_broker("mqtt://broker/a/#")


def test_events_and_objects_survive_a_broker_restart(tmp_path) -> None:
    """online (retained), events and rate-limited objects; the broker is killed: the server goes
    on, the removal made meanwhile waits in the buffer; the broker returns: online again, the
    removal arrives, objects flow again; shutdown publishes offline (retained)."""
    broker = Mosquitto(tmp_path).start()
    listener = Listener(broker.port)
    metrics = Metrics()
    publisher = MqttPublisher(MqttConfig(url=f"{broker.url}/site", rate=4), metrics)

    def connected() -> float | None:
        return metrics.registry.get_sample_value("streamer_mqtt_connected")

    async def main() -> None:
        async with oracle_server(sinks=(publisher,)) as server:
            await asyncio.to_thread(listener.wait_for, "site/available", b"online")
            late = await asyncio.to_thread(Listener, broker.port, "late")  # gets it from the broker's store
            assert (await asyncio.to_thread(late.wait_for, "site/available", b"online")).retain
            late.close()
            await click_shape(server, 5, shape=0)
            added = (await asyncio.to_thread(listener.wait_for, "site/cam/events")).json()
            check(added, "event")
            assert (added["type"], added["obj_id"], added["stream"]) == ("added", 5, "cam")
            start = time.monotonic()
            await asyncio.sleep(2.0)
            objects = listener.on("site/cam/objects", since=start)
            assert 6 <= len(objects) <= 10  # at most 4 a second
            for message in objects:
                check(message.json())
            assert [o["obj_id"] for o in objects[-1].json()["objects"]] == [5]

            await asyncio.to_thread(broker.saved)  # with the listener's session
            broker.kill()
            await until(lambda: connected() == 0, what="the publisher to notice the broker is gone")
            await server.pipeline.stream("cam").remove_object(5)
            await asyncio.sleep(0.5)
            assert server.pipeline.stream("cam").state.video_fps > 10  # the video never waited
            restarted = time.monotonic()
            broker.start()
            await until(
                lambda: any(not m.retain and m.payload == b"online" for m in listener.on("site/available", restarted)),
                timeout=40,
                what="online to be published again",
            )
            removed = (await asyncio.to_thread(listener.wait_for, "site/cam/events", None, restarted)).json()
            assert (removed["type"], removed["obj_id"]) == ("removed", 5)
            back = await asyncio.to_thread(listener.wait_for, "site/cam/objects", None, restarted)
            assert back.json()["objects"] == []
            assert connected() == 1

    try:
        asyncio.run(main())
        listener.wait_for("site/available", b"offline")
        late = Listener(broker.port, "later")  # a client that arrives later is told the server is offline
        assert late.wait_for("site/available").payload == b"offline"
        late.close()
    finally:
        listener.close()
        broker.kill()


def test_events_wait_in_a_bounded_buffer_while_the_broker_is_away(tmp_path) -> None:
    """No broker at first: 20 events come, 5 fit the buffer, 15 are counted as dropped; when the
    broker appears, the newest 5 are published in order."""
    broker = Mosquitto(tmp_path).start()
    listener = Listener(broker.port)  # subscribed before the broker goes: its session waits for it
    broker.saved()
    broker.kill()
    metrics = Metrics()
    publisher = MqttPublisher(MqttConfig(url=broker.url, buffer=5), metrics)

    async def main() -> None:
        publisher.start()
        for n in range(20):
            publisher.event(Event("lost", "cam", 1, time.time(), n, None))
        await asyncio.sleep(0.5)
        dropped = metrics.registry.get_sample_value(
            "streamer_results_dropped_total", {"output": "mqtt", "kind": "event"}
        )
        assert dropped == 15
        broker.start()
        try:
            await until(lambda: len(listener.on("sam2/cam/events")) >= 5, timeout=40, what="the buffered events")
            await asyncio.sleep(0.3)
            frames = [m.json()["frame_index"] for m in listener.on("sam2/cam/events")]
            assert frames == [15, 16, 17, 18, 19]
        finally:
            await publisher.close()
            listener.close()
            broker.kill()

    asyncio.run(main())


def test_refused_credentials_are_said_plainly_and_never_logged(tmp_path, caplog) -> None:
    """A wrong password: one clear error line naming the broker and what to check, the password
    in no log line, the server serving on; the right one connects."""
    caplog.set_level(logging.DEBUG)
    with Mosquitto(tmp_path, users={"cams": "right-horse"}) as broker:
        wrong = MqttPublisher(MqttConfig(url=f"mqtt://cams:wrong-horse@127.0.0.1:{broker.port}"), Metrics())
        right_metrics = Metrics()
        right = MqttPublisher(MqttConfig(url=f"mqtt://cams:right-horse@127.0.0.1:{broker.port}"), right_metrics)

        async def main() -> None:
            async with oracle_server(sinks=(wrong,)) as server:
                await until(lambda: "refused the connection" in caplog.text, what="the refusal to be logged")
                await asyncio.sleep(1.5)  # retries go on, quietly
                assert server.pipeline.stream("cam").state.video_fps > 10
                right.start()
                await until(lambda: right.connected, what="the right password to connect")
                await right.close()

        asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refusals) == 1, refusals
    assert f"mqtt://cams:***@127.0.0.1:{broker.port}/sam2" in refusals[0]
    assert "check the user and password" in refusals[0]
    assert "wrong-horse" not in caplog.text and "right-horse" not in caplog.text


def _serve(tmp_path: Path, mqtt_url: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "streamer", "--source", "synthetic", "--random-weights", "--image-size", "128",
               "--device", "cpu", "--port", "0", "--mqtt", mqtt_url]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    return process, log


def test_server_starts_without_its_broker_and_says_offline_when_it_stops(tmp_path) -> None:
    """The command line with --mqtt and no broker yet: it serves, says it cannot reach the broker,
    connects when the broker comes; Ctrl-C publishes offline. Killed outright, the broker
    publishes offline for it (the last will)."""
    broker = Mosquitto(tmp_path)
    process, log = _serve(tmp_path, f"{broker.url}/lab")
    try:
        wait_for_line(log, "open http://", process)
        wait_for_line(log, f"cannot reach the broker at {broker.url}/lab; retrying", process)
        broker.start()
        listener = Listener(broker.port)
        listener.wait_for("lab/available", b"online", timeout=40)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        listener.wait_for("lab/available", b"offline")
        assert "Traceback" not in log.read_text()

        process, log = _serve(tmp_path, f"{broker.url}/lab")
        since = time.monotonic()
        listener.wait_for("lab/available", b"online", since)
        process.kill()
        process.wait()
        listener.wait_for("lab/available", b"offline", since)
        late = Listener(broker.port, "late")
        assert late.wait_for("lab/available").payload == b"offline"  # retained
        late.close()
        listener.close()
    finally:
        if process.poll() is None:
            process.kill()
        broker.kill()


def test_doctor_checks_the_broker(tmp_path) -> None:
    """``sam2-stream doctor --mqtt URL``: a broker that takes the credentials is ok, one that
    refuses them a failure that says what to check, no broker a warning (the server would retry)."""
    with Mosquitto(tmp_path, users={"cams": "right-horse"}) as broker:
        base = f"127.0.0.1:{broker.port}"
        ok = _check_broker(f"mqtt://cams:right-horse@{base}")
        refused = _check_broker(f"mqtt://cams:wrong-horse@{base}")
    gone = _check_broker(f"mqtt://cams:right-horse@{base}")
    assert (ok.status, ok.detail) == (OK, f"the broker at mqtt://cams:***@{base}/sam2 accepts the connection")
    assert refused.status == FAIL and "refused the connection" in refused.detail
    assert "check the user and password" in refused.fix and "wrong-horse" not in refused.detail
    assert gone.status == WARN and "cannot reach the broker" in gone.detail


def test_per_label_counts_are_retained_topics_per_stream_and_zone(tmp_path) -> None:
    """PREFIX/STREAM/LABEL and PREFIX/STREAM/ZONE/LABEL on a real broker: counts as objects come,
    enter a zone and go, zeros included, and retained for a client that subscribes later."""
    broker = Mosquitto(tmp_path).start()
    listener = Listener(broker.port)
    publisher = MqttPublisher(MqttConfig(url=f"{broker.url}/site"), Metrics())

    def event(kind: str, obj_id: int, label: str | None, zone: str | None = None) -> Event:
        return Event(kind, "door", obj_id, time.time(), 1, (0.0, 0.0, 1.0, 1.0), zone, label)

    async def main() -> None:
        publisher.start()
        try:
            await asyncio.to_thread(listener.wait_for, "site/available", b"online")
            for e in (event("added", 1, "person"), event("added", 2, "person"), event("added", 3, "red car")):
                publisher.event(e)
            await asyncio.to_thread(listener.wait_for, "site/door/person", b"2")
            await asyncio.to_thread(listener.wait_for, "site/door/red car", b"1")
            publisher.event(event("entered", 1, "person", "porch"))
            await asyncio.to_thread(listener.wait_for, "site/door/porch/person", b"1")
            publisher.event(event("left", 1, "person", "porch"))
            publisher.event(event("removed", 1, "person"))
            await asyncio.to_thread(listener.wait_for, "site/door/porch/person", b"0")
            await asyncio.to_thread(listener.wait_for, "site/door/person", b"1")
            late = await asyncio.to_thread(Listener, broker.port, "late")
            assert (await asyncio.to_thread(late.wait_for, "site/door/person", b"1")).retain
            late.close()
        finally:
            await publisher.close()

    try:
        asyncio.run(main())
    finally:
        listener.close()
        broker.kill()
