"""MQTT output: events and object snapshots where Home Assistant, Node-RED and most monitoring
stacks listen.

Topics, under ``PREFIX`` (``sam2`` unless the URL's path names another):

- ``PREFIX/available``: ``online`` / ``offline``, retained; ``offline`` is also the client's last
  will, so the broker says it when the server dies without a word;
- ``PREFIX/STREAM/events``: one JSON event per message (QoS 1);
- ``PREFIX/STREAM/objects``: the stream's newest results as JSON, at most ``rate`` a second (QoS 0);
- ``PREFIX/STREAM/LABEL`` and ``PREFIX/STREAM/ZONE/LABEL``: how many objects with that label the
  stream has, in all and in the zone (``counts.py``), retained, sent when they change (QoS 1).

paho-mqtt runs the connection on a thread of its own and reconnects with backoff (0.5 s doubling
to 30 s) whenever the broker is unreachable, goes away or refuses us; the server starts and
serves either way. Publishing never waits on the network: while disconnected, events wait in a
bounded buffer (``buffer``; the oldest are dropped beyond it, counted in
``streamer_results_dropped{output="mqtt"}``) and only the newest snapshot per stream is kept.
Passwords never reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..config import MqttConfig
from ..config.values import Broker, parse_broker
from ..metrics import Metrics
from .counts import LabelCounts
from .events import Event
from .hub import QueuedSink
from .results import Tracked

logger = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_PREFIX = "sam2"
RECONNECT_S = (0.5, 30.0)
REPEAT_FAILURE_LOG_S = 60.0  # the same connection failure is logged again at most this often
OFFLINE_WAIT_S = 2.0  # at shutdown, how long ``offline`` may take to reach the broker
CREDENTIALS_FIX = "check the user and password in --mqtt or mqtt.url"
IN_FLIGHT = 100  # QoS 1 messages paho may hold unacknowledged, beyond ``buffer``


def topic_part(name: str) -> str:
    """A label or zone as one MQTT topic level (no ``/``, ``+`` or ``#``)."""
    return "".join("_" if c in "/+#" else c for c in name)


def paho_client(broker: Broker, client_id: str) -> paho.Client:
    """A paho client with ``broker``'s credentials (not connected)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    return client


class MqttPublisher(QueuedSink):
    """Every stream's events and objects, to one broker."""

    kind = "mqtt"

    def __init__(self, config: MqttConfig, metrics: Metrics) -> None:
        assert config.url is not None
        super().__init__(metrics, masks=config.masks, max_rate=config.rate, max_events=config.buffer)
        self.config, self.broker = config, parse_broker(config.url)
        self.available_topic = f"{self.broker.prefix}/available"
        self.connected = False
        self.counts = LabelCounts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: tuple[str, float] | None = None  # the last failure logged, and when
        client_id = config.client_id or f"sam2-stream-{socket.gethostname()}-{os.getpid()}"
        self._client = paho_client(self.broker, client_id)
        self._client.will_set(self.available_topic, "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(*RECONNECT_S)  # type: ignore[arg-type]  # paho's stub says int; it sleeps floats
        # Messages handed to paho wait there for the broker's acknowledgement (and across a
        # reconnection): room for those beside the buffer, and ``online``.
        self._client.max_queued_messages_set(config.buffer + IN_FLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect

    def ready(self) -> bool:
        return self.connected

    def start(self) -> None:
        """Start connecting (in the background: an unreachable broker holds nothing up)."""
        self._loop = asyncio.get_running_loop()
        super().start()
        logger.info("MQTT: publishing to %s", self.broker.address)
        self._client.connect_async(self.broker.host, self.broker.port, self.config.keepalive)
        self._client.loop_start()

    async def close(self, flush: bool = True) -> None:
        """Send what is queued, say ``offline``, disconnect."""
        await super().close(flush)
        if self.connected:
            info = self._client.publish(self.available_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                await asyncio.to_thread(info.wait_for_publish, OFFLINE_WAIT_S)
        self.connected = False  # before disconnecting: this is no loss to report
        self.metrics.mqtt_connected.set(0)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def send_event(self, event: Event) -> None:
        info = self._client.publish(f"{self.broker.prefix}/{event.stream}/events", event.message(), qos=1)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.metrics.results_dropped.labels(self.kind, "event").inc()
        else:  # sent, or held by paho until the connection is back
            self.metrics.mqtt_published.labels("events").inc()
        self.counts.event(event)
        self._publish_counts(event.stream)

    async def send_results(self, tracked: Tracked) -> None:
        info = self._client.publish(f"{self.broker.prefix}/{tracked.stream}/objects", tracked.message(self.masks))
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self.metrics.mqtt_published.labels("objects").inc()
        self.counts.results(tracked)
        self._publish_counts(tracked.stream)

    def _publish_counts(self, stream: str) -> None:
        for (zone, label), count in sorted(self.counts.changes(stream).items(), key=str):
            where = stream if zone is None else f"{stream}/{topic_part(zone)}"
            self._client.publish(f"{self.broker.prefix}/{where}/{topic_part(label)}", str(count), qos=1, retain=True)
            self.metrics.mqtt_published.labels("counts").inc()

    # -- paho's thread ------------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            hint = ""
            if reason.value in (4, 5, 134, 135):  # bad user name or password / not authorised
                hint = f": {CREDENTIALS_FIX}"
            self._log_failure(f"the broker at {self.broker.address} refused the connection ({reason}){hint}")
            return
        client.publish(self.available_topic, "online", qos=1, retain=True)
        self._failure = None
        self._call(self._now_connected, True, None)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._log_failure(f"cannot reach the broker at {self.broker.address}; retrying")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._call(self._now_connected, False, str(reason))

    def _log_failure(self, message: str) -> None:
        """Log a failure once, and again only if it changes or a minute has passed."""
        now = time.monotonic()
        if self._failure is None or self._failure[0] != message or now - self._failure[1] > REPEAT_FAILURE_LOG_S:
            logger.error("MQTT: %s", message)
            self._failure = (message, now)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(fn, *args)

    # -- the event loop -----------------------------------------------------------------------------

    def _now_connected(self, connected: bool, reason: str | None) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        self.metrics.mqtt_connected.set(int(connected))
        if connected:
            logger.info("MQTT: connected to %s", self.broker.address)
            self.kick()  # send what waited
        else:
            logger.warning("MQTT: lost the broker at %s (%s); reconnecting", self.broker.address, reason)


__all__ = ["MqttConfig", "MqttPublisher", "parse_broker"]
