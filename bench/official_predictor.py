"""Times a family's official video predictor; run by bench/tracker.py in a subprocess, with the
Python of whichever venv has that family's official ``sam2`` (sam2 1.1.0 for SAM 2.1, the
``edgetam-dimos`` fork for EdgeTAM, see tests/official.py). Imports nothing of this project's
package; the official EdgeTAM is built by tests/edgetam_official.py, as the parity test builds it.

    python bench/official_predictor.py JOB.json OUT.json

JOB: {"family": "sam2.1"|"edgetam", "config", "weights", "frames" (JPEG folder), "image_size",
"device", "bfloat16", "vos_optimized", "clicks": [[x, y], ...] (pixels), "objects": [1, 3],
"long_frames" (a JPEG folder for the memory run, or null)}.
OUT: {"times": {n: [seconds per frame...]}, "memory": {frame: rss_mb}}.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import torch


def _predictor(job: dict):
    if job["family"] == "edgetam":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from edgetam_official import build_predictor  # the one place the official EdgeTAM is set up

        _fix_batched_perceiver()
        predictor = build_predictor(job["image_size"], job["device"])
    else:
        from sam2.build_sam import build_sam2_video_predictor

        options = {"vos_optimized": True} if job["vos_optimized"] else {}
        predictor = build_sam2_video_predictor(
            job["config"],
            None,
            device=job["device"],
            hydra_overrides_extra=[f"++model.image_size={job['image_size']}"],
            **options,
        )
    predictor.load_state_dict(torch.load(job["weights"], map_location="cpu"))
    return predictor


def _fix_batched_perceiver() -> None:
    """The official ``forward_2d`` calls ``.view`` on an expanded tensor, which fails for more than
    one object at a time (EdgeTAM issue #15, the multi-object crash); ``.reshape`` is the fix, at
    no cost. The rest of the method is the official code."""
    import math

    from sam2.modeling import perceiver

    def forward_2d(self, x):
        b, c, h, w = x.shape
        latents_2d = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(-1, 1, c)
        num_window = int(math.sqrt(self.num_latents_2d))
        x = perceiver.window_partition(x.permute(0, 2, 3, 1), h // num_window).flatten(1, 2)
        for layer in self.layers:
            latents_2d = layer(latents_2d, x)
        latents_2d = latents_2d.view(b, num_window, num_window, c).permute(0, 3, 1, 2)
        pos_2d = self.position_encoding(latents_2d).permute(0, 2, 3, 1).flatten(1, 2)
        latents_2d = self.norm(latents_2d.permute(0, 2, 3, 1).flatten(1, 2))
        return latents_2d, pos_2d

    perceiver.PerceiverResampler.forward_2d = forward_2d


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _session(predictor, folder: str, clicks: list, n_obj: int):
    state = predictor.init_state(folder, offload_video_to_cpu=True)
    for obj_id, click in enumerate(clicks[:n_obj], start=1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=[click], labels=[1])
    return predictor.propagate_in_video(state), state["num_frames"]


def main(job_path: str, out_path: str) -> None:
    warnings.filterwarnings("ignore")
    with open(job_path) as f:
        job = json.load(f)
    predictor = _predictor(job)
    device = job["device"]
    out: dict = {"times": {}, "memory": {}}
    with torch.autocast("cuda", torch.bfloat16, enabled=job["bfloat16"]):
        for n_obj in job["objects"]:
            times = []
            _sync(device)
            start = time.perf_counter()
            frames, _ = _session(predictor, job["frames"], job["clicks"], n_obj)
            for frame_index, _, masks in frames:
                masks.cpu()  # the output a caller needs, as ours returns numpy
                _sync(device)
                now = time.perf_counter()
                if frame_index > 0:
                    times.append(now - start)
                start = now
            out["times"][n_obj] = times
        if job["long_frames"]:
            out["memory"]["before_loading"] = _rss_mb()
            frames, count = _session(predictor, job["long_frames"], job["clicks"], 3)
            out["memory"]["after_loading"] = _rss_mb()
            for frame_index, _, _ in frames:
                if frame_index in (200, count // 2, count - 1):
                    out["memory"][frame_index] = _rss_mb()
            out["memory"]["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
