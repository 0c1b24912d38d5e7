"""The display between tracked frames, against ground truth: masks carried along the flow, flow
only where there are objects, and clicks on frames the tracker never saw.

``synthetic:shapes`` knows every frame's true masks and ``OracleTracker`` returns them: what is
measured here is the display and the prompt routing, not a model (no weights involved).
"""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import pytest

from streamer.config import ConfigError, DisplayConfig, load_config
from streamer.errors import NoFrameError
from streamer.live.display import Display, Masks
from streamer.live.landing import CARRY_BACK_S, PromptRequest
from streamer.live.pipeline import Pipeline
from streamer.model.preprocess import scaled_size
from streamer.sources import Frame
from streamer.sources.shapes import ShapesScene, ShapesSource
from tests.oracle import OracleTracker

FPS = 30.0


def _truth_masks(scene: ShapesScene, n: int, width: int) -> Masks:
    size = scaled_size(scene.height, scene.width, width)
    layers = [cv2.resize(m.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA) - 0.5 for m in scene.masks(n)]
    return Masks(n, n / FPS, list(range(len(layers))), 16 * np.stack(layers))


def _frame(scene: ShapesScene, n: int) -> Frame:
    return Frame(scene.render(n)[0], n, n / FPS, n / FPS)


def _replay(mode: str, speed: float, every: int, frames: int = 60) -> tuple[list[float], Display]:
    """A tracker that needs ``every`` frames per frame: each frame is shown with the masks of the
    newest frame it finished, which it took ``every`` frames earlier. IoU of every shown frame."""
    scene = ShapesScene(640, 360, speed, count=3, seed=1)
    display = Display(DisplayConfig(mask_motion=mode))
    ious, taken = [], 0
    for n in range(frames):
        if n >= taken + every:
            display.set_masks(_truth_masks(scene, taken, display.config.mask_width))
            taken = n
        output = display.show(_frame(scene, n))
        if output.obj_ids:
            truth = scene.masks(n)
            ious += [(m & t).sum() / max(1, (m | t).sum()) for m, t in zip(output.masks, truth)]
    return ious, display


def test_flow_keeps_masks_on_moving_objects() -> None:
    """At 5 px/frame and one tracked frame in five, masks carried by flow stay on the objects
    (mean IoU >= 0.9) where held masks fall behind them."""
    flow, _ = _replay("flow", speed=5, every=5)
    hold, _ = _replay("hold", speed=5, every=5)
    assert np.mean(flow) >= 0.9, np.mean(flow)
    assert np.mean(flow) > np.mean(hold) + 0.1, (np.mean(flow), np.mean(hold))


def test_masks_restart_from_each_tracked_frame() -> None:
    """Shown on the very frame the masks were computed on, they are drawn as computed (the chain
    starts afresh there), then carried on the following frames."""
    scene = ShapesScene(640, 360, 6, count=2, seed=2)
    display = Display()
    for n in range(4):
        display.show(_frame(scene, n))
    masks = _truth_masks(scene, 4, display.config.mask_width)
    display.set_masks(masks)
    same = display.show(_frame(scene, 4))
    np.testing.assert_array_equal(same.logits, masks.logits)
    assert same.mask_age_ms == 0 and same.mask_frame == 4
    later = display.show(_frame(scene, 5))
    assert not np.array_equal(later.logits, masks.logits) and later.mask_age_ms == pytest.approx(1000 / FPS)


def test_flow_only_for_streams_with_objects_and_viewers() -> None:
    """No objects, nobody watching, or hold mode: no optical flow is computed at all."""
    scene = ShapesScene(640, 360, 5, seed=3)
    idle, unwatched = Display(), Display()
    unwatched.set_masks(_truth_masks(scene, 0, unwatched.config.mask_width))
    for n in range(10):
        assert idle.show(_frame(scene, n)).obj_ids == []
        held_as_computed = unwatched.show(_frame(scene, n), carry=False)
        np.testing.assert_array_equal(held_as_computed.logits, unwatched.masks.logits)
    _, held = _replay("hold", speed=5, every=5, frames=15)
    _, carried = _replay("flow", speed=5, every=5, frames=15)
    assert idle.flows_computed == unwatched.flows_computed == held.flows_computed == 0
    assert carried.flows_computed >= 10


