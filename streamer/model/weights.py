"""Official SAM 2.1 checkpoints: where they live, and a verified, resumable download into a cache.

Users run this on machines with internet access; the checkpoint is fetched once, checked against
its published SHA-256 and size, and moved into place atomically so that an interrupted or corrupt
download can never be mistaken for a good one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import CheckpointError, DownloadError

logger = logging.getLogger(__name__)

BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
CACHE_ENV = "STREAMER_CACHE_DIR"
BASE_URL_ENV = "STREAMER_WEIGHTS_BASE_URL"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """One official SAM 2.1 model: its sam2 config and its published checkpoint."""

    name: str
    sam2_config: str
    filename: str
    size: int
    sha256: str
    base_url: str | None = None  # None: $STREAMER_WEIGHTS_BASE_URL or the official server

    @property
    def url(self) -> str:
        base = self.base_url or os.environ.get(BASE_URL_ENV, BASE_URL)
        return base.rstrip("/") + "/" + self.filename


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "sam2.1_hiera_tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "sam2.1_hiera_tiny.pt",
            156_008_466,
            "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        ),
        ModelSpec(
            "sam2.1_hiera_small",
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            "sam2.1_hiera_small.pt",
            184_416_285,
            "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        ),
        ModelSpec(
            "sam2.1_hiera_base_plus",
            "configs/sam2.1/sam2.1_hiera_b+.yaml",
            "sam2.1_hiera_base_plus.pt",
            323_606_802,
            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        ),
        ModelSpec(
            "sam2.1_hiera_large",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
            "sam2.1_hiera_large.pt",
            898_083_611,
            "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    """Look a model up by name, with the list of valid names in the error."""
    try:
        return MODELS[name]
    except KeyError:
        raise CheckpointError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def cache_dir() -> Path:
    """``$STREAMER_CACHE_DIR``, else ``$XDG_CACHE_HOME/sam2-streamer``, else ``~/.cache/sam2-streamer``."""
    if override := os.environ.get(CACHE_ENV):
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "sam2-streamer"


def is_cached(spec: ModelSpec, path: Path) -> bool:
    """A complete file (its size checked; the hash was checked when it was downloaded)."""
    return path.is_file() and path.stat().st_size == spec.size


def ensure_checkpoint(
    spec: ModelSpec, cache: Path | None = None, *, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Return the cached checkpoint for ``spec``, downloading and verifying it first if needed."""
    dest = (cache or cache_dir()) / spec.filename
    if is_cached(spec, dest):
        return dest
    download(spec, dest, progress=progress, timeout=timeout)
    return dest


def download(spec: ModelSpec, dest: Path, *, progress: bool = True, timeout: float = 30.0) -> None:
    """Fetch ``spec.url`` to ``dest``: resumable ``.part`` file, size and SHA-256 check, atomic rename.

    A lock file serialises concurrent downloads of the same checkpoint by several processes.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _locked(dest.with_name(dest.name + ".lock")):
        if dest.is_file() and dest.stat().st_size == spec.size:
            return  # another process finished it while we waited
        logger.info("downloading %s (%.0f MB) from %s", spec.filename, spec.size / 1e6, spec.url)
        try:
            digest = _fetch(spec, part, progress=progress, timeout=timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download {spec.filename} from {spec.url}: {reason}. "
                f"If this machine is offline, copy the file from a machine that has it and pass "
                f"--checkpoint PATH (or put it at {dest})."
            ) from exc
        size = part.stat().st_size
        if size < spec.size:
            raise DownloadError(
                f"download of {spec.filename} stopped at {size} of {spec.size} bytes; "
                "run again to resume it, or pass --checkpoint PATH."
            )
        if size != spec.size or digest.hexdigest() != spec.sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"downloaded {spec.filename} is corrupt (got {size} bytes, SHA-256 "
                f"{digest.hexdigest()[:12]}…; expected {spec.size} bytes, {spec.sha256[:12]}…). "
                "The partial file was deleted; run again to retry, or pass --checkpoint PATH."
            )
        os.replace(part, dest)
        logger.info("checkpoint verified and saved to %s", dest)


def _fetch(spec: ModelSpec, part: Path, *, progress: bool, timeout: float) -> hashlib._Hash:
    """Append the rest of the file to ``part``; return the SHA-256 of the whole of it."""
    digest, have = _hash_existing(part, spec.size)
    headers = {"Range": f"bytes={have}-"} if have else {}
    request = urllib.request.Request(spec.url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:  # server ignored the range: start over
            digest, have = hashlib.sha256(), 0
        mode = "ab" if have else "wb"
        with (
            part.open(mode) as out,
            tqdm(
                total=spec.size,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=spec.filename,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest


def _hash_existing(part: Path, expected_size: int) -> tuple[hashlib._Hash, int]:
    """Hash an earlier partial download so that it can be resumed; (digest, length)."""
    digest = hashlib.sha256()
    if not part.is_file():
        return digest, 0
    size = part.stat().st_size
    if size >= expected_size:
        part.unlink()
        return digest, 0
    with part.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    logger.info("resuming %s from %d bytes", part.name, size)
    return digest, size


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = ["MODELS", "ModelSpec", "cache_dir", "download", "ensure_checkpoint", "model_spec"]
