"""Process-level choices made once by the entry script: device and seeds."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import resource
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configs.settings import SettingsError


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; asking for cuda without one is a settings error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingsError("DEFAULT.device = 'cuda' but no CUDA device is available (use cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may draw from the legacy global RNG
    torch.manual_seed(seed)


def peak_memory_gb() -> float:
    """This process's peak resident memory so far (Linux updates its high-water mark lazily: at least now's)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_gb = peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux
    return max(peak_gb, resident_memory_gb() or 0.0)


def resident_memory_gb() -> float | None:
    """This process's resident memory now (Linux's /proc; None where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere).

    Each step allocates ME coordinate maps and tensors of other sizes than the last; glibc keeps what a step
    freed resident. Trimmed after every step, a fifty-per-class probe sits at 0.94 GB between steps instead
    of 1.07-1.27 GB, at no measurable cost (benchmarks/results/2026-12-01-malloc-trim.json).
    """
    if (trim := malloc_trim()) is not None:
        trim(0)


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim from the process's own symbols (no library search each step), or None."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration instead of killing the process.

    Use as a context manager; the previous handlers come back on exit. A second signal while a stop is
    pending raises KeyboardInterrupt, so an impatient user can still abort at once. Work that is worth
    nothing half-done and is redone on resume (an evaluation) runs under ``abortable()``: there the first
    signal stops it at once instead of minutes later.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._abortable = False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        pending, self.signal = self.signal is not None, self.signal or signum
        if pending or self._abortable:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def abortable(self) -> Iterator[None]:
        """Inside, a signal interrupts the work at once; the block is left early and the stop is requested."""
        self._abortable = True
        try:
            yield
        except KeyboardInterrupt:
            if self.signal is None:  # not ours (e.g. raised by the code inside): let it through
                raise
        finally:
            self._abortable = False

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
