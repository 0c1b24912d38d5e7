"""Streaming SAM 2 tracker: live frames one at a time, objects added or corrected at any moment.

The official ``SAM2VideoPredictor`` preloads a whole video, keeps every frame's output and runs
objects one by one. Here frames arrive from a source that never ends: only what the memory window
can still use is kept, all objects of a frame share one pass through the memory attention and the
mask decoder, and a prompt may name one of the last few frames (the one the user actually saw),
after which the object is re-propagated to the newest frame. The numbers are the official ones:
the same preprocessing, memory selection and network calls (``SAM2Base``'s own modules).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base
from sam2.utils.misc import concat_points, fill_holes_in_mask_scores

from ..errors import PromptError, UnknownObjectError
from .build import build_model, compile_model
from .families import AUTO, ModelSpec, default_model, family_of, model_spec
from .memory import UNBOUNDED_FRAMES, FrameOutput, Layout, MemoryReader, ObjectMemory
from .preprocess import FramePreprocessor, Resize, check_frame, scaled_size
from .prompts import FramePrompt, Prompt, make_prompt, prompt_fields

logger = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16"]


@dataclass
class FrameResult:
    """Masks of every tracked object on one frame, at the frame's own resolution.

    ``masks`` is bool ``[N, H, W]``, ``logits`` float32 ``[N, H, W]`` (mask = logits > 0),
    ``scores`` float32 ``[N]`` object-presence logits (> 0: the object is visible), in the
    order of ``obj_ids``.
    """

    frame_index: int
    obj_ids: list[int]
    masks: np.ndarray
    logits: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class FrameOrigin:
    """Where a frame came from, as the caller knows it: kept with the frame while the tracker
    remembers it, so a live stream needs no second record of its tracked frames."""

    source: int  # the camera's own frame number
    captured_at: float  # time.monotonic() when it was captured


@dataclass(frozen=True)
class TrackedFrame:
    """A frame the tracker remembers: its index here, its size and its origin (if given)."""

    index: int
    height: int
    width: int
    origin: FrameOrigin | None = None


@dataclass
class _Frame:
    """A frame the tracker still remembers: its size and, once needed, its image features.

    Features are computed only when an object needs them: a stream nobody has prompted costs no
    inference, and its recent frames are encoded on demand when a prompt names one of them.
    """

    index: int
    height: int
    width: int
    image: np.ndarray | None  # kept until the features exist
    origin: FrameOrigin | None = None
    backbone: dict[str, list[torch.Tensor]] | None = None


@dataclass
class _Features:
    """Image features expanded to a batch of objects, in ``SAM2Base``'s flattened layout."""

    vision: list[torch.Tensor]  # [(HW), B, C] per level
    pos: list[torch.Tensor]
    sizes: list[tuple[int, int]]

    @property
    def high_res(self) -> list[torch.Tensor]:
        return [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(self.vision[:-1], self.sizes[:-1])]

    @property
    def top(self) -> torch.Tensor:
        """Top-level features as ``[B, C, H, W]``."""
        x, (h, w) = self.vision[-1], self.sizes[-1]
        return x.permute(1, 2, 0).view(x.size(1), x.size(2), h, w)


