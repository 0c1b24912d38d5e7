"""What a benchmark ran on, for its JSON, and where that JSON goes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def describe(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores"


def publish(report: dict, out: Path) -> None:
    """Write a benchmark's report to ``out`` (folders made as needed) and to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
