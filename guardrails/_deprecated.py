"""Names that moved: still reachable from their 0.1 place, with a warning saying where.

A module ``__getattr__`` (PEP 562) runs only for names the module does not define,
so the current names cost nothing; a moved name is imported from its new module
when first asked for, and each access warns once, naming the import to write.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module`` serving ``moved`` (name -> new module path)."""

    def __getattr__(name: str) -> Any:
        new_module = moved.get(name)
        if new_module is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is deprecated: import it from {new_module} "
                      f"(from {new_module} import {name})", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new_module), name)

    return __getattr__
