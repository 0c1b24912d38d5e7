"""Runs the official EdgeTAM video predictor on a scripted session; executed by the Python of a
venv that has ``edgetam-dimos`` (its own top-level ``sam2``), never imported by the suite.

    python edgetam_official.py JOB.json OUT.npz

JOB: {"weights": state-dict .pt, "frames": JPEG folder, "image_size": int, "until": last frame,
"objects": {id: [event, ...]}}; an event is a prompt on "frame" given when the stream's newest
frame was "at", with "points" and "labels", or "box", or "mask" (a .npy path).

Every object runs in its own inference state. The official predictor is the legacy SAM 2 one: it
refuses new objects once tracking has started, and encodes all objects of a prompted frame
together. SAM 2.1's predictor, which the streaming tracker follows for every family, tracks
objects independently. A prompt on a frame already tracked is a correction; a prompt on an
earlier frame is followed by propagating the object again up to the newest frame.

OUT: logits [H, W]: "f{frame}_o{obj}" on each frame as the stream reached it (prompts on that
frame included), "final_o{obj}" on the last frame once every prompt was applied.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import sam2.modeling.backbones.timm as timm_backbone
import timm
import torch
from sam2.build_sam import build_sam2_video_predictor


def _no_download(*args, **kwargs):  # the checkpoint holds the trunk: no ImageNet weights
    kwargs["pretrained"] = False
    return timm.create_model(*args, **kwargs)


def build_predictor(image_size: int, device: str = "cpu"):
    """The official EdgeTAM video predictor at ``image_size``, without ImageNet weights; its
    config is for 1024 px, so its rotary grids are set to follow the input size (bench/
    official_predictor.py builds it here too)."""
    timm_backbone.create_model = _no_download
    side = image_size // 16
    return build_sam2_video_predictor(
        "configs/edgetam.yaml",
        None,
        device=device,
        hydra_overrides_extra=[
            f"++model.image_size={image_size}",
            f"++model.memory_attention.layer.cross_attention.q_sizes=[{side},{side}]",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{side},{side}]",
        ],
    )


def main(job_path: str, out_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    predictor = build_predictor(job["image_size"])
    predictor.load_state_dict(torch.load(job["weights"], map_location="cpu"), strict=True)
    if "keys" in job:  # the official network's parameter names: the checkpoint's keys
        with open(job["keys"], "w") as f:
            json.dump(list(predictor.state_dict()), f)
    # On the CPU the official fills mask holes with OpenCV; sam2 1.1.0 (and the streaming tracker
    # on a machine without sam2's CUDA extension) does not.
    predictor.fill_hole_area = 0
    until = job["until"]
    out: dict[str, np.ndarray] = {}

    def keep(prefix, frames):
        for frame, ids, logits in frames:
            for i, obj in enumerate(ids):
                out[f"{prefix}{frame}_o{obj}"] = logits[i, 0].float().numpy()

    def propagate(state, first, last):  # frames first..last
        return predictor.propagate_in_video(state, first, last - first) if last >= first else []

    for obj_text, events in job["objects"].items():
        obj = int(obj_text)
        state = predictor.init_state(job["frames"])
        tracked = None  # the newest frame this object has an output for
        for event in events:
            frame, at = event["frame"], event["at"]
            if tracked is not None and at > tracked:  # the stream went on to `at`
                keep("f", propagate(state, tracked + 1, at))
            tracked = at
            output = _prompt(predictor, state, frame, obj, event)
            keep("f" if frame == at else "late", [output])
            if frame < at:  # a prompt on an earlier frame: tracked again up to the newest
                keep("late", propagate(state, frame + 1, at))
        keep("f", propagate(state, tracked + 1, until))
        # the object's output on the last frame once every prompt has been applied
        last = out.get(f"late{until}_o{obj}", out.get(f"f{until}_o{obj}"))
        out[f"final_o{obj}"] = last
    np.savez(out_path, **out)


def _prompt(predictor, state, frame, obj, prompt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "mask" in prompt:
            return predictor.add_new_mask(state, frame, obj, np.load(prompt["mask"]))
        return predictor.add_new_points_or_box(
            state,
            frame,
            obj,
            points=prompt.get("points"),
            labels=prompt.get("labels"),
            box=prompt.get("box"),
            clear_old_points="box" in prompt,
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
