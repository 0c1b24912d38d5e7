"""The open-vocabulary detector for text prompts: OWLv2 (Apache-2.0, through ``transformers``).

``google/owlv2-base-patch16-ensemble``: a ViT-B/16 at 960x960 that scores every image patch
against the words it is given ("person", "red car"). It pads frames to a square at the bottom
and right, so its boxes are read back against the padded square, which puts them in the frame's
own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .detections import Detections
from .huggingface import from_hub, transformers_module

REPO = "google/owlv2-base-patch16-ensemble"
MIN_SCORE = 0.1


class TextDetector:
    """OWLv2 on a frame and a list of words: boxes labelled with the words they matched."""

    labels: tuple[str, ...] | None = None  # any words

    def __init__(self, model: Any, processor: Any, device: str) -> None:
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @classmethod
    def load(cls, device: str, *, random_weights: bool = False, seed: int = 0) -> TextDetector:
        transformers = transformers_module()
        if random_weights:  # the same network; a letters-only tokenizer stands in for the checkpoint's
            import torch

            torch.manual_seed(seed)
            config = transformers.Owlv2Config(vision_config={"image_size": 960})  # the checkpoint's input
            side = config.vision_config.image_size
            images = transformers.Owlv2ImageProcessor(size={"height": side, "width": side})
            processor = transformers.Owlv2Processor(images, letters_tokenizer())
            return cls(transformers.Owlv2ForObjectDetection(config), processor, device)
        model = from_hub(transformers.Owlv2ForObjectDetection, REPO, "owlv2 detector")
        return cls(model, from_hub(transformers.Owlv2Processor, REPO, "owlv2 detector"), device)

    def __call__(self, image: np.ndarray, queries: Sequence[str] = ()) -> Detections:
        import torch

        if not queries:
            return Detections.empty()
        side = max(image.shape[:2])
        words = [list(queries)]
        inputs = self.processor(text=words, images=image, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        found = self.processor.post_process_grounded_object_detection(
            outputs, threshold=MIN_SCORE, target_sizes=[(side, side)], text_labels=words
        )[0]
        labels = tuple(queries[int(i)] for i in found["labels"])
        height, width = image.shape[:2]
        boxes = found["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
        boxes = np.clip(boxes, 0, [width, height, width, height])
        return Detections.of((boxes, labels, found["scores"]))


def letters_tokenizer() -> Any:
    """A CLIP tokenizer that knows single letters only: random weights have no vocabulary to match,
    and the real one (49 408 tokens) comes with the checkpoint."""
    transformers = transformers_module()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(f"{c}</w>" for c in letters)]
    return transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


__all__ = ["REPO", "TextDetector", "letters_tokenizer"]
