"""Checkpoint download against a real HTTP server on 127.0.0.1, and checkpoint loading."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from streamer import CheckpointError, DownloadError, ModelError, StreamingTracker
from streamer.model.families import MODELS, model_spec
from streamer.model.weights import Checkpoint, cache_dir, ensure_checkpoint

PAYLOAD = os.urandom(300_000)  # a made-up "checkpoint": larger than one read chunk would be nice


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves PAYLOAD at /good.pt and a corrupted copy at /bad.pt, honouring Range requests."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.path + " " + str(self.headers.get("Range")))
        body = {"/good.pt": PAYLOAD, "/bad.pt": PAYLOAD[:-1] + b"!"}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.requests.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _spec(base_url: str, filename: str = "good.pt", *, git_blob: bool = False) -> Checkpoint:
    if git_blob:  # published as a git tree's blob id, size unknown (EdgeTAM's edgetam.pt)
        digest = "git-blob:" + hashlib.sha1(b"blob %d\0" % len(PAYLOAD) + PAYLOAD).hexdigest()
        return Checkpoint(filename, base_url, digest, mirror_env=None)
    return dataclasses.replace(
        MODELS["sam2.1_hiera_tiny"].checkpoint,
        filename=filename,
        base_url=base_url,
        size=len(PAYLOAD),
        digest="sha256:" + hashlib.sha256(PAYLOAD).hexdigest(),
        mirror_env=None,
    )


def test_download_verifies_and_caches(server: str, tmp_path: Path) -> None:
    """A good file is downloaded once, verified, and then served from the cache."""
    path = ensure_checkpoint(_spec(server), tmp_path, progress=False)
    assert path == tmp_path / "good.pt" and path.read_bytes() == PAYLOAD
    assert not list(tmp_path.glob("*.part"))
    assert ensure_checkpoint(_spec("http://127.0.0.1:9"), tmp_path, progress=False) == path
    assert len(_Handler.requests) == 1


def test_git_blob_digest_verifies_a_file_of_unknown_size(server: str, tmp_path: Path) -> None:
    """A checkpoint known only by its git blob id downloads and verifies; a changed byte does not."""
    path = ensure_checkpoint(_spec(server, git_blob=True), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="corrupt.*git-blob"):
        bad = dataclasses.replace(_spec(server, git_blob=True), filename="bad.pt")
        ensure_checkpoint(bad, tmp_path, progress=False)
    assert not (tmp_path / "bad.pt").exists()


def test_corrupt_download_is_rejected_and_removed(server: str, tmp_path: Path) -> None:
    """A file whose SHA-256 does not match is refused and nothing is left in the cache."""
    with pytest.raises(DownloadError, match="corrupt"):
        ensure_checkpoint(_spec(server, "bad.pt"), tmp_path, progress=False)
    assert not (tmp_path / "bad.pt").exists() and not list(tmp_path.glob("*.part"))


def test_server_gone_says_use_checkpoint_path(tmp_path: Path) -> None:
    """With no server answering, the error names --checkpoint PATH and the cache location."""
    with socket_free_port() as port:
        spec = _spec(f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match=r"could not download.*--checkpoint PATH"):
        ensure_checkpoint(spec, tmp_path, progress=False, timeout=2)
    assert not (tmp_path / "good.pt").exists()


def test_missing_file_on_server(server: str, tmp_path: Path) -> None:
    """An HTTP 404 is reported as a download error, not a crash."""
    with pytest.raises(DownloadError, match="Not Found|404"):
        ensure_checkpoint(_spec(server, "absent.pt"), tmp_path, progress=False)


def test_partial_download_resumes(server: str, tmp_path: Path) -> None:
    """An interrupted download continues from its .part file with an HTTP Range request."""
    (tmp_path / "good.pt.part").write_bytes(PAYLOAD[:1000])
    path = ensure_checkpoint(_spec(server), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.requests == ["/good.pt bytes=1000-"]


def test_cache_dir_follows_environment(monkeypatch, tmp_path: Path) -> None:
    """$STREAMER_CACHE_DIR wins, then $XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STREAMER_CACHE_DIR", raising=False)
    assert cache_dir() == tmp_path / "xdg" / "sam2-streamer"
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_registry_matches_published_checkpoints() -> None:
    """The four SAM 2.1 models and EdgeTAM with their official file names, sizes and URLs."""
    assert sorted(MODELS) == sorted(
        ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large", "edgetam"]
    )
    tiny = MODELS["sam2.1_hiera_tiny"]
    assert tiny.checkpoint.size == 156_008_466 and tiny.title == "SAM 2.1 tiny"
    assert tiny.checkpoint.url == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    edgetam = MODELS["edgetam"]
    assert edgetam.title == "EdgeTAM" and edgetam.family.key == "edgetam"
    assert edgetam.checkpoint.url == "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt"
    assert edgetam.checkpoint.digest == "git-blob:abd54d22bbd22ba3e53cf59a307e59e0f3701be6"
    with pytest.raises(ModelError, match="choose auto or one of: sam2.1_hiera_tiny"):
        model_spec("sam3")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    """A checkpoint in the official {"model": state_dict} format loads into the same weights."""
    source = StreamingTracker.build(random_init=True, seed=3, image_size=128, device="cpu")
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.model.state_dict()}, path)
    loaded = StreamingTracker.build(checkpoint=path, image_size=128, device="cpu")
    for key, value in source.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key


def test_bad_checkpoints_say_what_is_wrong(tmp_path: Path) -> None:
    """Missing, unreadable and wrong-model checkpoints raise CheckpointError with advice."""
    with pytest.raises(CheckpointError, match="does not exist"):
        StreamingTracker.build(checkpoint=tmp_path / "nope.pt", device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        StreamingTracker.build(checkpoint=tmp_path / "junk.pt", device="cpu")
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="another model or size"):
        StreamingTracker.build(checkpoint=tmp_path / "other.pt", device="cpu")
    with pytest.raises(CheckpointError, match="not both"):
        StreamingTracker.build(checkpoint=tmp_path / "other.pt", random_init=True, device="cpu")


class socket_free_port:  # noqa: N801 - used as a context manager
    """Reserve a loopback port, then release it so that nothing listens there."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_edgetam_checkpoint_round_trip_and_wrong_family(tmp_path: Path) -> None:
    """An EdgeTAM checkpoint in the official format loads strictly into the same weights (the
    fused RepViT copy is rebuilt from them); a SAM 2.1 checkpoint is refused by name."""
    source = StreamingTracker.build(model="edgetam", random_init=True, seed=3, image_size=256, device="cpu")
    path = tmp_path / "edgetam.pt"
    torch.save({"model": source.model.state_dict()}, path)
    loaded = StreamingTracker.build(model="edgetam", checkpoint=path, image_size=256, device="cpu")
    for key, value in source.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
    frame = torch.randint(0, 255, (96, 128, 3), dtype=torch.uint8).numpy()
    for tracker in (source, loaded):
        tracker.step(frame)
    a = source.add_prompt(1, points=[[60, 50]], labels=[1])
    b = loaded.add_prompt(1, points=[[60, 50]], labels=[1])
    assert torch.equal(torch.from_numpy(a.logits), torch.from_numpy(b.logits))
    sam = tmp_path / "sam.pt"
    sam2_1 = StreamingTracker.build(random_init=True, image_size=128, device="cpu")
    torch.save({"model": sam2_1.model.state_dict()}, sam)
    with pytest.raises(CheckpointError, match="does not fit edgetam"):
        StreamingTracker.build(model="edgetam", checkpoint=sam, image_size=256, device="cpu")
