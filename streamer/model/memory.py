"""Per-object memory bank: which past frames an object attends to, and how they become tokens.

This is the streaming counterpart of ``SAM2Base._prepare_memory_conditioned_features``. The
selection rules are the official ones (every conditioning frame, the last ``num_maskmem - 1``
frames with the eval stride, object pointers of up to ``max_obj_ptrs_in_encoder - 1`` past
frames, pointer positions signed or not as configured), but the memories of several objects are
assembled into one batch so that the memory attention runs once for all of them. Objects whose
memories have the same number of frames and pointers share a batch even when the frames
themselves differ: only the positional encodings depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sam2.modeling.sam2_base import SAM2Base
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames

from .families import family_of

# The tracker's frame indices grow without end; the official code takes the video length here.
UNBOUNDED_FRAMES = 1 << 62


@dataclass
class FrameOutput:
    """What one object left on one frame: enough to be remembered and to be shown."""

    pred_masks: torch.Tensor | None  # [1, 1, S/4, S/4] mask logits, None once out of reach
    obj_ptr: torch.Tensor  # [1, C]
    object_score_logits: torch.Tensor  # [1, 1]
    maskmem: torch.Tensor | None = None  # bfloat16 spatial memory: [1, Cm, h, w] (SAM 2), [1, 512, Cm] (EdgeTAM)
    pending: bool = False  # from a prompt: memory still to encode from the final mask


@dataclass
class ObjectMemory:
    """Everything kept for one tracked object; bounded by the tracker's ``forget``."""

    obj_id: int
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    points: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    init_frames: set[int] = field(default_factory=set)  # segmented from prompts alone, no memory

    def output(self, frame_index: int) -> FrameOutput | None:
        return self.cond.get(frame_index) or self.non_cond.get(frame_index)


@dataclass
class Layout:
    """The memory one object reads on one frame: (temporal slot, output) pairs."""

    spatial: list[tuple[int, FrameOutput]]
    pointers: list[tuple[int, FrameOutput]]

    @property
    def shape_key(self) -> tuple[int, int]:
        return len(self.spatial), len(self.pointers)


class MemoryReader:
    """Selects and assembles memory tokens with the model's own settings and parameters.

    One per model (``MemoryReader.of``), shared by every tracker on it, since a round assembles
    memories of several trackers' objects together.
    """

    @classmethod
    def of(cls, model: SAM2Base) -> MemoryReader:
        reader = getattr(model, "_streamer_memory_reader", None)
        if reader is None:
            reader = cls(model)
            model._streamer_memory_reader = reader
        return reader

    def __init__(self, model: SAM2Base) -> None:
        self.model = model
        self.family = family_of(model)
        self.num_maskmem = model.num_maskmem
        self.stride = model.memory_temporal_stride_for_eval
        self.max_pointers = min(UNBOUNDED_FRAMES, model.max_obj_ptrs_in_encoder)
        self.spatial_pos: torch.Tensor | None = None  # [HW, 1, Cm], the same for every frame

    def layout(self, obj: ObjectMemory, frame_index: int) -> Layout:
        """Which of ``obj``'s memories frame ``frame_index`` attends to, in the official order."""
        model, t = self.model, frame_index
        selected, unselected = select_closest_cond_frames(t, obj.cond, model.max_cond_frames_in_attn)
        spatial = [(0, out) for out in selected.values()]
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos
            if t_rel == 1:
                prev = t - 1
            else:
                prev = ((t - 2) // self.stride) * self.stride - (t_rel - 2) * self.stride
            out = obj.non_cond.get(prev) or unselected.get(prev)
            if out is not None:
                spatial.append((t_pos, out))

        pointers: list[tuple[int, FrameOutput]] = []
        if model.use_obj_ptrs_in_encoder:
            only_past = model.only_obj_ptrs_in_the_past_for_eval
            for s, out in selected.items():
                if not only_past or s <= t:
                    pointers.append((t - s if model.use_signed_tpos_enc_to_obj_ptrs else abs(t - s), out))
            for t_diff in range(1, self.max_pointers):
                s = t - t_diff
                if s < 0:
                    break
                out = obj.non_cond.get(s) or unselected.get(s)
                if out is not None:
                    pointers.append((t_diff, out))
        return Layout(spatial, pointers)

    def assemble(self, layouts: list[Layout]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Stack same-shaped layouts into ``memory``, ``memory_pos`` ``[L, B, Cm]`` and pointer count."""
        model = self.model
        assert self.spatial_pos is not None, "no memory has been encoded yet"
        batch = len(layouts)
        feats = [
            # Spatial memories are laid out only from frames whose memory was encoded.
            torch.cat([self.family.memory_tokens(out.maskmem) for _, out in layout.spatial], dim=0)  # type: ignore[arg-type]
            for layout in layouts
        ]
        tpos = model.maskmem_tpos_enc  # [num_maskmem, 1, 1, Cm]
        pos = [
            torch.cat([self.spatial_pos + tpos[self.num_maskmem - t_pos - 1] for t_pos, _ in layout.spatial])
            for layout in layouts
        ]
        memory = torch.cat(feats, dim=1)
        memory_pos = torch.cat(pos, dim=1)
        n_ptr = len(layouts[0].pointers)
        if n_ptr == 0:
            return memory, memory_pos, 0

        hidden, mem_dim = model.hidden_dim, model.mem_dim
        ptrs = torch.stack(
            [torch.cat([out.obj_ptr for _, out in layout.pointers], dim=0) for layout in layouts], dim=1
        )  # [P, B, C]
        if model.add_tpos_enc_to_obj_ptrs:
            steps = torch.tensor([[p for p, _ in layout.pointers] for layout in layouts])
            steps = steps.t().to(ptrs.device, non_blocking=True)  # [P, B]
            t_diff_max = self.max_pointers - 1
            tpos_dim = hidden if model.proj_tpos_enc_in_obj_ptrs else mem_dim
            ptr_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(steps / t_diff_max, dim=tpos_dim))
        else:
            ptr_pos = ptrs.new_zeros(n_ptr, batch, mem_dim)
        if mem_dim < hidden:  # a pointer becomes hidden // mem_dim tokens
            split = hidden // mem_dim
            ptrs = ptrs.reshape(-1, batch, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
        memory = torch.cat([memory, ptrs], dim=0)
        memory_pos = torch.cat([memory_pos, ptr_pos], dim=0)
        return memory, memory_pos, ptrs.shape[0]
