"""Styles: what each one draws, how a stream's and its objects' styles are chosen (YAML, flags, the
page's ``style`` message), and the privacy promise on the synthetic scene with its ground truth:
with ``blur``, every pixel of every tracked shape is blurred in every frame the video sends, from
the first frame that shows its mask on, between tracked frames (where the masks are carried along
the flow) as on them."""

from __future__ import annotations

import asyncio
import json

import cv2
import numpy as np
import pytest

from streamer.cli import parse_args
from streamer.config import DisplayConfig
from streamer.serve.protocol import ProtocolError, SetStyle, parse_message
from streamer.sources.shapes import ShapesScene
from streamer.video.overlay import color_for, draw_masks
from streamer.video.styles import KEY_COLOUR, Look, blur_size, render
from tests.oracle_server import click_shape, oracle_server
from tests.outputs.test_mqtt import until


@pytest.fixture(scope="module")
def scene_frame() -> tuple[np.ndarray, np.ndarray]:
    """A textured 320x240 frame and its first shape's true mask."""
    image, masks = ShapesScene(320, 240, speed=3, count=2, seed=4).render(5)
    return image, masks[:1]


def test_each_style_draws_what_it_says(scene_frame) -> None:
    frame, masks = scene_frame
    mask = masks[0]
    inner = cv2.erode(mask.view(np.uint8), np.ones((9, 9), np.uint8)).view(bool)  # away from any outline

    overlay, covered = render(frame, masks, [1], Look())
    assert covered is None and np.array_equal(overlay, draw_masks(frame, masks, [1], labels=True))

    outline, _ = render(frame, masks, [1], Look("outline"))
    assert np.array_equal(outline[inner], frame[inner]) and (outline != frame).any(axis=2).sum() > 100
    assert (outline == color_for(1)).all(axis=2).sum() > 100

    label, _ = render(frame, masks, [1], Look("label"), names={1: "disc"})
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    assert tuple(label[y + h // 2, x]) == color_for(1)  # the box's left edge
    assert np.array_equal(label[y + 20 : y + h - 5, x + 5 : x + w - 5], frame[y + 20 : y + h - 5, x + 5 : x + w - 5])

    plain, _ = render(frame, masks, [1], Look("plain"))
    assert np.array_equal(plain, frame)

    blurred, covered = render(frame, masks, [1], Look("blur", margin=0.05), age_ms=0)
    grown = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= 16
    assert covered is not None and np.array_equal(covered, grown)  # grown by 5% of 320 px: 16 px
    assert Look(margin=0.05, growth=0.01).blur_margin(320, 100) == 16 + 10  # and 1% more per frame carried
    assert Look(margin=0.2, growth=0.1).blur_margin(320, 1000) == 80  # at most a quarter of the width
    full = cv2.blur(frame, (blur_size(320),) * 2)
    assert np.array_equal(blurred[covered], full[covered]) and np.array_equal(blurred[~covered], frame[~covered])

    background = np.zeros((60, 80, 3), np.uint8)
    background[:, :, 2] = 200
    for style, behind in (
        ("blur_background", full),
        ("replace_background", cv2.resize(background, (320, 240), interpolation=cv2.INTER_AREA)),
        ("cutout", np.broadcast_to(np.array(KEY_COLOUR, np.uint8), frame.shape)),
    ):
        drawn, _ = render(frame, masks, [1], Look(style, background=background))
        assert np.array_equal(drawn[mask], frame[mask]), style  # the object as the camera saw it
        assert np.array_equal(drawn[~mask], behind[~mask]), style
        assert np.array_equal(render(frame, masks[:0], [], Look(style, background=background))[0], behind)


def test_a_look_takes_the_page_over_the_label_over_the_stream() -> None:
    look = Look.of("overlay", {"person": "blur"}, {1: "person", 2: None, 3: "car"}, {3: "label"})
    assert [look.style_of(i) for i in (1, 2, 3, 4)] == ["blur", "overlay", "label", "overlay"]
    assert Look.of("cutout", {}, {}, {}).style_of(1) == "plain"  # a background style keeps objects plain


def test_styles_from_yaml_flags_and_the_page(tmp_path) -> None:
    assert DisplayConfig(style="cutout", styles={"face": "blur"}).styles == {"face": "blur"}
    for bad, message in (
        ({"style": "sepia"}, "style must be one of overlay"),
        ({"styles": {"person": "cutout"}}, r"styles\[person\] must be one of overlay, outline, label, blur, plain"),
        ({"style": "replace_background"}, "needs display.background"),
        ({"privacy_margin": 0.5}, "privacy_margin must be 0 to 0.25"),
    ):
        with pytest.raises(ValueError, match=message):
            DisplayConfig(**bad)
    args = parse_args(["--source", "a=synthetic", "--source", "b=synthetic", "--style", "b=blur", "--blur", "person"])
    assert [s.style for s in args.streams] == [None, "blur"]
    assert args.config_data.display.styles == {"person": "blur"} and args.config_data.display.style == "overlay"
    assert parse_args(["--source", "synthetic", "--style", "outline"]).config_data.display.style == "outline"
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--style", "c=blur"])

    assert parse_message(json.dumps({"type": "style", "style": "blur"})) == SetStyle(None, None, "blur", None)
    assert parse_message(json.dumps({"type": "style", "obj_id": 2, "style": None})).obj_id == 2
    for bad in ({"style": "cutout", "obj_id": 1}, {"style": None}, {"style": "sepia"}):
        with pytest.raises(ProtocolError, match="style must be one of"):
            parse_message(json.dumps({"type": "style", **bad}))


def test_a_blurred_stream_never_shows_a_tracked_shape(tmp_path) -> None:
    """Two shapes clicked on a ``blur`` stream, the oracle tracking them every ~3 frames (its
    delay), the display carrying the masks along the flow in between; every frame published
    from the first that shows each shape's mask is checked against the truth: all of the shape's
    pixels are blurred (they equal the blurred camera frame there). Then the page sets one shape
    back to ``overlay`` and the stream to ``plain``: that shape is drawn, and nothing is blurred."""

    async def main() -> None:
        display = DisplayConfig(style="blur")
        async with oracle_server(width=480, height=270, delay=0.1, speed=4.0, display=display) as server:
            stream = server.pipeline.stream("cam")
            source = stream.source
            checked: dict[int, int] = {1: 0, 2: 0}

            async def watch() -> None:
                seq = -1
                with stream.watching():
                    while True:
                        output = await stream.next_output(seq)
                        seq = output.seq
                        n = source.frame_number(output.frame)
                        if n is None or not output.obj_ids:
                            continue
                        image, covered = output.rendered
                        truth = source.scene.masks(n)
                        full = cv2.blur(output.frame, (blur_size(480),) * 2)
                        for obj_id in output.obj_ids:
                            shape = truth[obj_id - 1]  # object 1 is shape 0, 2 is shape 1
                            assert covered is not None and covered[shape].all(), (n, obj_id, (~covered[shape]).sum())
                            assert np.array_equal(image[shape], full[shape])
                            checked[obj_id] += 1

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.3)
            await click_shape(server, 1, shape=0)
            await asyncio.sleep(0.5)
            await click_shape(server, 2, shape=1)
            await until(lambda: watcher.done() or min(checked.values()) >= 60, 30, "two seconds of both shapes")
            if watcher.done():
                watcher.result()  # the check that failed
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            assert stream.display.flows_computed > 0  # frames between tracked ones were carried

            assert await stream.set_style("overlay", 1) == {"style": "blur", "objects": {1: "overlay"}}
            await stream.set_style("plain")
            output = await stream.next_output(stream.latest.seq)
            image, covered = output.rendered
            assert covered is None and (image != output.frame).any(axis=2).sum() > 100  # shape 0's overlay
            assert stream.status().styles == {"style": "plain", "objects": {1: "overlay"}}
            await stream.remove_object(1)
            assert stream.styles()["objects"] == {}

    asyncio.run(main())
