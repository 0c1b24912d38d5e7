"""Building a registered model's network exactly as its family's official video predictor
configures it, and filling its weights.

The tracker reuses ``SAM2Base`` unchanged; what matters for parity is that every config switch the
official predictor flips is flipped by the family too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from sam2.modeling.sam2_base import SAM2Base

from ..errors import CheckpointError
from .families import ModelSpec
from .weights import ensure_checkpoint

logger = logging.getLogger(__name__)


def build_model(
    spec: ModelSpec,
    *,
    checkpoint: str | Path | None,
    device: torch.device,
    random_init: bool,
    seed: int,
    image_size: int | None,
) -> SAM2Base:
    """Instantiate ``spec``'s architecture and fill its weights.

    Weights come from ``checkpoint``, else from the official file (downloaded on first use), or,
    only when ``random_init`` is asked for explicitly, from a seeded random initialisation.
    """
    if random_init and checkpoint is not None:
        raise CheckpointError("pass either a checkpoint or random_init=True, not both")
    family = spec.family
    size = family.native_image_size if image_size is None else image_size
    family.check_image_size(size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.network(spec, size)
    if random_init:
        family.randomised(model)
        logger.warning(
            "%s built with seeded random weights (seed %d): masks are meaningless, "
            "use this only for tests and benchmarks",
            spec.title,
            seed,
        )
    else:
        path = Path(checkpoint) if checkpoint is not None else ensure_checkpoint(spec.checkpoint)
        load_checkpoint(model, path, spec)
    model = model.to(device).eval()
    family.prepare(model)
    return model


def load_checkpoint(model: SAM2Base, path: Path, spec: ModelSpec) -> None:
    """Load an official-format checkpoint (``{"model": state_dict}``), saying clearly what is wrong."""
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass --checkpoint PATH to an official "
            f"{spec.filename}, or leave it out to download it"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}. Is it a complete {spec.family.title} .pt file?"
        ) from exc
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no state dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes differ: another model size
        raise CheckpointError(
            f"checkpoint {path} does not fit {spec.name} ({exc}). "
            "Is it for another model or size? Pick the matching --model."
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit {spec.name}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}). "
            "Is it for another model or size? Pick the matching --model."
        )
    logger.info("loaded checkpoint %s", path)


def compile_model(model: SAM2Base) -> None:
    """``torch.compile`` the components the official ``vos_optimized`` predictor compiles.

    Differences, on purpose: no CUDA graphs (the tracker keeps features and memories across
    frames, which CUDA-graph output buffers would overwrite), and a dynamic batch dimension for
    the image encoder and memory encoder, whose batch is the number of streams or objects of a
    round (a static one would recompile for every count). The prompt encoder and mask decoder
    stay static, as upstream notes an accuracy regression otherwise. Compiling once per model is
    enough: sibling trackers share it.
    """
    if getattr(model, "_streamer_compiled", False):
        return
    mode = "max-autotune-no-cudagraphs" if model.device.type == "cuda" else "default"
    for name, dynamic in [
        ("image_encoder", None),
        ("memory_encoder", None),
        ("memory_attention", True),
        ("sam_prompt_encoder", False),
        ("sam_mask_decoder", False),
    ]:
        module = getattr(model, name)
        module.forward = torch.compile(module.forward, mode=mode, fullgraph=True, dynamic=dynamic)
    model._streamer_compiled = True
    logger.info("compiling the model (%s): the first frames of each new shape are slow", mode)
