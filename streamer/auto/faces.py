"""Faces: MTCNN (Zhang et al. 2016), written here, with the weights the ``facenet-pytorch`` wheel
ships (MIT; ``facenet_pytorch/data/{pnet,rnet,onet}.pt``, 2 MB in all).

facenet-pytorch itself pins an old torch, so it is not installed: on first use its wheel is
downloaded from PyPI into the cache (checked against its SHA-256, as the SAM 2 checkpoints are)
and the three state dicts are read out of it. The cascade is the one facenet-pytorch runs: the
proposal net over an image pyramid (faces down to ``min_face`` pixels), then the refine and the
output nets on 24- and 48-pixel crops, each followed by box regression and non-maximum
suppression. Faces are what privacy blurring needs, and the one detector whose real weights are
on a package registry: the tests run it on a real clip.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

from ..errors import DetectorError
from ..model.weights import Checkpoint, ensure_checkpoint
from .detections import Detections

WHEEL = Checkpoint(
    "facenet_pytorch-2.6.0-py3-none-any.whl",
    "https://files.pythonhosted.org/packages/ed/2e/2d56386bc2f834cdc683743903852cf1428b4e5ee119f16cf808b589d3cd",
    "sha256:ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    1_881_930,
    mirror_env=None,  # from PyPI, not from a mirror of the SAM weights
)
NETS = ("pnet", "rnet", "onet")
THRESHOLDS = (0.6, 0.7, 0.7)  # per stage, as facenet-pytorch
PYRAMID_FACTOR = 0.709
MIN_FACE = 20  # pixels


class PNet(nn.Module):
    """Proposals: a fully convolutional net over every pyramid level, 12-pixel windows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement of 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()  # the Caffe original's order
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """The last word on 48x48 crops (its landmarks head is kept for the weights, unused)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), F.softmax(self.dense6_1(x), dim=1)


def load_weights(wheel: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The three nets' state dicts, read out of the facenet-pytorch wheel."""
    weights = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            for net in NETS:
                data = archive.read(f"facenet_pytorch/data/{net}.pt")
                weights[net] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DetectorError(f"{wheel} is not the facenet-pytorch wheel the face detector reads: {exc}") from None
    return weights


