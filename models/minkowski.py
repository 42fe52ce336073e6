"""The one place that imports MinkowskiEngine.

MinkowskiEngine 0.5.4 does ``from collections import Sequence``, which Python 3.10 removed; the old
names are restored from ``collections.abc`` before the import. Nothing is imported at module load:
``--pytorch`` runs never touch MinkowskiEngine.
"""

from __future__ import annotations

import collections
import collections.abc
import warnings
from types import ModuleType

INSTALL_HINT = ("MinkowskiEngine is not installed: run `make setup` (builds minkowskiengine==0.5.4 "
                "from source, CPU-only) or use --pytorch")


class MinkowskiUnavailable(ImportError):
    """MinkowskiEngine cannot be imported; the message says how to get it or avoid it."""


def import_minkowski() -> ModuleType:
    for name in ("Sequence", "Mapping", "MutableMapping", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    try:
        with warnings.catch_warnings():
            # A CPU build warns on every import; that build is the intended one here.
            warnings.filterwarnings("ignore", message=".*compiled with CPU_ONLY.*")
            import MinkowskiEngine
    except ImportError as e:
        raise MinkowskiUnavailable(f"{INSTALL_HINT} ({e})") from None
    return MinkowskiEngine
