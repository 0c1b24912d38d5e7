"""Turning camera frames into the model's input exactly as the official video loader does.

The official loader resizes each frame with PIL (its default resampling) to a square, scales to
[0, 1] and normalises with ImageNet statistics. The ``"pil"`` path reproduces that bit for bit;
the ``"torch"`` path does the same resize on the model's device (antialiased bicubic, rounded to
uint8 like PIL) so that a GPU never waits on the CPU, at the cost of off-by-one pixel values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import FrameError

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)

Resize = Literal["pil", "torch"]


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` if it is an HxWx3 uint8 array, else raise a FrameError saying what to send."""
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array (HxWx3 uint8 RGB), got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise FrameError(f"frame must have shape HxWx3 (RGB), got {frame.shape}")
    if frame.dtype != np.uint8:
        raise FrameError(
            f"frame must be uint8 RGB (0-255), got dtype {frame.dtype}; "
            "convert with (frame * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1]"
        )
    return frame


def scaled_size(height: int, width: int, max_width: int | None) -> tuple[int, int]:
    """(h, w) of a frame scaled down to at most ``max_width`` wide, keeping its aspect."""
    if max_width is None or width <= max_width:
        return height, width
    return max(1, round(height * max_width / width)), max_width


class HostStager:
    """Copies frames to the GPU through reused pinned buffers, without blocking the host.

    A pageable ``tensor.to(cuda)`` is synchronous; from pinned memory it is a true async copy.
    A buffer is reused only once its previous copy has finished (a CUDA event says so), so
    several frames of one round can be in flight at once. On CPU it simply wraps the array.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pool: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.cuda.Event]]] = {}

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.from_numpy(np.ascontiguousarray(frame))
        pool = self._pool.setdefault(frame.shape, [])
        slot = next((entry for entry in pool if entry[1].query()), None)
        if slot is None:
            slot = (torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True), torch.cuda.Event())
            pool.append(slot)
        buffer, copied = slot
        buffer.numpy()[...] = frame
        on_device = buffer.to(self.device, non_blocking=True)
        copied.record()
        return on_device


class FramePreprocessor:
    """Frame (HxWx3 uint8 RGB) -> normalised ``[1, 3, S, S]`` float32 tensor on ``device``."""

    def __init__(self, image_size: int, device: torch.device, resize: Resize) -> None:
        self.image_size = image_size
        self.device = device
        self.resize = resize
        # uint8 value -> normalised float, computed with the same float32 ops as the official
        # loader (x / 255 in float64, cast, then -= mean, /= std), so a lookup is exact.
        scaled = torch.from_numpy(np.arange(256, dtype=np.float64) / 255.0).float()
        mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None]
        std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None]
        self._lut = ((scaled[None, :] - mean) / std).reshape(-1).to(device)
        self._channel_offset = torch.tensor([0, 256, 512], device=device)
        self.upload = HostStager(device)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        size = self.image_size
        if self.resize == "pil":
            small = np.array(Image.fromarray(frame).resize((size, size)))
            pixels = torch.from_numpy(small).to(self.device, non_blocking=True)
        else:
            src = self.upload(frame).to(self.device).permute(2, 0, 1)[None].float()
            resized = F.interpolate(src, size=(size, size), mode="bicubic", antialias=True)
            pixels = resized.round_().clamp_(0, 255)[0].permute(1, 2, 0)
        index = pixels.long() + self._channel_offset  # [S, S, 3]
        return self._lut[index].permute(2, 0, 1)[None].contiguous()
