"""EdgeTAM (Meta, Apache-2.0; CVPR 2025): SAM 2's design with a RepViT-M1 image encoder (via
timm), a 2D spatial perceiver that compresses each frame's memory to 512 tokens of dim 64 whatever
the input size, and 2 memory-attention layers whose cross-attention keys are 16x16 per memory
frame. 13.9 M parameters against SAM 2.1 tiny's 38.9 M.

This module is what the registry and the doctor read (no torch); ``network.py`` builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...weights import Checkpoint
from ..family import Family, ModelSpec

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base
    from torch import Tensor


PRESENT_BIAS = 20.0  # added to the object-presence logit of random weights


class EdgeTAMFamily(Family):
    key = "edgetam"
    title = "EdgeTAM"
    image_size_multiple = 256  # the 2D perceiver tiles the stride-16 memory map in 16x16 windows

    def network(self, spec: ModelSpec, image_size: int) -> SAM2Base:
        from .network import build

        return build(image_size)

    def owns(self, model: SAM2Base) -> bool:
        from .network import EdgeTAMBase

        return isinstance(model, EdgeTAMBase)

    def memory_tokens(self, memory: Tensor) -> Tensor:
        return memory.permute(1, 0, 2)  # already [B, 512, 64] tokens

    def attention_options(self, spatial_frames: int) -> dict[str, Any]:
        return {"num_spatial_mem": spatial_frames}

    def randomised(self, model: SAM2Base) -> None:
        """With random weights every object reads as absent (its masks empty): raise the presence
        head's bias so that objects are present."""
        import torch

        with torch.no_grad():
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += PRESENT_BIAS

    def prepare(self, model: SAM2Base) -> None:
        from .network import TimmTrunk

        trunk = model.image_encoder.trunk
        assert isinstance(trunk, TimmTrunk)
        trunk.reparameterize()


EDGETAM = EdgeTAMFamily()

MODELS = (
    ModelSpec(
        name="edgetam",
        family=EDGETAM,
        size="",
        # The EdgeTAM repository's checkpoints/edgetam.pt. Its tree publishes the git blob id;
        # no SHA-256 or size is published.
        checkpoint=Checkpoint(
            "edgetam.pt",
            "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints",
            "git-blob:abd54d22bbd22ba3e53cf59a307e59e0f3701be6",
            approx_bytes=56_000_000,
        ),
        params_m=13.9,
    ),
)
