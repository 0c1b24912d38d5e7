"""The closed-set detector: RT-DETR v2 (Apache-2.0, through ``transformers``) on COCO's 80 classes.

``PekingU/rtdetr_v2_r18vd``: the ResNet-18 variant, 20 M parameters, 640x640 input, 47.9 AP on
COCO val2017 (the RT-DETRv2 paper); the smallest of the family, picked for CPUs and laptops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .detections import Detections
from .huggingface import from_hub, transformers_module

REPO = "PekingU/rtdetr_v2_r18vd"
INPUT_SIZE = 640
MIN_SCORE = 0.1  # what is handed on: the policy starts objects at its threshold, keeps them alive lower

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


class CocoDetector:
    """RT-DETR v2 on a frame: boxes, COCO labels and scores at the frame's size."""

    def __init__(self, model: Any, processor: Any, device: str) -> None:
        self.model, self.processor, self.device = model.to(device).eval(), processor, device
        self.labels: tuple[str, ...] | None = tuple(model.config.id2label[i] for i in range(model.config.num_labels))

    @classmethod
    def load(cls, device: str, *, random_weights: bool = False, seed: int = 0) -> CocoDetector:
        """The official checkpoint (downloaded on first use), or seeded random weights of the same
        network (tests and benchmarks: wiring and speed, never detections)."""
        transformers = transformers_module()
        if random_weights:
            import torch

            torch.manual_seed(seed)
            processor = transformers.RTDetrImageProcessor(size={"height": INPUT_SIZE, "width": INPUT_SIZE})
            # The checkpoint's shape (its config.json): ResNet-18-vd, a narrower encoder, 3 decoder layers.
            backbone = transformers.RTDetrResNetConfig(
                depths=[2, 2, 2, 2],
                layer_type="basic",
                hidden_sizes=[64, 128, 256, 512],
                embedding_size=64,
                downsample_in_bottleneck=True,
                downsample_in_first_stage=False,
                out_features=["stage2", "stage3", "stage4"],
            )
            config = transformers.RTDetrV2Config(
                backbone_config=backbone,
                encoder_in_channels=[128, 256, 512],
                hidden_expansion=0.5,
                decoder_layers=3,
                num_labels=len(COCO_LABELS),
                id2label=dict(enumerate(COCO_LABELS)),
                label2id={label: i for i, label in enumerate(COCO_LABELS)},
            )
            return cls(transformers.RTDetrV2ForObjectDetection(config), processor, device)
        model = from_hub(transformers.RTDetrV2ForObjectDetection, REPO, "rtdetr detector")
        return cls(model, from_hub(transformers.RTDetrImageProcessor, REPO, "rtdetr detector"), device)

    def __call__(self, image: np.ndarray, queries: Sequence[str] = ()) -> Detections:
        import torch

        height, width = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        found = self.processor.post_process_object_detection(
            outputs, threshold=MIN_SCORE, target_sizes=[(height, width)]
        )[0]
        assert self.labels is not None
        labels = tuple(self.labels[int(i)] for i in found["labels"])
        boxes = found["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
        boxes = np.clip(boxes, 0, [width, height, width, height])  # the network may reach past the edges
        return Detections.of((boxes, labels, found["scores"]))


__all__ = ["COCO_LABELS", "REPO", "CocoDetector"]
