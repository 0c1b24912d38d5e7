"""A connection's conversation without a socket: the protocol's rules on a ``Session`` alone."""

from __future__ import annotations

import asyncio
import json

from streamer.config import ServerConfig
from streamer.serve.session import Session
from streamer.serve.webrtc import Viewers

from ..oracle_server import oracle_pipeline


async def _session(config: ServerConfig) -> tuple[Session, list[dict]]:
    pipeline = oracle_pipeline(("cam", "yard"), width=320, height=180)
    pipeline.start()
    await pipeline.stream("cam").next_output(-1)
    sent: list[dict] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    return Session(pipeline, Viewers(pipeline), config, send), sent


async def _ask(session: Session, message: dict | str) -> dict:
    reply = json.loads(await session.reply(message if isinstance(message, str) else json.dumps(message)))
    session.replied()
    return reply


def test_prompts_and_errors_are_answered_by_id() -> None:
    async def main() -> None:
        session, _ = await _session(ServerConfig())
        try:
            hello = json.loads(session.hello())
            assert [s["name"] for s in hello["streams"]] == ["cam", "yard"] and hello["ice_servers"] == []
            box = {"type": "add_box", "id": "b1", "obj_id": 3, "box": [0.0, 0.0, 1.0, 1.0]}
            assert await _ask(session, box) == {"type": "ack", "id": "b1", "stream": "cam", "objects": [3]}
            unknown = await _ask(session, {**box, "id": 7, "stream": "porch"})
            assert (unknown["type"], unknown["id"], unknown["code"]) == ("error", 7, "unknown_stream")
            bad = await _ask(session, "{not json")
            assert (bad["id"], bad["code"]) == (None, "bad_json")
            control = await _ask(session, {"type": "add_stream", "id": 9, "stream": "x", "source": "synthetic"})
            assert (control["id"], control["code"]) == (9, "forbidden")
            state = json.loads(session.status())
            assert state["type"] == "state" and state["streams"][0]["objects"] == [3]
        finally:
            await session.close()
            await session.pipeline.stop()  # type: ignore[attr-defined]

    asyncio.run(main())


def test_a_flood_is_refused_with_each_message_s_id() -> None:
    async def main() -> list[dict]:
        session, _ = await _session(ServerConfig(rate=0.5, burst=2))
        try:
            return [await _ask(session, {"type": "reset", "id": i}) for i in range(5)]
        finally:
            await session.close()
            await session.pipeline.stop()  # type: ignore[attr-defined]

    replies = asyncio.run(main())
    assert [r["type"] for r in replies[:2]] == ["ack", "ack"]
    assert [(r["id"], r["code"]) for r in replies[2:]] == [
        (2, "rate_limited"),
        (3, "rate_limited"),
        (4, "rate_limited"),
    ]


def test_a_subscription_sends_after_its_ack_and_ends_with_the_session() -> None:
    async def main() -> tuple[dict, list[dict], bool, bool]:
        session, sent = await _session(ServerConfig())
        pipeline = session.pipeline
        try:
            await _ask(session, {"type": "add_box", "id": 1, "obj_id": 1, "box": [0.0, 0.0, 1.0, 1.0]})
            ack = await _ask(session, {"type": "subscribe", "id": 2, "streams": ["cam"], "masks": "rle"})
            for _ in range(100):
                if any(m["type"] == "results" for m in sent):
                    break
                await asyncio.sleep(0.05)
            subscribed = session.subscription in pipeline.hub.sinks
            await session.close()
            return ack, sent, subscribed, session.subscription is None and not pipeline.hub.sinks
        finally:
            await pipeline.stop()  # type: ignore[attr-defined]

    ack, sent, subscribed, gone = asyncio.run(main())
    assert ack["type"] == "ack" and ack["subscribed"] and subscribed
    results = [m for m in sent if m["type"] == "results"]
    assert results and all(m["stream"] == "cam" for m in results)
    assert results[0]["objects"][0]["obj_id"] == 1 and results[0]["masks"] == "rle"
    assert gone


def test_auto_and_text_are_answered_and_state_shows_labels() -> None:
    """``auto`` changes a stream's settings (a value out of range is bad_field, an import path is
    refused); ``text`` is acknowledged with its words; ``state`` carries labels and auto."""

    async def main() -> None:
        session, _ = await _session(ServerConfig())
        try:
            on = await _ask(session, {"type": "auto", "id": 1, "stream": "yard", "enabled": True, "labels": "car"})
            assert (on["type"], on["stream"], on["auto"]["enabled"], on["auto"]["labels"]) == (
                "ack",
                "yard",
                True,
                ["car"],
            )
            assert session.pipeline.stream("yard").auto.config.labels == ["car"]  # type: ignore[attr-defined]
            assert not session.pipeline.stream("cam").auto.config.enabled  # type: ignore[attr-defined]
            bad = await _ask(session, {"type": "auto", "id": 2, "threshold": 3})
            assert (bad["id"], bad["code"]) == (2, "bad_field") and "threshold" in bad["message"]
            code = await _ask(session, {"type": "auto", "id": 3, "detector": "os:system"})
            assert code["code"] == "bad_field"
            text = await _ask(session, {"type": "text", "id": 4, "text": "person, red car"})
            assert text == {"type": "ack", "id": 4, "stream": "cam", "text": ["person", "red car"]}
            box = {"type": "add_box", "id": 5, "obj_id": 3, "box": [0.0, 0.0, 1.0, 1.0]}
            await _ask(session, box)
            streams = {s["name"]: s for s in json.loads(session.status())["streams"]}
            assert streams["cam"]["labels"] == {"3": {"label": None, "origin": "box", "pending": False}}
            assert streams["yard"]["auto"] is True and streams["cam"]["auto"] is False
        finally:
            await session.close()
            await session.pipeline.stop()  # type: ignore[attr-defined]

    asyncio.run(main())
