"""The machine's name, for benchmark tables, plot titles and results.json's ``device``."""
from __future__ import annotations

import platform

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_name(device) -> str:
    """The GPU's name, or the CPU model, its architecture and the threads torch uses,
    e.g. "AMD EPYC 7B13 (x86_64), 2 threads"."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({platform.machine()}), {torch.get_num_threads()} threads"
