"""What a benchmark ran on, for its JSON."""

from __future__ import annotations

import os
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
