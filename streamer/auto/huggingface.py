"""Detector weights from the Hugging Face Hub: downloaded on first use into its usual cache
(``HF_HOME``, default ``~/.cache/huggingface``), and a clear error when they cannot be."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DetectorError

AUTO_EXTRA = "pip install 'sam2-streamer[auto]'"


def transformers_module() -> Any:
    """``transformers``, or an error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise DetectorError(f"automatic tracking needs the transformers library: {AUTO_EXTRA}") from None
    return transformers


def hub_cache() -> Path:
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def from_hub(cls: Any, repo: str, what: str) -> Any:
    """``cls.from_pretrained(repo)``: from the cache, else downloaded; offline, a DetectorError
    naming the repository and where it must go."""
    try:
        return cls.from_pretrained(repo)
    except OSError as exc:
        raise DetectorError(
            f"the {what}'s weights ({repo}) are not in the Hugging Face cache ({hub_cache()}) and could not be "
            f"downloaded ({exc}). On a machine with internet run `hf download {repo}` and copy its cache folder "
            f"here (or point HF_HOME at it); set HF_HUB_OFFLINE=1 to use the cache without asking the Hub."
        ) from None


__all__ = ["AUTO_EXTRA", "from_hub", "hub_cache", "transformers_module"]
