"""Published weights files: where they live, and a verified, resumable download into a cache.

Users run this on machines with internet access; the checkpoint is fetched once, checked against
its published digest (and size, where published), and moved into place atomically so that an interrupted or corrupt
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

from ..errors import DownloadError

logger = logging.getLogger(__name__)

CACHE_ENV = "STREAMER_CACHE_DIR"
BASE_URL_ENV = "STREAMER_WEIGHTS_BASE_URL"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """A published weights file: where it is served and how a download of it is verified.

    ``digest`` is ``"sha256:<hex>"``, or ``"git-blob:<hex>"`` for a file published only in a git
    tree (the SHA-1 git gives the blob). ``size`` is the exact byte count when it is published
    (checked before hashing, so that a short download resumes); ``None`` when it is not, with
    ``approx_bytes`` for what a user is told to expect.
    """

    filename: str
    base_url: str
    digest: str
    size: int | None = None
    approx_bytes: int = 0
    mirror_env: str | None = BASE_URL_ENV  # a variable naming a mirror of base_url, if any

    @property
    def url(self) -> str:
        base = (os.environ.get(self.mirror_env) if self.mirror_env else None) or self.base_url
        return base.rstrip("/") + "/" + self.filename

    @property
    def expected_bytes(self) -> int:
        return self.size if self.size is not None else self.approx_bytes

    def matches(self, path: Path) -> tuple[bool, str]:
        """Whether the file at ``path`` is this checkpoint; also the digest it has."""
        kind, want = self.digest.split(":", 1)
        size = path.stat().st_size
        if kind == "sha256":
            digest = hashlib.sha256()
        elif kind == "git-blob":
            digest = hashlib.sha1(f"blob {size}\0".encode())  # noqa: S324 - git's own object id
        else:
            raise ValueError(f"unknown digest kind {kind!r} in {self.digest!r}")
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        got = digest.hexdigest()
        return (self.size is None or size == self.size) and got == want, got


def cache_dir() -> Path:
    """``$STREAMER_CACHE_DIR``, else ``$XDG_CACHE_HOME/sam2-streamer``, else ``~/.cache/sam2-streamer``."""
    if override := os.environ.get(CACHE_ENV):
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "sam2-streamer"


def is_cached(checkpoint: Checkpoint, path: Path) -> bool:
    """A complete file (its size checked where published; the digest was checked when it was
    downloaded, and only a verified file is ever moved into place)."""
    return path.is_file() and (checkpoint.size is None or path.stat().st_size == checkpoint.size)


def ensure_checkpoint(
    checkpoint: Checkpoint, cache: Path | None = None, *, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Return the cached file for ``checkpoint``, downloading and verifying it first if needed."""
    dest = (cache or cache_dir()) / checkpoint.filename
    if is_cached(checkpoint, dest):
        return dest
    download(checkpoint, dest, progress=progress, timeout=timeout)
    return dest


def download(checkpoint: Checkpoint, dest: Path, *, progress: bool = True, timeout: float = 30.0) -> None:
    """Fetch ``checkpoint.url`` to ``dest``: resumable ``.part`` file, size and digest check,
    atomic rename. A lock file serialises concurrent downloads of one file by several processes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    name, url = checkpoint.filename, checkpoint.url
    with _locked(dest.with_name(dest.name + ".lock")):
        if is_cached(checkpoint, dest):
            return  # another process finished it while we waited
        logger.info("downloading %s (%.0f MB) from %s", name, checkpoint.expected_bytes / 1e6, url)
        try:
            _fetch(checkpoint, part, progress=progress, timeout=timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download {name} from {url}: {reason}. "
                f"If this machine is offline, copy the file from a machine that has it and pass "
                f"--checkpoint PATH (or put it at {dest})."
            ) from exc
        size = part.stat().st_size
        if checkpoint.size is not None and size < checkpoint.size:
            raise DownloadError(
                f"download of {name} stopped at {size} of {checkpoint.size} bytes; "
                "run again to resume it, or pass --checkpoint PATH."
            )
        good, got = checkpoint.matches(part)
        if not good:
            part.unlink(missing_ok=True)
            want = checkpoint.digest.split(":", 1)
            raise DownloadError(
                f"downloaded {name} is corrupt (got {size} bytes, {want[0]} {got[:12]}…; expected "
                f"{checkpoint.size or 'any number of'} bytes, {want[1][:12]}…). "
                "The partial file was deleted; run again to retry, or pass --checkpoint PATH."
            )
        os.replace(part, dest)
        logger.info("checkpoint verified and saved to %s", dest)


def _fetch(checkpoint: Checkpoint, part: Path, *, progress: bool, timeout: float) -> None:
    """Append the rest of the file to ``part`` (an earlier partial download resumes with a
    Range request when the full size is known)."""
    have = part.stat().st_size if part.is_file() else 0
    if checkpoint.size is None or have >= checkpoint.size:
        have = 0
    elif have:
        logger.info("resuming %s from %d bytes", part.name, have)
    headers = {"Range": f"bytes={have}-"} if have else {}
    request = urllib.request.Request(checkpoint.url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:  # server ignored the range: start over
            have = 0
        total = checkpoint.size or int(response.headers.get("Content-Length") or 0) + have or None
        with (
            part.open("ab" if have else "wb") as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=checkpoint.filename,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = ["Checkpoint", "cache_dir", "download", "ensure_checkpoint", "is_cached"]
