"""What a model family is to the rest of the program: how to build its network, which
checkpoints it has, and how its memories become the tokens the memory attention reads.

Every family's network is a ``SAM2Base`` (the official module), so the streaming tracker's own
logic (memory selection, bounded state, batching, prompts on earlier frames) is written once; a
family only says what differs in its architecture and in the shape of one frame's memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import ModelError
from ..weights import Checkpoint

if TYPE_CHECKING:  # the registry is read without torch (the doctor, --help)
    from sam2.modeling.sam2_base import SAM2Base
    from torch import Tensor


class Family(ABC):
    """A model family (SAM 2.1, EdgeTAM...). Subclasses are stateless; one instance each."""

    key: str  # how names and logs call it: "sam2.1", "edgetam"
    title: str  # how people call it: "SAM 2.1", "EdgeTAM"
    native_image_size = 1024  # the input size it was trained at
    image_size_multiple = 32  # input sizes it supports are multiples of this

    @abstractmethod
    def network(self, spec: ModelSpec, image_size: int) -> SAM2Base:
        """``spec``'s architecture at ``image_size``, with freshly initialised weights, on the CPU,
        configured exactly as the family's official video predictor configures it."""

    @abstractmethod
    def owns(self, model: SAM2Base) -> bool:
        """Whether ``model`` is one of this family's networks."""

    def check_image_size(self, image_size: int) -> None:
        if image_size <= 0 or image_size % self.image_size_multiple:
            raise ModelError(
                f"{self.title} takes input sizes that are positive multiples of {self.image_size_multiple} "
                f"(e.g. 512, {self.native_image_size}), got {image_size}"
            )

    def memory_tokens(self, memory: Tensor) -> Tensor:
        """One frame's spatial memory (or its positional encoding) ``[B, ...]`` as ``[L, B, C]``
        tokens. SAM 2 keeps a ``[B, C, H, W]`` map."""
        return memory.flatten(2).permute(2, 0, 1)

    def attention_options(self, spatial_frames: int) -> dict[str, Any]:
        """Extra arguments the memory attention takes for ``spatial_frames`` memory frames."""
        return {}

    def randomised(self, model: SAM2Base) -> None:  # noqa: B027 - most families need nothing
        """Adjust a network on seeded random weights so that smoke tests and benchmarks see masks
        (what SAM 2.1's random weights happen to give)."""

    def prepare(self, model: SAM2Base) -> None:  # noqa: B027 - most families need nothing
        """Make a loaded network ready for inference (e.g. fuse re-parameterisable branches);
        its ``state_dict`` keeps the checkpoint's keys."""


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: a family, its size and its published checkpoint."""

    name: str  # what --model and YAML take: "sam2.1_hiera_tiny", "edgetam"
    family: Family
    size: str  # "tiny", "small", "base+", "large"; "" where a family has one size
    checkpoint: Checkpoint
    params_m: float  # millions of parameters
    config: str = ""  # the family's own name for this architecture (SAM 2: the sam2 config file)

    @property
    def title(self) -> str:
        """``"SAM 2.1 tiny"``, ``"EdgeTAM"``: what a person reads in logs, the doctor and the page."""
        return f"{self.family.title} {self.size}".strip()

    @property
    def filename(self) -> str:
        return self.checkpoint.filename