def test_points_are_carried_between_frames() -> None:
    """A point on a shape, carried back and forth along the flow, lands on that shape's same spot."""
    scene = ShapesScene(640, 360, 8, count=1, seed=4)
    display = Display()
    display.set_masks(_truth_masks(scene, 0, display.config.mask_width))  # flows are needed now
    for n in range(12):
        display.show(_frame(scene, n))
    (x2, y2), (x10, y10) = scene.centres(2)[0], scene.centres(10)[0]
    assert np.hypot(x10 - x2, y10 - y2) > 50  # far enough that an uncarried click misses
    [(bx, by)] = display.carry([(x10, y10)], source=10, target=2)
    [(fx, fy)] = display.carry([(x2, y2)], source=2, target=10)
    assert np.hypot(bx - x2, by - y2) < 4 and np.hypot(fx - x10, fy - y10) < 4
    assert display.carry([(x2, y2)], source=2, target=99) is None


def test_display_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="mask_motion must be one of flow, hold"):
        DisplayConfig(mask_motion="blur")


def test_bad_display_config_names_file_and_field(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("display:\n  mask_motion: smear\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: display: mask_motion must be one of"):
        load_config(path)
    path.write_text("display:\n  mask_motion: hold\n  flow_width: 200\n")
    assert load_config(path).display == DisplayConfig(mask_motion="hold", flow_width=200)


class _Driver:
    """A stream whose camera frames and tracker rounds the test steps by hand (no timing)."""

    def __init__(self, speed: float) -> None:
        self.source = ShapesSource(640, 360, fps=FPS, speed=speed, count=3, seed=5)  # not started
        self.start = time.monotonic()
        self.oracle = OracleTracker(self.source)
        self.pipeline = Pipeline()
        self.stream = self.pipeline.add_stream("s", self.source, self.oracle)
        self.scene = self.source.scene

    def show(self, n: int) -> None:
        frame = Frame(self.source.image(n), n, n / FPS, self.captured_at(n))
        self.stream.display.show(frame)
        self.stream.pending = frame

    def captured_at(self, n: int) -> float:
        return self.start + n / FPS

    def frame_ts(self, n: int) -> float:
        """Frame ``n``'s capture time on the wall clock, in ms (what a viewer's frame_ts estimates)."""
        return 1000 * (time.time() - time.monotonic() + self.captured_at(n))

    async def track_pending(self) -> None:
        stream = self.stream
        (outcome,) = await self.pipeline.engine.round([(stream.track, stream.take())])
        stream.finish(outcome)

    def click(self, n: int, shape: int) -> PromptRequest:
        """A click on shape ``shape`` of frame ``n``, the frame on the viewer's screen."""
        x, y = self.scene.centres(n)[shape]
        return PromptRequest(1, points=((x / self.scene.width, y / self.scene.height),), labels=(1,), shown=n)

    def shape_under(self, n: int, x: float, y: float) -> int | None:
        hit = [i for i, m in enumerate(self.scene.masks(n)) if m[int(y), int(x)]]
        return hit[-1] if hit else None


def test_clicks_land_on_what_the_viewer_saw() -> None:
    """A slow tracker has frames 0, 10 and 20; the viewer clicks shapes on frames it showed:
    on a tracked frame the click is used as is; between tracked frames it is carried along the
    flow to the nearest one (where the uncarried point would miss); on a frame newer than any
    tracked one, it is carried back to the newest tracked one if that is at most CARRY_BACK_S
    older, else that frame becomes the tracker's next. Each time the shape clicked is selected."""
    drive = _Driver(speed=15)

    async def main() -> None:
        for n in range(28):
            drive.show(n)
            if n in (0, 10, 20):
                await drive.track_pending()
        prompts = drive.oracle.prompts
        # On a tracked frame.
        assert await drive.stream.prompt(drive.click(10, shape=0)) == [1]
        assert (prompts[-1].frame_index, prompts[-1].shape) == (1, 0)  # tracker frame 1 is frame 10
        # Between tracked frames: carried back to frame 10 (the raw point would miss shape 1 there).
        x, y = drive.scene.centres(14)[1]
        assert drive.shape_under(10, x, y) != 1
        await drive.stream.prompt(drive.click(14, shape=1))
        assert (prompts[-1].frame_index, prompts[-1].shape) == (1, 1)
        # A box between tracked frames, found by capture time (a browser without RTP times): carried
        # on to frame 20, the nearest tracked one, and centred on the shape there.
        (x0, y0), (x1, y1) = drive.scene.centres(16)[2], drive.scene.centres(20)[2]
        r = drive.scene.shapes[2].radius
        w, h = drive.scene.width, drive.scene.height
        box = ((x0 - r) / w, (y0 - r) / h, (x0 + r) / w, (y0 + r) / h)
        await drive.stream.prompt(PromptRequest(2, box=box, frame_ts=drive.frame_ts(16)))
        carried = prompts[-1].box
        assert (prompts[-1].frame_index, prompts[-1].shape) == (2, 2)
        assert (
            np.hypot(x1 - x0, y1 - y0) > 40
            and np.hypot((carried[0] + carried[2]) / 2 - x1, (carried[1] + carried[3]) / 2 - y1) < 5
        )
        # Newer than anything tracked, 0.2 s after frame 20: carried back there, nothing stepped
        # (the raw point would miss shape 0 on frame 20); its masks are frame 20's.
        x, y = drive.scene.centres(26)[0]
        assert drive.shape_under(20, x, y) != 0
        await drive.stream.prompt(drive.click(26, shape=0))
        assert (prompts[-1].frame_index, prompts[-1].shape) == (2, 0) and drive.oracle.frame_index == 2
        assert drive.stream.display.masks.frame == 20
        # Newer by more than CARRY_BACK_S: frame 60 is stepped, then prompted, as clicked.
        assert (60 - 20) / FPS > CARRY_BACK_S
        for n in range(28, 61):
            drive.show(n)
        shape = next(i for i, (x, y) in enumerate(drive.scene.centres(60)) if drive.shape_under(60, x, y) == i)
        await drive.stream.prompt(drive.click(60, shape=shape))
        assert (prompts[-1].frame_index, prompts[-1].shape) == (3, shape) and drive.oracle.frame_index == 3
        assert drive.stream.frame_index == 3 and drive.stream.display.masks.frame == 60
        await drive.pipeline.stop()

    asyncio.run(main())


def test_a_click_queued_before_the_round_that_took_its_frame_waits_for_it() -> None:
    """Nothing tracked yet; the scheduler has handed the frame on screen to a round that is queued
    behind the click: the click lands on that frame once the round has it, instead of failing
    with no_frame (the frame's pixels already went with the round)."""
    drive = _Driver(speed=5)

    async def main() -> None:
        for n in range(4):
            drive.show(n)
        stream = drive.stream
        frame = stream.take()  # the scheduler took frame 3; its round is submitted just after the click
        click = asyncio.create_task(stream.prompt(drive.click(3, shape=0)))
        await asyncio.sleep(0)
        (outcome,) = await drive.pipeline.engine.round([(stream.track, frame)])
        assert await click == [1]
        assert outcome.result is not None and outcome.result.frame_index == 0
        prompted = drive.oracle.prompts[-1]
        assert (prompted.frame_index, prompted.shape) == (0, 0)  # on the round's frame: camera frame 3
        await drive.pipeline.stop()

    asyncio.run(main())


def test_a_click_during_a_round_runs_in_its_pause_and_is_tracked_on_the_rounds_frame() -> None:
    """A round is in flight (the stand-in's pause for changes comes halfway, where the image
    encoder would have run) when a viewer clicks a new object: the click runs in that pause,
    done before the round is, carried to the newest tracked frame, and the round's own frame
    already tracks the object. A click that would hand the tracker a frame of its own (the
    newest tracked frame is over CARRY_BACK_S older) waits for the round's end, and then lands
    on the round's frame, carried there."""
    drive = _Driver(speed=5)
    engine, stream, prompts = drive.pipeline.engine, drive.stream, drive.oracle.prompts

    async def main() -> None:
        drive.show(0)
        await drive.track_pending()  # frame 0 is tracker frame 0
        drive.oracle.delay = 0.4
        for n in range(1, 4):
            drive.show(n)
        in_flight = asyncio.create_task(engine.round([(stream.track, stream.take())]))  # frame 3
        await asyncio.sleep(0.05)
        change = await engine.prompt(stream.track, drive.click(2, shape=0))
        assert not in_flight.done()  # it ran in the round's pause
        assert (prompts[-1].frame_index, prompts[-1].shape) == (0, 0) and change.stepped == 0
        (outcome,) = await in_flight
        assert outcome.result is not None and outcome.result.obj_ids == [1]  # tracked on frame 3
        stream.finish(outcome)

        for n in range(4, 41):
            drive.show(n)
        assert (40 - 3) / FPS > CARRY_BACK_S
        in_flight = asyncio.create_task(engine.round([(stream.track, stream.take())]))  # frame 40
        drive.show(41)
        await asyncio.sleep(0.05)
        change = await engine.prompt(stream.track, PromptRequest(2, points=((0.5, 0.5),), labels=(1,), shown=41))
        (outcome,) = await in_flight
        assert outcome.result is not None and outcome.result.obj_ids == [1]  # the round was done first
        assert prompts[-1].frame_index == 2 and change.stepped == 0  # on the round's frame 40, then the nearest
        await drive.pipeline.stop()

    asyncio.run(main())


def test_a_click_with_no_frame_to_land_on_is_refused_not_kept_waiting() -> None:
    """The frame on screen went to the tracker, which was then reset (so no round will bring it
    back): a click is refused with no_frame at once, instead of waiting for a round that never
    comes."""
    drive = _Driver(speed=5)

    async def main() -> None:
        drive.show(0)
        drive.stream.take()  # handed to a round that never runs
        await drive.pipeline.engine.reset(drive.stream.track)
        with pytest.raises(NoFrameError):
            await asyncio.wait_for(drive.stream.prompt(drive.click(0, shape=0)), 5)
        await drive.pipeline.stop()

    asyncio.run(main())


def test_tracked_frames_remember_where_they_came_from() -> None:
    """The tracker keeps each frame's camera index and capture time with it (the pipeline keeps no
    second record of its tracked frames); a frame stepped without an origin has none."""
    drive = _Driver(speed=5)

    async def main() -> None:
        for n in range(3):
            drive.show(n)
            await drive.track_pending()
        frames = drive.oracle.tracked_frames
        assert [(f.index, f.origin.source) for f in frames] == [(0, 0), (1, 1), (2, 2)]
        assert frames[1].origin.captured_at == drive.captured_at(1) and (frames[1].height, frames[1].width) == (
            360,
            640,
        )
        await drive.pipeline.stop()

    asyncio.run(main())


def test_restored_objects_keep_their_ids_on_the_shapes_they_covered() -> None:
    """A stream that moved (a cluster worker was lost) gets its objects back under their ids from
    their last masks, sent compactly: on the newest frame shown, each selects the shape its mask
    covered, though the shapes have moved since."""
    from streamer.cluster.reports import CompactTracked

    before, after = _Driver(speed=5), _Driver(speed=5)

    async def main() -> None:
        for n in range(3):
            before.show(n)
            await before.track_pending()
        await before.stream.prompt(before.click(2, shape=0))
        click = before.click(2, shape=2)
        await before.stream.prompt(PromptRequest(9, points=click.points, labels=(1,), shown=2))
        latest = before.pipeline.outputs.latest("s")
        masks = CompactTracked.of(latest).masks()
        assert sorted(masks) == [1, 9] and all(m.any() for m in masks.values())
        for n in range(6):
            after.show(n)
        assert await after.stream.restore(masks) == [1, 9]
        restored = after.oracle.prompts
        assert [(p.obj_id, p.shape, p.frame_index) for p in restored] == [(1, 0, 0), (9, 2, 0)]
        assert after.stream.display.masks.frame == 5  # on the newest frame shown
        await before.pipeline.stop()
        await after.pipeline.stop()

    asyncio.run(main())