class FaceDetector:
    """Faces on a frame, labelled ``face``; the score is the output net's face probability."""

    labels: tuple[str, ...] | None = ("face",)

    def __init__(self, nets: dict[str, nn.Module], device: str, min_face: int = MIN_FACE) -> None:
        self.nets = {name: net.to(device).eval() for name, net in nets.items()}
        self.device, self.min_face = device, min_face

    @classmethod
    def load(cls, device: str, *, random_weights: bool = False, seed: int = 0) -> FaceDetector:
        if random_weights:
            torch.manual_seed(seed)
        nets: dict[str, nn.Module] = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}
        if not random_weights:
            try:
                wheel = ensure_checkpoint(WHEEL)
            except Exception as exc:
                raise DetectorError(
                    f"the face detector's weights come in the facenet-pytorch wheel ({WHEEL.url}), which could not "
                    f"be fetched: {exc}. On a machine with internet run `pip download facenet-pytorch==2.6.0 "
                    f"--no-deps` and put {WHEEL.filename} in the cache folder (STREAMER_CACHE_DIR)."
                ) from None
            for name, state in load_weights(wheel).items():
                nets[name].load_state_dict(state, strict=True)
        return cls(nets, device)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, queries: Sequence[str] = ()) -> Detections:
        height, width = image.shape[:2]
        frame = torch.as_tensor(np.ascontiguousarray(image), device=self.device).permute(2, 0, 1)[None].float()
        boxes = self._propose(frame)
        for stage, net, size in ((1, self.nets["rnet"], 24), (2, self.nets["onet"], 48)):
            if not len(boxes):
                break
            boxes = _square(boxes)
            crops = _crops(frame, boxes, size)
            regression, probs = net(_normalized(crops))
            keep = probs[:, 1] > THRESHOLDS[stage]
            boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
            boxes = _regressed(boxes, regression[keep])
            boxes = boxes[_nms(boxes, 0.7, by_min=stage == 2)]
        if not len(boxes):
            return Detections.empty()
        boxes[:, 0:4:2] = boxes[:, 0:4:2].clamp(0, width)
        boxes[:, 1:4:2] = boxes[:, 1:4:2].clamp(0, height)
        found = boxes.cpu().numpy()
        return Detections(found[:, :4].astype(np.float32), ("face",) * len(found), found[:, 4].astype(np.float32))

    def _propose(self, frame: torch.Tensor) -> torch.Tensor:
        """The proposal net over the pyramid: candidate boxes ``[K, 5]`` (x0 y0 x1 y1 score)."""
        height, width = frame.shape[2:]
        scale = 12.0 / self.min_face
        side = min(height, width) * scale
        found = []
        while side >= 12:
            scaled = F.interpolate(frame, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            regression, probs = self.nets["pnet"](_normalized(scaled))
            candidates = _windows(regression[0], probs[0, 1], scale, THRESHOLDS[0])
            found.append(candidates[_nms(candidates, 0.5)])
            scale *= PYRAMID_FACTOR
            side *= PYRAMID_FACTOR
        boxes = torch.cat(found) if found else torch.zeros((0, 9), device=frame.device)
        boxes = boxes[_nms(boxes, 0.7)]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        regressed = [boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h]
        regressed += [boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h, boxes[:, 4]]
        return torch.stack(regressed, dim=1)


def _normalized(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125


def _windows(regression: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float) -> torch.Tensor:
    """The proposal net's 12-pixel windows scoring above ``threshold``, in frame pixels, with
    their regression: ``[K, 9]`` (x0 y0 x1 y1 score, then 4 offsets)."""
    stride, cell = 2, 12
    where = (probs >= threshold).nonzero()
    score = probs[where[:, 0], where[:, 1]]
    offsets = regression[:, where[:, 0], where[:, 1]].permute(1, 0)
    xy = where.flip(1).to(regression.dtype)
    low = ((stride * xy + 1) / scale).floor()
    high = ((stride * xy + cell) / scale).floor()
    return torch.cat([low, high, score[:, None], offsets], dim=1)


def _nms(boxes: torch.Tensor, iou: float, *, by_min: bool = False) -> torch.Tensor:
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if not by_min:
        return nms(boxes[:, :4], boxes[:, 4], iou)
    # The last stage's: overlap over the smaller box, so a face inside a larger box goes too.
    order = boxes[:, 4].argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = (torch.minimum(boxes[i, 2], boxes[rest, 2]) - torch.maximum(boxes[i, 0], boxes[rest, 0]) + 1).clamp(min=0)
        h = (torch.minimum(boxes[i, 3], boxes[rest, 3]) - torch.maximum(boxes[i, 1], boxes[rest, 1]) + 1).clamp(min=0)
        overlap = w * h / torch.minimum(area[i], area[rest])
        order = rest[overlap <= iou]
    return torch.stack(keep)


def _regressed(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    moved = boxes.clone()
    moved[:, :4] = boxes[:, :4] + offsets * torch.stack([w, h, w, h], dim=1)
    return moved


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes made square about their centres (the nets see square crops)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    squared = boxes.clone()
    squared[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    squared[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    squared[:, 2:4] = squared[:, 0:2] + side[:, None]
    return squared


def _crops(frame: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each box's pixels (clipped to the frame, as facenet-pytorch's ``pad``), resized to ``size``."""
    height, width = frame.shape[2:]
    whole = boxes[:, :4].trunc().int()
    x0, y0 = whole[:, 0].clamp(min=1), whole[:, 1].clamp(min=1)
    x1, y1 = whole[:, 2].clamp(max=width), whole[:, 3].clamp(max=height)
    crops = []
    for a, b, c, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
        if d > b - 1 and c > a - 1:
            crops.append(F.interpolate(frame[:, :, b - 1 : d, a - 1 : c], size=(size, size), mode="area"))
        else:  # nothing of it inside the frame: a blank crop the nets reject
            crops.append(torch.zeros((1, 3, size, size), device=frame.device))
    return torch.cat(crops)


__all__ = ["WHEEL", "FaceDetector", "ONet", "PNet", "RNet", "load_weights"]
