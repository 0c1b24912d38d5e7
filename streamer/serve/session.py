"""One websocket connection's conversation, without the socket: what it is told on joining, the
answer to each message, its results subscription and its viewers' peers.

The server reads and writes the socket; a ``Session`` only turns messages into replies (and
results into ``send`` calls), so every rule of the protocol can be tested without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..config import ServerConfig
from ..errors import StreamerError
from ..live.landing import PromptRequest
from ..live.serving import ServedStream, Serving
from ..outputs.hub import Subscription
from .protocol import (
    AddBox,
    AddPoints,
    AddStream,
    AutoSettings,
    Message,
    Offer,
    ProtocolError,
    RemoveObject,
    RemoveStream,
    SetStyle,
    Subscribe,
    TextPrompt,
    Unsubscribe,
    encode,
    error_reply,
    message_id,
    parse_message,
)
from .protocol import Reset as ResetMessage
from .webrtc import Viewers

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

logger = logging.getLogger(__name__)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``: a flood gets errors, not the server's time."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Session:
    """One connection to ``pipeline``'s server; ``send`` delivers what its subscription sends."""

    def __init__(
        self, pipeline: Serving, viewers: Viewers, config: ServerConfig, send: Callable[[str], Awaitable[None]]
    ) -> None:
        self.pipeline, self.viewers, self.config, self._send = pipeline, viewers, config, send
        self.peers: list[RTCPeerConnection] = []
        self.subscription: Subscription | None = None
        self._bucket = TokenBucket(config.rate, config.burst)

    def hello(self) -> str:
        """The first message: what the page needs to start (ICE servers, streams, what it may do)."""
        return encode(
            "hello",
            random_weights=self.pipeline.random_weights,
            model=self.pipeline.model,
            browser_camera=self.viewers.camera_streams(),
            stream_control=self.config.stream_control,
            **self.config.ice.for_page(),
            **self.state(),
        )

    def status(self) -> str:
        """A periodic ``state`` message, with this connection's viewers' video clocks."""
        return encode("state", **self.state(), video_clock=self.viewers.clocks(self.peers))

    def replied(self) -> None:
        """The last reply went out: a new subscription starts sending only after its ack."""
        if self.subscription is not None:
            self.subscription.start()  # a no-op once running

    async def close(self) -> None:
        """The connection ended: its subscription and its viewers' peers go."""
        await self._unsubscribe()
        for peer in self.peers:
            await self.viewers.close(peer)
        self.peers.clear()

    async def reply(self, raw: str | bytes) -> str:
        """Answer one message: an ack, an answer, or an error (``rate_limited`` past the
        connection's rate); never raise."""
        if not self._bucket.take():
            return encode("error", id=message_id(raw), code="rate_limited", message="too many messages; slow down")
        msg_id, stream = None, None
        try:
            message = parse_message(raw)
            msg_id = message.id
            if isinstance(message, (AddStream, RemoveStream)):
                return await self._control(message)
            if isinstance(message, (Subscribe, Unsubscribe)):
                return await self._subscribe(message)
            stream = self.pipeline.stream(message.stream)
            if isinstance(message, Offer):
                peer, sdp = await self.viewers.answer(message.sdp, stream.name)
                self.peers.append(peer)
                return encode("answer", id=msg_id, stream=stream.name, sdp=sdp)
            if isinstance(message, AutoSettings):
                try:
                    settings = await stream.auto_settings(message.changes)
                except (TypeError, ValueError) as exc:
                    raise ProtocolError("bad_field", str(exc)) from None
                return encode("ack", id=msg_id, stream=stream.name, auto=settings)
            if isinstance(message, TextPrompt):
                await stream.text(message.labels)
                return encode("ack", id=msg_id, stream=stream.name, text=message.labels)
            if isinstance(message, SetStyle):
                styles = await stream.set_style(message.style, message.obj_id)
                return encode("ack", id=msg_id, stream=stream.name, styles=styles)
            objects = await self._prompt(stream, message)
            stream.metrics.prompt("ok")
            return encode("ack", id=msg_id, stream=stream.name, objects=objects)
        except StreamerError as exc:  # ProtocolError, PromptError, UnknownObjectError, TooManyViewersError...
            if stream is not None:
                stream.metrics.prompt("rejected")
            return error_reply(exc, msg_id)
        except Exception as exc:  # a bug or a GPU failure: report it, keep serving
            logger.exception("message failed")
            if stream is not None:
                stream.metrics.error("prompt")
            return encode("error", id=msg_id, code="internal", message=f"the server failed on this message: {exc}")

    async def _prompt(self, stream: ServedStream, message: Message) -> list[int]:
        if isinstance(message, (AddPoints, AddBox)):
            shown = None
            if message.frame_rtp is not None:  # exact: the frame this viewer's browser had on screen
                shown = self.viewers.shown_frame(self.peers, stream.name, message.frame_rtp)
            return await stream.prompt(_request(message, shown))
        if isinstance(message, RemoveObject):
            return await stream.remove_object(message.obj_id)
        assert isinstance(message, ResetMessage)
        return await stream.reset()

    async def _subscribe(self, message: Subscribe | Unsubscribe) -> str:
        """Start (or replace) or end this connection's results subscription."""
        await self._unsubscribe()
        if isinstance(message, Unsubscribe):
            return encode("ack", id=message.id, subscribed=False)
        for name in message.streams or []:
            self.pipeline.stream(name)  # an unknown stream is an error, before anything starts
        subscription = Subscription(
            self._send,
            self.pipeline.metrics,
            masks=message.masks,
            max_rate=message.max_rate,
            streams=message.streams,
            events=message.events,
        )
        # What is known now goes first, so a subscriber need not wait for the next tracked frame.
        for name in message.streams or list(self.pipeline.streams):
            latest = self.pipeline.hub.latest(name)
            if latest is not None:
                await self.pipeline.hub.snapshot(name, message.masks)
                subscription.results(latest, message.masks)
        self.subscription = subscription  # started once its ack is sent (``replied``)
        self.pipeline.hub.add(subscription)
        return encode(
            "ack",
            id=message.id,
            subscribed=True,
            streams=message.streams,
            masks=message.masks,
            max_rate=message.max_rate,
            events=message.events,
        )

    async def _unsubscribe(self) -> None:
        if self.subscription is not None:
            self.pipeline.hub.discard(self.subscription)
            await self.subscription.close()
            self.subscription = None

    async def _control(self, message: AddStream | RemoveStream) -> str:
        """Add or remove a stream at run time, where the server allows it."""
        if not self.config.stream_control:
            raise ProtocolError(
                "forbidden", "this server does not let viewers add or remove streams: start it with --stream-control"
            )
        if isinstance(message, RemoveStream):
            self.pipeline.stream(message.stream)  # unknown names fail here, before anything closes
            await self.viewers.close_stream(message.stream)
            await self.pipeline.remove_stream(message.stream)
        else:
            if len(self.pipeline.streams) >= self.config.max_streams:
                raise ProtocolError("too_many_streams", f"this server already has {self.config.max_streams} streams")
            await self.pipeline.open_stream(message.stream, message.source)
        logger.info("%s stream %s", "added" if isinstance(message, AddStream) else "removed", message.stream)
        return encode("ack", id=message.id, stream=message.stream, streams=list(self.pipeline.streams))

    def state(self) -> dict:
        """Every stream's figures, as ``hello`` and ``state`` carry them."""
        streams = []
        for name, stream in self.pipeline.streams.items():
            status = stream.status()
            streams.append(
                {
                    "name": name,
                    "objects": status.objects,
                    "labels": status.labels,
                    "auto": status.auto,
                    "styles": status.styles,
                    "video_fps": round(status.video_fps, 2),
                    "mask_fps": round(status.mask_fps, 2),
                    "mask_age_ms": rounded(status.mask_age_ms),
                    "latency_ms": round(status.latency_ms, 1),
                    "inference_ms": round(status.inference_ms, 1),
                    "frame_index": status.frame_index,
                    "source_alive": status.source_alive,
                    "reconnecting": status.reconnecting,
                    "placement": status.placement,
                    "viewers": self.viewers.count(name),
                }
            )
        return {"streams": streams, "server_time_ms": time.time() * 1000, "viewers": len(self.viewers.peers)}


def _request(message: AddPoints | AddBox, shown: int | None) -> PromptRequest:
    """A websocket prompt as the engine takes it (no protocol types past the server)."""
    if isinstance(message, AddPoints):
        points, labels, box = tuple(message.points), tuple(message.labels), None
    else:
        points, labels, box = None, None, message.box
    return PromptRequest(message.obj_id, points, labels, box, message.frame_index, message.frame_ts, shown)


def rounded(value: float | None) -> float | None:
    """A figure in ms to one decimal, or None where there is none yet."""
    return None if value is None else round(value, 1)
