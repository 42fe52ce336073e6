"""Process-level choices made once by the entry script: device and seeds."""

from __future__ import annotations

import random
import signal
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


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration instead of killing the process.

    Use as a context manager; the previous handlers come back on exit. A second signal while a stop is
    pending raises KeyboardInterrupt, so an impatient user can still abort at once.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
