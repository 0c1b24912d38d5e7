"""SAM 2.1 (Meta, Apache-2.0): Hiera image encoders in four sizes, built by the ``sam2`` package
from its own config files, as ``build_sam2_video_predictor`` configures them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..weights import Checkpoint
from .family import Family, ModelSpec

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

# What build_sam2_video_predictor adds beyond build_sam2's postprocessing (the predictor-level
# fill_hole_area=8 is applied by the tracker itself).
VIDEO_OVERRIDES = ("++model.binarize_mask_from_pts_for_mem_enc=true",)


class Sam2Family(Family):
    key = "sam2.1"
    title = "SAM 2.1"

    def network(self, spec: ModelSpec, image_size: int) -> SAM2Base:
        from sam2.build_sam import build_sam2

        overrides = [*VIDEO_OVERRIDES, f"++model.image_size={image_size}"]
        return build_sam2(
            spec.config,
            ckpt_path=None,
            device="cpu",
            mode="eval",
            hydra_overrides_extra=overrides,
            apply_postprocessing=True,
        )

    def owns(self, model: SAM2Base) -> bool:
        from sam2.modeling.sam2_base import SAM2Base

        return isinstance(model, SAM2Base)


SAM2 = Sam2Family()


def _spec(size: str, short: str, filename: str, nbytes: int, sha256: str, params_m: float) -> ModelSpec:
    return ModelSpec(
        name=filename.removesuffix(".pt"),
        family=SAM2,
        size=size,
        checkpoint=Checkpoint(filename, BASE_URL, f"sha256:{sha256}", nbytes),
        params_m=params_m,
        config=f"configs/sam2.1/sam2.1_hiera_{short}.yaml",
    )


MODELS = (
    _spec(
        "tiny",
        "t",
        "sam2.1_hiera_tiny.pt",
        156_008_466,
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        38.9,
    ),
    _spec(
        "small",
        "s",
        "sam2.1_hiera_small.pt",
        184_416_285,
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        46.0,
    ),
    _spec(
        "base+",
        "b+",
        "sam2.1_hiera_base_plus.pt",
        323_606_802,
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        80.8,
    ),
    _spec(
        "large",
        "l",
        "sam2.1_hiera_large.pt",
        898_083_611,
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        224.4,
    ),
)
