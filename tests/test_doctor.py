"""``sam2-stream doctor``: each problem is found and comes with what to do; ``--version`` and the
doctor work without importing torch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import doctor
from streamer.doctor import FAIL, OK, WARN, DoctorConfig, Finding, diagnose
from streamer.model.families import MODELS

from .webrtc_scenarios import free_port


def findings_of(config: DoctorConfig) -> dict[str, Finding]:
    return {f.check: f for f in diagnose(config)}


def test_a_port_in_use_fails_with_what_to_do() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        found = findings_of(DoctorConfig(port=port))["port"]
    assert found.status == FAIL and "in use" in found.detail and "--port" in found.fix
    assert findings_of(DoctorConfig(port=port))["port"].status == OK  # free again


def test_a_package_without_its_page_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a plain install used to produce: a server without web/."""
    monkeypatch.setattr(doctor, "WEB_DIR", tmp_path / "web")
    found = findings_of(DoctorConfig(port=free_port()))["package"]
    assert found.status == FAIL and "index.html" in found.detail and "python -m build" in found.fix


def test_checkpoint_cache_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not cached (where it will go), partly downloaded, cached; no room is a failure."""
    monkeypatch.setenv("STREAMER_CACHE_DIR", str(tmp_path))
    spec = MODELS["sam2.1_hiera_small"]
    config = DoctorConfig(model=spec.name)
    found = doctor.check_checkpoint(config)[0]
    assert found.status == WARN and "not cached" in found.detail and str(tmp_path) in found.detail
    assert spec.checkpoint.url in found.fix and "--checkpoint" in found.fix
    with open(tmp_path / (spec.filename + ".part"), "wb") as part:
        part.truncate(50_000_000)
    assert "partly downloaded (50 MB, resumes)" in doctor.check_checkpoint(config)[0].detail
    with open(tmp_path / spec.filename, "wb") as done:
        done.truncate(spec.checkpoint.size)
    found = doctor.check_checkpoint(config)[0]
    assert found.status == OK and str(tmp_path / spec.filename) in found.detail
    tiny = DoctorConfig(model="sam2.1_hiera_tiny")
    assert "also cached: sam2.1_hiera_small" in doctor.check_checkpoint(tiny)[0].detail
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _: _Usage())
    found = doctor.check_checkpoint(tiny)[0]
    assert found.status == FAIL and "MB free" in found.detail and "STREAMER_CACHE_DIR" in found.fix
    assert doctor.check_checkpoint(DoctorConfig(checkpoint=str(tmp_path / "nope.pt")))[0].status == FAIL


class _Usage:
    free = 10_000_000  # 10 MB: too little for any checkpoint


def test_codecs_found_and_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyAV's wheels have VP8 and H.264; without the VP8 encoder no viewer gets video."""
    found = doctor.check_codecs(DoctorConfig())[0]
    assert found.status == OK and "VP8 encoder" in found.detail and "H.264 decoder" in found.detail
    import av.codec

    real = av.codec.Codec

    def without_vp8(name: str, mode: str = "r") -> object:
        if name == "libvpx":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", without_vp8)
    found = doctor.check_codecs(DoctorConfig())[0]
    assert found.status == FAIL and "missing: VP8 encoder" in found.detail and "pip install" in found.fix


def test_a_broken_torch_is_a_finding_and_the_other_checks_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_torch, check_raises, doctor.check_port))
    found = diagnose(DoctorConfig(port=free_port()))
    assert [f.check for f in found] == ["torch", "raises", "port"]
    assert found[0].status == FAIL and "cannot import torch" in found[0].detail and "pip install torch" in found[0].fix
    assert found[1].status == FAIL and "the check itself failed: RuntimeError: boom" in found[1].detail
    assert found[2].status == OK


def check_raises(_: DoctorConfig) -> list[Finding]:
    raise RuntimeError("boom")


def test_command_line_json_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 with a failure, and the JSON names every check."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        assert doctor.main(["--json", "--port", str(holder.getsockname()[1])]) == 1
    found = {f["check"]: f for f in json.loads(capsys.readouterr().out)}
    assert {"python", "package", "torch", "sam2", "checkpoint", "codecs", "port"} <= found.keys()
    assert found["port"]["status"] == FAIL and found["package"]["status"] == OK


def test_version_and_doctor_answer_without_importing_torch() -> None:
    """So that they work, and can say what is wrong, where torch cannot be imported."""
    probe = (
        "import sys, contextlib, io; from streamer.__main__ import main\n"
        "assert main(['--version']) == 0\n"
        "assert 'torch' not in sys.modules, 'version imported torch'\n"
        "sys.modules['torch'] = None\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    code = main(['doctor', '--port', '{free_port()}'])\n"
        "assert code == 1 and 'cannot import torch' in out.getvalue(), out.getvalue()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sam2-stream 0.1.0 (Python ")


def test_host_port_and_model_come_from_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The doctor checks what the server would use; flags override the file; a bad file is a finding."""
    port = free_port()
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"model:\n  name: sam2.1_hiera_large\nserver:\n  port: {port}\n")
    doctor.main(["--json", "--config", str(mine)])
    found = {f["check"]: f for f in json.loads(capsys.readouterr().out)}
    assert f"127.0.0.1:{port}" in found["port"]["detail"] and "sam2.1_hiera_large" in found["checkpoint"]["detail"]
    other = free_port()
    doctor.main(["--json", "--config", str(mine), "--port", str(other)])
    assert f"127.0.0.1:{other}" in {f["check"]: f for f in json.loads(capsys.readouterr().out)}["port"]["detail"]
    mine.write_text("server:\n  prot: 1\n")
    assert doctor.main(["--json", "--config", str(mine)]) == 1
    found = {f["check"]: f for f in json.loads(capsys.readouterr().out)}
    assert found["config"]["status"] == FAIL and "unknown key 'prot'" in found["config"]["detail"]


def test_gpus_are_named_with_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in: torch.cuda answers as for two GPUs (none here), an Ampere and an older one."""
    import types

    import torch

    cards = [
        types.SimpleNamespace(name="NVIDIA H100", major=9, minor=0),
        types.SimpleNamespace(name="T4", major=7, minor=5),
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: cards[i])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (40 * 2**30, 80 * 2**30))
    torch_found, h100, t4 = doctor.check_torch(DoctorConfig())
    assert torch_found.status == OK
    assert h100.status == OK and h100.detail == "cuda:0 NVIDIA H100, 80.0 GiB (40.0 free), compute 9.0, bfloat16"
    assert t4.status == WARN and "no native bfloat16" in t4.detail and "precision: float32" in t4.fix


def test_ray_is_only_needed_for_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Ray the doctor says only --cluster needs it, unless a cluster is asked for: then
    it fails, with the install to run (the cluster's own answer is checked in test_cluster)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    (plain,) = doctor.check_cluster(DoctorConfig())
    assert plain.status == OK and "only --cluster needs it" in plain.detail
    (asked,) = doctor.check_cluster(DoctorConfig(cluster="ray://head:10001"))
    assert asked.status == FAIL and "sam2-streamer[cluster]" in asked.fix
