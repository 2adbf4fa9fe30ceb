"""numpy, imported on first attribute use.

The read path (open, tree, the node API, node_at, source) never touches numpy, so a reader
process does not map it (≈ 19 MB of RSS); the indexer, the column APIs and the benchmarks
load it the first time they call into it. Modules write::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from ._numpy import np
"""

from __future__ import annotations

import importlib
from typing import Any


class _Numpy:
    """Stands for the numpy module: the first lookup of each name imports numpy and keeps
    the value as an attribute, so later lookups cost what a module attribute does."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # copy/pickle/introspection probes load nothing
        value = getattr(importlib.import_module("numpy"), name)
        setattr(self, name, value)
        return value


np = _Numpy()
