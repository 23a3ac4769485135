"""Peak memory of one block of work, measured per job (not per process).

``torch.cuda.max_memory_allocated`` never resets by itself and a process's ``ru_maxrss`` only
grows, so in a multirun (many jobs in one process) both report the largest job so far.
``PeakMemory`` measures its own block:

    with PeakMemory(device) as peak:
        trainer.fit()
    peak.mb, peak.kind       # e.g. 412.3, "cpu_rss_growth"

- CUDA (``kind="cuda_max_allocated"``): the peak stats are reset at enter; ``mb`` is
  ``max_memory_allocated`` at exit: everything allocated on the device at its peak inside
  the block (parameters, gradients and optimizer state included).
- CPU (``kind="cpu_rss_growth"``): a daemon thread samples the process's resident memory
  from /proc/self/statm every ``interval_s`` (5 ms; it costs about 2% of one core); ``mb``
  is the peak growth above the value at enter. Only anonymous memory counts (resident minus file-backed pages), so library code
  paged in on first use of an op is not taken for tensors. At enter, glibc's
  ``malloc_trim(0)`` returns memory that earlier work freed but the allocator kept, so the
  baseline is the memory really in use. A peak shorter than the interval can be missed.
  Where /proc is absent (not Linux), it falls back to the growth of ``ru_maxrss`` within
  the block, which only shows a peak above the process's previous high-water mark.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
import threading
from typing import Optional, Union

import torch

_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 2 ** 20


def anonymous_rss_bytes(fd: Optional[int] = None) -> Optional[int]:
    """Resident memory not backed by files (heap, tensors), in bytes; None without /proc.
    ``fd``: /proc/self/statm kept open (os.open) by a caller that reads it often."""
    try:
        if fd is not None:
            fields = os.pread(fd, 256, 0).split()
        else:
            with open(_STATM, "rb") as f:
                fields = f.read().split()
    except OSError:
        return None
    resident, shared = int(fields[1]), int(fields[2])
    return (resident - shared) * _PAGE


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


_libc = None


def trim_malloc() -> bool:
    """glibc's malloc_trim(0): give freed heap memory back to the OS. False where
    unavailable (not glibc)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True


class PeakMemory:
    """Context manager: peak memory of its block, in MiB (``mb``), and how it was measured
    (``kind``). See the module docstring."""

    def __init__(self, device: Union[str, torch.device, None] = None, interval_s: float = 0.005):
        device = torch.device(device if device is not None else "cpu")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be a cpu or cuda device, got {device}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.device, self.interval_s = device, interval_s
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_growth"
        self.mb: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        self.mb = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        trim_malloc()
        self._base = anonymous_rss_bytes()
        if self._base is None:  # no /proc: the high-water mark is all there is
            self._base = _max_rss_bytes()
            return self
        self._peak = self._base
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="PeakMemory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        fd = os.open(_STATM, os.O_RDONLY)  # one open file: a wake-up costs one pread
        try:
            while True:
                now = anonymous_rss_bytes(fd)
                if now is not None and now > self._peak:
                    self._peak = now
                if self._stop.wait(self.interval_s):
                    return
        finally:
            os.close(fd)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / _MB
            return
        if self._thread is None:
            self.mb = max(_max_rss_bytes() - self._base, 0) / _MB
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        now = anonymous_rss_bytes()  # the block's last moment, in case the sampler missed it
        self._peak = max(self._peak, now or 0)
        self.mb = max(self._peak - self._base, 0) / _MB

    def facts(self) -> dict:
        """``{"peak_mem_mb": ..., "peak_mem_kind": ...}`` for results.json."""
        if self.mb is None:
            raise RuntimeError("PeakMemory.facts() before the block ended")
        return {"peak_mem_mb": self.mb, "peak_mem_kind": self.kind}
