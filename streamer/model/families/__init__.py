"""The registry of model families: every model ``--model`` and YAML can name.

Adding a family is one module (its network, checkpoints and memory layout, see ``family.py``)
and one line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import ModelError
from . import edgetam, sam2
from .family import Family, ModelSpec

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

FAMILIES: tuple[Family, ...] = (sam2.SAM2, edgetam.EDGETAM)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (*sam2.MODELS, *edgetam.MODELS)}


AUTO = "auto"  # the model and size a first-time user gets: chosen by the device, see default_model


@dataclass(frozen=True)
class Choice:
    """A model and input size picked for a device, and why (said in the startup log)."""

    name: str
    image_size: int | None  # None: the model's native size
    why: str


# Seconds per frame, one object, on the 2-core CPU this project is tested on (AMD EPYC, torch
# 2.14, float32; bench/results/tracker_cpu_edgetam.json and tracker_cpu_edgetam_256.json): what
# the doctor tells a CPU user.
CPU_SECONDS_PER_FRAME: dict[tuple[str, int], float] = {
    ("edgetam", 256): 0.09,
    ("edgetam", 512): 0.29,
    ("edgetam", 1024): 1.5,
    ("sam2.1_hiera_tiny", 256): 0.21,
    ("sam2.1_hiera_tiny", 512): 0.79,
    ("sam2.1_hiera_tiny", 1024): 6.4,
}


def default_model(cuda: bool, image_size: int | None = None) -> Choice:
    """SAM 2.1 tiny at its native 1024 px on a CUDA GPU. Without one, EdgeTAM at 512 px: on a
    laptop-class CPU SAM 2.1 is real time only at 256 px, where it was never trained and thin
    objects vanish; EdgeTAM at 512 is faster still and keeps DAVIS 2017 J&F 80.1 (87.7 at 1024).
    An ``image_size`` asked for is kept; one EdgeTAM does not take keeps SAM 2.1 tiny."""
    edgetam_takes = image_size is None or image_size % MODELS["edgetam"].family.image_size_multiple == 0
    if cuda or not edgetam_takes:
        where = "a CUDA GPU is here" if cuda else f"EdgeTAM does not take {image_size} px"
        size = f"{image_size} px" if image_size else "its native 1024 px"
        return Choice("sam2.1_hiera_tiny", image_size, f"SAM 2.1 tiny at {size}, as {where}")
    edgetam, tiny = CPU_SECONDS_PER_FRAME[("edgetam", 512)], CPU_SECONDS_PER_FRAME[("sam2.1_hiera_tiny", 512)]
    edgetam_size = image_size or 512
    return Choice(
        "edgetam",
        edgetam_size,
        f"EdgeTAM at {edgetam_size} px, as no CUDA GPU is here (~{edgetam:g} s a frame on a 2-core CPU, against "
        f"{tiny:g} s for SAM 2.1 tiny at 512; DAVIS 2017 J&F 80.1 at 512). SAM 2.1's real-time choice on a "
        "CPU is --model sam2.1_hiera_tiny --image-size 256",
    )


def model_spec(name: str) -> ModelSpec:
    """Look a model up by name, with the list of valid names in the error."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose {AUTO} or one of: {', '.join(MODELS)}") from None


def family_of(model: SAM2Base) -> Family:
    """The family a built network belongs to (a family built on another's network, as EdgeTAM
    is on SAM 2's, comes first)."""
    return next(f for f in reversed(FAMILIES) if f.owns(model))


def describe_models() -> str:
    """One line per model, for the CLI's help and the doctor."""
    return "; ".join(f"{name} ({spec.title}, {spec.params_m:g}M parameters)" for name, spec in MODELS.items())


__all__ = [
    "AUTO",
    "CPU_SECONDS_PER_FRAME",
    "FAMILIES",
    "MODELS",
    "Choice",
    "Family",
    "ModelSpec",
    "default_model",
    "describe_models",
    "family_of",
    "model_spec",
]
