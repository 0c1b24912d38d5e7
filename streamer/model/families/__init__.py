"""The registry of model families: every model ``--model`` and YAML can name.

Adding a family is one module (its network, checkpoints and memory layout, see ``family.py``)
and one line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import CheckpointError
from . import edgetam, sam2
from .family import Family, ModelSpec

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

FAMILIES: tuple[Family, ...] = (sam2.SAM2, edgetam.EDGETAM)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (*sam2.MODELS, *edgetam.MODELS)}


def model_spec(name: str) -> ModelSpec:
    """Look a model up by name, with the list of valid names in the error."""
    try:
        return MODELS[name]
    except KeyError:
        raise CheckpointError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def family_of(model: SAM2Base) -> Family:
    """The family a built network belongs to (a family built on another's network, as EdgeTAM
    is on SAM 2's, comes first)."""
    return next(f for f in reversed(FAMILIES) if f.owns(model))


def describe_models() -> str:
    """One line per model, for the CLI's help and the doctor."""
    return "; ".join(f"{name} ({spec.title}, {spec.params_m:g}M parameters)" for name, spec in MODELS.items())


__all__ = ["FAMILIES", "MODELS", "Family", "ModelSpec", "describe_models", "family_of", "model_spec"]
