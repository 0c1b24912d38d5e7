"""Per-label counts (MQTT's PREFIX/STREAM/LABEL and PREFIX/STREAM/ZONE/LABEL), from events."""

from __future__ import annotations

from streamer.outputs.counts import LabelCounts
from streamer.outputs.events import Event
from streamer.serve.protocol import AutoSettings, ProtocolError, TextPrompt, parse_message


def _event(kind: str, obj_id: int, label: str | None, zone: str | None = None) -> Event:
    return Event(kind, "door", obj_id, 0.0, 0, None, zone, label)


def test_counts_follow_the_events_and_report_only_what_changed() -> None:
    counts = LabelCounts()
    for event in (_event("added", 1, "person"), _event("added", 2, "person"), _event("added", 3, "car")):
        counts.event(event)
    assert counts.changes("door") == {(None, "person"): 2, (None, "car"): 1}
    counts.event(_event("entered", 1, "person", "porch"))
    assert counts.changes("door") == {("porch", "person"): 1}
    counts.event(_event("removed", 1, "person"))
    assert counts.changes("door") == {(None, "person"): 1, ("porch", "person"): 0}  # zeros are sent
    assert counts.changes("door") == {}
    counts.event(_event("added", 4, None))  # no label: not counted
    assert counts.changes("door") == {}


def test_auto_and_text_messages_parse_and_refuse_what_they_must() -> None:
    message = parse_message('{"type": "auto", "stream": "door", "enabled": true, "labels": "person, car"}')
    assert isinstance(message, AutoSettings) and message.changes == {"enabled": True, "labels": ["person", "car"]}
    text = parse_message('{"type": "text", "text": "person, red car"}')
    assert isinstance(text, TextPrompt) and text.labels == ["person", "red car"]
    for raw, code in (
        ('{"type": "auto", "detector": "os:system"}', "bad_field"),  # no import paths from the wire
        ('{"type": "auto", "enabled": "yes"}', "bad_field"),
        ('{"type": "auto", "colour": 1}', "bad_field"),
        ('{"type": "text", "text": " , "}', "bad_field"),
        ('{"type": "text"}', "missing_field"),
    ):
        try:
            parse_message(raw)
        except ProtocolError as exc:
            assert exc.code == code, raw
        else:
            raise AssertionError(f"{raw} was accepted")
