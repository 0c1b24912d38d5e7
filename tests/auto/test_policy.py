"""The automatic-tracking policy, on hand-made frames and on the synthetic traffic scene."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.auto.detections import Detections, box_iou
from streamer.auto.policy import AutoPolicy, Observed
from streamer.config import AutoConfig
from tests.auto_scene import simulate

SIZE = (100, 200)  # frame height, width; masks at the same size here


def _ids() -> object:
    top = [0]

    def next_id() -> int:
        top[0] += 1
        return top[0]

    return next_id


def _dets(*items: tuple[str, tuple[float, float, float, float], float]) -> Detections:
    boxes = np.array([box for _, box, _ in items], np.float32).reshape(-1, 4)
    return Detections(boxes, tuple(label for label, _, _ in items), np.array([s for _, _, s in items], np.float32))


def _mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def _observed(objects: dict[int, tuple[int, int, int, int] | None], t: float = 0.0, origins=()) -> Observed:
    masks = np.stack([_mask(b) if b else np.zeros(SIZE, bool) for b in objects.values()]) if objects else None
    masks = masks if masks is not None else np.zeros((0, *SIZE), bool)
    return Observed(list(objects), masks, masks.any(axis=(1, 2)), SIZE, t, list(origins))


def test_a_confident_detection_starts_an_object_announced_after_probation() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, probation=3), _ids())
    box = (20, 20, 60, 60)
    plan = policy.update(_dets(("person", box, 0.9)), _observed({}))
    assert [(b.obj_id, b.label, b.origin, b.announced) for b in plan.births] == [(1, "person", "auto", False)]
    assert plan.births[0].box == (20.0, 20.0, 60.0, 60.0)
    assert policy.on_probation(1)
    plan = policy.update(_dets(("person", box, 0.9)), _observed({1: box}, 0.2))
    assert not plan.births and not plan.announced  # two detections of three
    plan = policy.update(_dets(("person", box, 0.9)), _observed({1: box}, 0.4))
    assert plan.announced == [1] and not policy.on_probation(1)


def test_one_false_detection_never_becomes_an_announced_object() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, probation=3), _ids())
    box = (20, 20, 60, 60)
    policy.update(_dets(("person", box, 0.9)), _observed({}))
    plan = policy.update(Detections.empty(), _observed({1: box}, 0.2))
    assert not plan.ends  # one miss on probation is forgiven
    plan = policy.update(Detections.empty(), _observed({1: box}, 0.4))
    assert [(e.obj_id, e.reason) for e in plan.ends] == [(1, "probation")] and not plan.announced


def test_low_scores_do_not_start_objects_but_keep_them_alive() -> None:
    config = AutoConfig(enabled=True, probation=1, threshold=0.6, end_after=2)
    policy = AutoPolicy(config, _ids())
    box = (20, 20, 60, 60)
    assert not policy.update(_dets(("car", box, 0.5)), _observed({})).births  # below the threshold
    policy.update(_dets(("car", box, 0.9)), _observed({}))
    for t in range(1, 5):  # half hidden: scored 0.4, still the same car
        plan = policy.update(_dets(("car", box, 0.4)), _observed({1: box}, t))
        assert not plan.ends and not plan.births


def test_matching_is_per_label_and_a_click_takes_the_detectors_label() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, probation=1), _ids())
    box = (20, 20, 60, 60)
    policy.update(_dets(("car", box, 0.9)), _observed({}))  # object 1: a car
    # A person detected where the car is: not the car, and the car's mask covers it: nothing starts.
    plan = policy.update(_dets(("person", (22, 22, 58, 58), 0.9)), _observed({1: box}, 0.1))
    assert not plan.births and policy.label_of(1) == "car"
    # A clicked object (id 7, no label) matched by a detection takes its label.
    plan = policy.update(_dets(("dog", (100, 20, 150, 80), 0.8)), _observed({1: box, 7: (100, 20, 150, 80)}, 0.2))
    assert plan.labelled[7] == ("dog", 0.8) and not plan.births


def test_an_object_undetected_for_end_after_runs_ends_and_so_does_an_absent_one() -> None:
    config = AutoConfig(enabled=True, probation=1, end_after=3, absent_s=1.0)
    policy = AutoPolicy(config, _ids())
    box = (20, 20, 60, 60)
    policy.update(_dets(("car", box, 0.9), ("person", (100, 10, 140, 90), 0.9)), _observed({}))
    # The car is still seen by the tracker but no longer detected; the person's mask is empty.
    ended = []
    for t in range(1, 4):
        plan = policy.update(Detections.empty(), _observed({1: box, 2: None}, 0.5 * t))
        ended += [(t, e.obj_id, e.reason) for e in plan.ends]
    assert sorted(ended) == [(3, 1, "undetected"), (3, 2, "absent")]  # the person: out of sight 0.5 s to 1.5 s


def test_objects_a_person_added_are_never_ended_unless_configured() -> None:
    for end_clicked, expected in ((False, []), (True, [(5, "absent")])):
        policy = AutoPolicy(AutoConfig(enabled=True, end_after=100, absent_s=0.5, end_clicked=end_clicked), _ids())
        ends: list[tuple[int, str]] = []
        for t in range(4):
            if not ends:  # once ended, the stream no longer has it
                plan = policy.update(Detections.empty(), _observed({5: None}, t, origins=["click"]))
                ends += [(e.obj_id, e.reason) for e in plan.ends]
        assert ends == expected


def test_an_automatic_object_a_person_corrects_becomes_theirs() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, end_after=1, probation=3), _ids())
    policy.update(_dets(("car", (20, 20, 60, 60), 0.9)), _observed({}))
    policy.protect(1)
    assert not policy.on_probation(1)
    for t in range(1, 4):
        assert not policy.update(Detections.empty(), _observed({1: (20, 20, 60, 60)}, t)).ends


def test_a_drifted_mask_is_reseeded_from_its_detection_at_most_every_few_runs() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, probation=1, reseed_iou=0.7, reseed_every=3), _ids())
    policy.update(_dets(("car", (20, 20, 60, 60), 0.9)), _observed({}))
    drifted = (30, 20, 70, 60)  # IoU with the detection: 0.6
    assert box_iou(np.array([[20, 20, 60, 60]], np.float32), np.array([drifted], np.float32))[0, 0] < 0.7
    reseeded = []
    for run in range(1, 8):
        plan = policy.update(_dets(("car", (20, 20, 60, 60), 0.9)), _observed({1: drifted}, run))
        reseeded += [(run, r.obj_id, r.box) for r in plan.reseeds]
    assert reseeded == [
        (1, 1, (20.0, 20.0, 60.0, 60.0)),
        (4, 1, (20.0, 20.0, 60.0, 60.0)),
        (7, 1, (20.0, 20.0, 60.0, 60.0)),
    ]


def test_two_objects_on_one_thing_merge_into_the_older() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, probation=1), _ids())
    policy.update(_dets(("car", (20, 20, 60, 60), 0.9), ("car", (120, 20, 160, 60), 0.9)), _observed({}))
    # The second one's mask slid onto the first's (a tracker following the wrong car).
    plan = policy.update(
        _dets(("car", (20, 20, 60, 60), 0.9)), _observed({1: (20, 20, 60, 60), 2: (21, 20, 61, 60)}, 0.1)
    )
    assert [(e.obj_id, e.reason, e.into) for e in plan.ends] == [(2, "merged", 1)]


def test_overlapping_detections_start_one_object_and_max_objects_caps_them() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, max_objects=2), _ids())
    plan = policy.update(
        _dets(
            ("car", (20, 20, 60, 60), 0.9),
            ("car", (22, 21, 61, 60), 0.8),  # the same car, found twice
            ("car", (100, 20, 140, 60), 0.7),
            ("car", (150, 20, 190, 60), 0.6),
        ),
        _observed({}),
    )
    assert [b.box for b in plan.births] == [(20.0, 20.0, 60.0, 60.0), (100.0, 20.0, 140.0, 60.0)]


def test_labels_limit_what_starts() -> None:
    policy = AutoPolicy(AutoConfig(enabled=True, labels=["person"]), _ids())
    plan = policy.update(_dets(("car", (20, 20, 60, 60), 0.9), ("person", (100, 20, 140, 90), 0.9)), _observed({}))
    assert [b.label for b in plan.births] == ["person"]


def test_a_text_prompt_adopts_what_it_finds_at_once() -> None:
    policy = AutoPolicy(AutoConfig(enabled=False, probation=3), _ids())
    plan = policy.adopt(_dets(("red car", (20, 20, 60, 60), 0.7)), _observed({}))
    assert [(b.label, b.origin, b.announced) for b in plan.births] == [("red car", "text", True)]


@pytest.mark.parametrize("interval", [1, 5])
def test_on_the_traffic_scene_every_crossing_gets_one_stable_id(interval: int) -> None:
    """Shapes enter, cross, occlude each other and leave; the detector misses 10%, makes 0.05
    false boxes a frame and jitters by 3%: each crossing must get exactly one announced object,
    no false one, and every object must end once its shape has left."""
    score = simulate(AutoConfig(enabled=True, every_frames=interval), interval=interval, frames=600)
    assert score.instances >= 8
    assert score.births_found == score.instances
    assert score.id_switches == 0
    assert score.false_tracks == 0
    assert score.missed_deaths == 0
    assert score.late_births_max <= (AutoConfig().probation + 1) * interval + 3
    assert score.ends.get("undetected", 0) + score.ends.get("absent", 0) >= score.instances - 4


def test_without_probation_false_detections_become_false_tracks() -> None:
    """The same scene with probation 1: the false boxes are announced (what probation prevents)."""
    score = simulate(AutoConfig(enabled=True, every_frames=1, probation=1), interval=1, frames=600, false_rate=0.2)
    assert score.false_tracks > 0
