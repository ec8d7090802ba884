"""Whole-file writes that a reader, or a run killed half-way, never sees half done."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a hidden sibling of ``path``, then rename it over ``path``; returns ``path``.

    The sibling's name carries the process id, so processes writing the same file never share it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
    return path