class StreamingTracker:
    """Tracks any number of objects through an endless stream of frames with bounded memory.

    Not thread-safe: one worker owns it. Frame indices count up from 0 and keep counting across
    ``reset()`` so that a stale frame reference fails loudly instead of naming a new frame.
    Several streams share one model through ``sibling()`` and are stepped together by
    ``step_streams``.
    """

    def __init__(
        self,
        model: SAM2Base,
        *,
        history: int = 8,
        max_cond_frames: int = 8,
        precision: Precision = "auto",
        resize: Resize | Literal["auto"] = "auto",
        fill_hole_area: int = 8,
        corrections_as_cond: bool = False,
        compile: bool = False,
        attention_batch: int | Literal["auto"] | None = "auto",
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1 frame, got {history}")
        if max_cond_frames < 2:
            raise ValueError(f"max_cond_frames must be at least 2, got {max_cond_frames}")
        self.model = model
        self.family = family_of(model)
        self.spec: ModelSpec | None = None  # set by build(): which registered model this is
        self.random_weights = False  # set by build(): the masks mean nothing (smoke tests)
        self.device = model.device
        self.history = history
        self.max_cond_frames = max_cond_frames
        self.corrections_as_cond = corrections_as_cond  # official add_all_frames_to_correct_as_cond
        if precision == "auto":
            precision = "bfloat16" if self.device.type == "cuda" else "float32"
        self.precision = precision
        # Objects per memory-attention call (None: all of a group). On a CPU one at a time is as
        # fast at 256 px and faster where memories are large (13% at 1024 px with 3 objects: the
        # batched attention's working set outgrows the caches); a GPU wants the whole batch.
        if attention_batch == "auto":
            attention_batch = None if self.device.type == "cuda" else 1
        self.attention_batch = attention_batch
        if resize == "auto":
            resize = "torch" if self.device.type == "cuda" else "pil"
        self.preprocess = FramePreprocessor(model.image_size, self.device, resize)
        self.fill_hole_area = fill_hole_area if _has_hole_filling() else 0
        if compile:
            compile_model(model)
        self._reader = MemoryReader.of(model)
        self._clear_state()

    def _clear_state(self) -> None:
        self._frames: deque[_Frame] = deque(maxlen=self.history)
        self._objects: dict[int, ObjectMemory] = {}
        self._next_index = 0

    def sibling(self) -> StreamingTracker:
        """A tracker for another stream on the same model and settings (the weights are held once)."""
        other = copy.copy(self)
        other._clear_state()
        return other

    @classmethod
    def build(
        cls,
        model: str = "sam2.1_hiera_tiny",
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = None,
        random_init: bool = False,
        seed: int = 0,
        image_size: int | None = None,
        **options: Any,
    ) -> StreamingTracker:
        """Build a registered model (``streamer.model.families.MODELS``) and a tracker on it.

        Weights: ``checkpoint`` if given, else the official file (downloaded once to the cache),
        or seeded random weights when ``random_init=True`` (tests and benchmarks only).
        ``options`` go to the constructor (``history``, ``max_cond_frames``, ``precision``...).
        ``model="auto"`` picks the model and, unless ``image_size`` is given, its input size for
        the device (``families.default_model``).
        """
        torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if model == AUTO:
            choice = default_model(torch_device.type == "cuda", image_size)
            model, image_size = choice.name, choice.image_size
            logger.info("model: %s", choice.why)
        spec = model_spec(model)
        net = build_model(
            spec,
            checkpoint=checkpoint,
            device=torch_device,
            random_init=random_init,
            seed=seed,
            image_size=image_size,
        )
        tracker = cls(net, **options)
        tracker.spec = spec
        tracker.random_weights = random_init
        return tracker

    def describe(self) -> dict[str, Any]:
        """Which model this is, as /healthz, the page's HUD and the logs name it."""
        return {
            "name": self.spec.name if self.spec else None,
            "family": self.family.title,
            "size": self.spec.size if self.spec else "",
            "title": self.spec.title if self.spec else self.family.title,
            "image_size": self.model.image_size,
            "device": str(self.device),
            "random_weights": self.random_weights,
        }

    @property
    def obj_ids(self) -> list[int]:
        """Ids of the tracked objects, in the order results list them."""
        return list(self._objects)

    @property
    def frame_index(self) -> int | None:
        """Index of the newest frame, or None before the first."""
        return self._frames[-1].index if self._frames else None

    @property
    def frame_indices(self) -> list[int]:
        """Frames a prompt may name: the last ``history`` ones."""
        return [f.index for f in self._frames]

    @property
    def tracked_frames(self) -> list[TrackedFrame]:
        """The frames a prompt may name, oldest first, with the origins they were stepped with."""
        return [TrackedFrame(f.index, f.height, f.width, f.origin) for f in list(self._frames)]

    def step(self, frame: np.ndarray, origin: FrameOrigin | None = None) -> FrameResult:
        """Take the next frame (HxWx3 uint8 RGB), track every object on it, return their masks."""
        return step_streams([self], [frame], origins=None if origin is None else [origin])[0]

    @staticmethod
    def step_round(
        trackers: Sequence[StreamingTracker],
        frames: Sequence[np.ndarray],
        *,
        mask_width: int | None = None,
        origins: Sequence[FrameOrigin] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[FrameResult]:
        """``step_streams``, reached through the trackers' class: the pipeline steps any tracker
        kind this way (a stand-in such as ``tests/oracle.py`` brings its own)."""
        return step_streams(trackers, frames, mask_width=mask_width, origins=origins, meanwhile=meanwhile)

    @torch.inference_mode()
    def add_prompt(
        self,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask: Any = None,
        frame_index: int | None = None,
    ) -> FrameResult:
        """Add an object (new ``obj_id``) or correct one, on the newest or a recent frame.

        Points and boxes are in pixels of that frame; clicks on one frame accumulate, a box or
        a mask starts that frame's prompt afresh. A prompt on an earlier frame is applied there
        and the object is re-propagated, so the result is always for the newest frame.
        """
        _check_obj_id(obj_id)
        record = self._frame(frame_index)
        prompt = make_prompt(
            points,
            labels,
            box,
            mask,
            height=record.height,
            width=record.width,
            image_size=self.model.image_size,
            device=self.device,
        )
        obj = self._objects.get(obj_id) or ObjectMemory(obj_id)
        with self._autocast():
            self._apply_prompt(obj, record, prompt)
            self._objects[obj_id] = obj
            newest = self._frames[-1]
            if record.index != newest.index:
                self._repropagate(obj, record.index)
            return self._result(newest)

    def prompt(self, obj_id: int, prompt: FramePrompt, frame_index: int | None = None) -> FrameResult:
        """``add_prompt`` with a typed prompt (what the live engine and its stand-ins use)."""
        return self.add_prompt(obj_id, frame_index=frame_index, **prompt_fields(prompt))

    def memory_bytes(self) -> int:
        """Bytes of tensors the tracker holds (frame features and object memories)."""
        seen: set[int] = set()

        def size(t: torch.Tensor | None) -> int:
            if t is None:
                return 0
            storage = t.untyped_storage()
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes()

        total = sum(size(x) for f in self._frames if f.backbone for xs in f.backbone.values() for x in xs)
        for obj in self._objects.values():
            for out in [*obj.cond.values(), *obj.non_cond.values()]:
                total += sum(size(x) for x in (out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem))
            total += sum(size(x) for p in obj.points.values() for x in p.values())
        return total

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id``; other objects are unaffected."""
        if obj_id not in self._objects:
            raise UnknownObjectError(f"unknown object id {obj_id!r}; tracked objects are {self.obj_ids}")
        del self._objects[obj_id]

    def reset(self) -> None:
        """Forget every object and remembered frame (frame indices keep counting)."""
        self._objects.clear()
        self._frames.clear()

    def check_sibling(self, other: StreamingTracker) -> None:
        """Trackers stepped together run through one of them: they must agree on everything a
        round shares (the model, precision, resizing, hole filling)."""
        mine = (self.precision, self.preprocess.resize, self.fill_hole_area, self.attention_batch)
        theirs = (other.precision, other.preprocess.resize, other.fill_hole_area, other.attention_batch)
        if other.model is not self.model or mine != theirs:
            raise ValueError(
                "trackers stepped together must share one model and its settings: make them with tracker.sibling()"
            )

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.precision == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _frame(self, frame_index: int | None) -> _Frame:
        if not self._frames:
            raise PromptError("no frame yet: call step(frame) before adding prompts")
        if frame_index is None:
            return self._frames[-1]
        for record in self._frames:
            if record.index == frame_index:
                return record
        first, last = self._frames[0].index, self._frames[-1].index
        raise PromptError(
            f"frame {frame_index} is not available: the tracker keeps the last {self.history} "
            f"frames ({first}..{last}); prompt on one of those, or on the newest (frame_index=None)"
        )

    def _ingest(self, record: _Frame) -> _Frame:
        """The next frame becomes the tracker's, numbered now (a frame stepped meanwhile, by a
        prompt, takes the number before it)."""
        record.index = self._next_index
        self._next_index += 1
        self._frames.append(record)
        return record

    def _encode_images(self, records: Sequence[_Frame]) -> None:
        """Run the image encoder once on every record that has no features yet, as one batch."""
        todo = list({id(r): r for r in records if r.backbone is None}.values())
        if not todo:
            return
        # Only frames still holding their image are waiting to be encoded.
        batch = torch.cat([self.preprocess(r.image) for r in todo])  # type: ignore[arg-type]
        backbone = self.model.forward_image(batch)
        for i, record in enumerate(todo):
            record.backbone = {key: [x[i : i + 1] for x in backbone[key]] for key in ("backbone_fpn", "vision_pos_enc")}
            record.image = None

    def _features(self, records: Sequence[_Frame]) -> _Features:
        """One batch row of features per entry of ``records`` (one per object, possibly of several
        streams); a single frame is expanded without copying, as the official predictor does."""
        self._encode_images(records)  # every record has its backbone from here on (hence the ignores below)
        first = records[0]
        if all(r is first for r in records):
            backbone = {key: [x.expand(len(records), -1, -1, -1) for x in xs] for key, xs in first.backbone.items()}  # type: ignore[union-attr]
        else:
            backbone = {
                key: [torch.cat(level) for level in zip(*(r.backbone[key] for r in records))]  # type: ignore[index]
                for key in first.backbone  # type: ignore[union-attr]
            }
        _, vision, pos, sizes = self.model._prepare_backbone_features(backbone)
        return _Features(vision, pos, sizes)

    def _condition(self, features: _Features, frame_index: int, layouts: list[Layout] | None) -> torch.Tensor:
        """Fuse the frame's top-level features with memory; ``layouts=None`` is a first frame."""
        model = self.model
        if layouts is None:
            return model._prepare_memory_conditioned_features(
                frame_index,
                True,
                features.vision[-1:],
                features.pos[-1:],
                features.sizes[-1:],
                None,
                UNBOUNDED_FRAMES,
            )
        step = self.attention_batch or len(layouts)
        fused = torch.cat(
            [
                self._attend(
                    features.vision[-1][:, i : i + step], features.pos[-1][:, i : i + step], layouts[i : i + step]
                )
                for i in range(0, len(layouts), step)
            ],
            dim=1,
        )
        h, w = features.sizes[-1]
        return fused.permute(1, 2, 0).view(len(layouts), model.hidden_dim, h, w)

    def _attend(self, curr: torch.Tensor, curr_pos: torch.Tensor, layouts: list[Layout]) -> torch.Tensor:
        """The memory attention for a batch of objects ``[HW, B, C]`` with aligned memories."""
        memory, memory_pos, n_ptr = self._reader.assemble(layouts)
        fused: torch.Tensor = self.model.memory_attention(
            curr=[curr],
            curr_pos=[curr_pos],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=n_ptr,
            **self.family.attention_options(len(layouts[0].spatial)),
        )
        return fused

    def _track(self, jobs: Sequence[tuple[ObjectMemory, _Frame]]) -> list[FrameOutput]:
        """Track each object on its frame from memory, batching those whose memories align
        (frames may differ: several streams are tracked together)."""
        layouts = [self._reader.layout(obj, record.index) for obj, record in jobs]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, layout in enumerate(layouts):
            groups.setdefault(layout.shape_key, []).append(i)
        outputs: list[FrameOutput | None] = [None] * len(jobs)
        model = self.model
        self._encode_images([record for _, record in jobs])
        for members in groups.values():
            features = self._features([jobs[i][1] for i in members])
            pix = self._condition(features, jobs[members[0]][1].index, [layouts[i] for i in members])
            _, _, _, low_res, high_res, obj_ptr, scores = model._forward_sam_heads(
                backbone_features=pix,
                high_res_features=features.high_res,
                multimask_output=model._use_multimask(False, None),
            )
            maskmem, _ = self._encode_memory(features, high_res, scores, from_prompt=False)
            pred = self._fill_holes(low_res)
            for j, i in enumerate(members):
                outputs[i] = FrameOutput(
                    pred_masks=pred[j : j + 1],
                    obj_ptr=obj_ptr[j : j + 1],
                    object_score_logits=scores[j : j + 1],
                    maskmem=maskmem[j : j + 1],
                )
        return outputs  # type: ignore[return-value]  # every slot was filled above

    def _apply_prompt(self, obj: ObjectMemory, record: _Frame, prompt: Prompt) -> None:
        """Run one prompt on one frame, as ``add_new_points_or_box`` / ``add_new_mask`` do."""
        model, t = self.model, record.index
        previous = obj.output(t)
        # A frame the object was tracked through gets a correction (with memory); a frame it
        # was first prompted on, or has never seen, is (re)segmented from prompts alone.
        is_init = t in obj.init_frames or previous is None
        features = self._features([record])
        point_inputs = None
        mask_inputs = prompt.mask
        if prompt.mask is not None:
            obj.points.pop(t, None)
        else:
            earlier = None if prompt.has_box else obj.points.get(t)
            point_inputs = concat_points(earlier, prompt.coords, prompt.labels)
            obj.points[t] = point_inputs
            if previous is not None and previous.pred_masks is not None:
                mask_inputs = torch.clamp(previous.pred_masks, -32.0, 32.0)
        if prompt.mask is not None and model.use_mask_input_as_output_without_sam:
            sam_outputs = model._use_mask_as_output(features.top, features.high_res, prompt.mask)
        else:
            pix = self._condition(features, t, None if is_init else [self._reader.layout(obj, t)])
            sam_outputs = model._forward_sam_heads(
                backbone_features=pix,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                high_res_features=features.high_res,
                multimask_output=model._use_multimask(is_init, point_inputs),
            )
        _, _, _, low_res, _, obj_ptr, scores = sam_outputs
        out = FrameOutput(self._fill_holes(low_res), obj_ptr, scores, pending=True)
        if is_init:
            obj.init_frames.add(t)
        if is_init or self.corrections_as_cond:
            obj.non_cond.pop(t, None)
            obj.cond[t] = out
            self._cap_cond_frames(obj, keep=t)
        else:
            obj.non_cond[t] = out

    def _cap_cond_frames(self, obj: ObjectMemory, keep: int) -> None:
        """Keep at most ``max_cond_frames`` conditioning frames: drop the oldest but the first
        (and never ``keep``, the one just prompted)."""
        while len(obj.cond) > self.max_cond_frames:
            oldest = sorted(t for t in obj.cond if t != keep)[1]
            del obj.cond[oldest]
            obj.points.pop(oldest, None)
            obj.init_frames.discard(oldest)

    def _repropagate(self, obj: ObjectMemory, start: int) -> None:
        """Re-track ``obj`` on the remembered frames after ``start``, up to the newest."""
        self._encode_pending()
        for record in self._frames:
            if record.index > start and record.index not in obj.cond:
                obj.non_cond[record.index] = self._track([(obj, record)])[0]

    def _encode_pending(self) -> None:
        """Encode prompted outputs into memory from their final masks, as preflight does."""
        for record in self._frames:
            for obj in self._objects.values():
                out = obj.output(record.index)
                if out is None or not out.pending or out.pred_masks is None:
                    continue
                size = self.model.image_size
                high_res = F.interpolate(out.pred_masks, size=(size, size), mode="bilinear", align_corners=False)
                features = self._features([record])
                out.maskmem, _ = self._encode_memory(features, high_res, out.object_score_logits, from_prompt=True)
                out.pending = False

    def _encode_memory(
        self, features: _Features, high_res: torch.Tensor, scores: torch.Tensor, *, from_prompt: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        maskmem, pos = self.model._encode_new_memory(
            current_vision_feats=features.vision,
            feat_sizes=features.sizes,
            pred_masks_high_res=high_res,
            object_score_logits=scores,
            is_mask_from_pts=from_prompt,
        )
        if self._reader.spatial_pos is None:
            self._reader.spatial_pos = self.family.memory_tokens(pos[-1][0:1]).clone()
        return maskmem.to(torch.bfloat16), pos[-1]

    def _fill_holes(self, low_res: torch.Tensor) -> torch.Tensor:
        if self.fill_hole_area > 0:
            return fill_holes_in_mask_scores(low_res, self.fill_hole_area)
        return low_res

    def _forget(self) -> None:
        """Drop what no future frame or prompt can read: this is what keeps memory flat."""
        oldest_prompt = self._frames[0].index
        spatial_from = oldest_prompt - self._reader.num_maskmem * self._reader.stride
        pointer_from = oldest_prompt - self._reader.max_pointers
        for obj in self._objects.values():
            for t in [t for t in obj.non_cond if t < pointer_from]:
                del obj.non_cond[t]
            for t, out in obj.non_cond.items():
                if t < spatial_from:
                    out.maskmem = None
                if t < oldest_prompt:
                    out.pred_masks = None
            for t in [t for t in obj.points if t < oldest_prompt and t not in obj.cond]:
                del obj.points[t]

    def _result(self, record: _Frame, mask_width: int | None = None) -> FrameResult:
        size = scaled_size(record.height, record.width, mask_width)
        objects = list(self._objects.values())
        if not objects:
            empty = np.zeros((0, *size), dtype=np.float32)
            return FrameResult(record.index, [], empty.astype(bool), empty, np.zeros(0, np.float32))
        outs = [obj.output(record.index) for obj in objects]
        # Every object has an output, with masks, on a frame it was tracked on.
        low_res = torch.cat([out.pred_masks for out in outs])  # type: ignore[union-attr,misc]
        logits = F.interpolate(low_res.float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        scores = torch.cat([out.object_score_logits for out in outs]).float().reshape(-1)  # type: ignore[union-attr]  # as above
        logits_np = logits.cpu().numpy()
        return FrameResult(
            frame_index=record.index,
            obj_ids=[obj.obj_id for obj in objects],
            masks=logits_np > 0,
            logits=logits_np,
            scores=scores.cpu().numpy(),
        )


@torch.inference_mode()
def step_streams(
    trackers: Sequence[StreamingTracker],
    frames: Sequence[np.ndarray],
    *,
    mask_width: int | None = None,
    origins: Sequence[FrameOrigin] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> list[FrameResult]:
    """Step several streams at once, one new frame each, on trackers that share a model.

    The image encoder runs once for all frames that have objects to track, and the memory
    attention and mask decoder once per group of objects whose memories align, whatever stream
    they belong to: N streams cost far less than N single steps where kernels are launch-bound.
    The results are each tracker's own: batching changes no number beyond float rounding.
    With ``mask_width`` the masks come scaled straight from the model's low-resolution output to
    that width (the frame's aspect kept; never larger than the frame): what a display that
    works on small frames needs, without making and copying full-size masks first. ``origins``
    (one per frame) are remembered with the frames (``tracked_frames``).

    ``meanwhile`` runs once the new frames' image features exist (the bulk of a round on a CPU)
    and before they become the trackers' own: work that was waiting for the tracker, such as a
    viewer's click on the newest tracked frame, runs there instead of after the whole round, and
    the objects it adds are tracked on the new frames. It may prompt, remove and reset, but not
    step these trackers (a frame stepped meanwhile would be newer than the round's).
    """
    if len(trackers) != len(frames):
        raise ValueError(f"got {len(trackers)} trackers and {len(frames)} frames: pass one frame per tracker")
    if origins is not None and len(origins) != len(frames):
        raise ValueError(f"got {len(origins)} origins for {len(frames)} frames: pass one per frame, or none")
    if len({id(t) for t in trackers}) != len(trackers):
        raise ValueError("a tracker takes one frame per step: list each tracker once")
    if not trackers:
        return []
    lead = trackers[0]
    for other in trackers[1:]:
        lead.check_sibling(other)
    images = [check_frame(frame) for frame in frames]
    where: Sequence[FrameOrigin | None] = origins or [None] * len(images)
    new = [_Frame(-1, image.shape[0], image.shape[1], image, origin) for image, origin in zip(images, where)]
    with lead._autocast():
        if meanwhile is not None:
            lead._encode_images([record for tracker, record in zip(trackers, new) if tracker._objects])
            meanwhile()
        for tracker in trackers:
            tracker._encode_pending()
        records = [tracker._ingest(record) for tracker, record in zip(trackers, new)]
        jobs = [(obj, record) for tracker, record in zip(trackers, records) for obj in tracker._objects.values()]
        for (obj, record), out in zip(jobs, lead._track(jobs)):
            obj.non_cond[record.index] = out
        for tracker in trackers:
            tracker._forget()
        return [tracker._result(record, mask_width) for tracker, record in zip(trackers, records)]


def _check_obj_id(obj_id: object) -> None:
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
        raise PromptError(f"obj_id must be an integer, got {obj_id!r}")


@functools.cache
def _has_hole_filling() -> bool:
    """Whether sam2's optional CUDA extension is built; without it the official skips hole filling."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        logger.info("sam2's CUDA extension is not built: small mask holes are not filled")
        return False
    return True
