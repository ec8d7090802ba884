"""Guards that fail on any host synchronisation outside a named host read (``opttree_core.syncs``).

``no_host_sync`` works on CPU, where nothing ever waits: a dispatch mode raises on every aten op
that makes a CUDA host wait for the device (reading a scalar, ``nonzero``, a boolean-mask index,
``unique``, making a tensor from host data, which on a GPU is a blocking upload), and
``Tensor.tolist`` / ``numpy`` / ``cpu`` raise too, unless a named ``host_read`` (or
``to_device``, the non-blocking upload) is in progress. ``cuda_sync_error`` is the real thing:
``torch.cuda.set_sync_debug_mode("error")``, which ``host_read`` switches off for its read.
``guarded_steps`` runs every decoding step and every ``TreeLog.record`` inside a guard and
records the named reads each step makes.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from opttree_core import decoding, syncs
from opttree_core.treelog import TreeLog

aten = torch.ops.aten
SYNC_OPS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal, aten._unique, aten._unique2,
            aten.unique_dim, aten.unique_consecutive, aten.bincount}
MASK_OPS = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}  # sync when indexed by a mask
# A tensor made from host data: on a GPU, a blocking upload. 0-dim ones are left out: ``t[i] = 0`` makes one
# too, and on a GPU that is a fill, not a copy (``torch.tensor(0, device=...)`` is caught by the cuda tests);
# so are empty ones, which copy nothing (transformers' caches start from ``torch.tensor([])``).
UPLOAD_OPS = {aten.lift_fresh, aten.lift_fresh_copy}
HOST_METHODS = ("tolist", "numpy", "cpu")


class HostSync(AssertionError):
    """A host synchronisation outside every named host read."""


def _isin_needs_unique(args, kwargs) -> bool:
    """``isin`` deduplicates its inputs with ``unique`` (a sync) unless told they are unique."""
    return not (args[2] if len(args) > 2 else (kwargs or {}).get("assume_unique", False))


def _has_mask(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices)


class _DispatchGuard(TorchDispatchMode):
    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not syncs.in_host_read():
            packet = func.overloadpacket
            if (packet in SYNC_OPS or (packet in MASK_OPS and _has_mask(args))
                    or (packet is aten.isin and _isin_needs_unique(args, kwargs))
                    or (packet in UPLOAD_OPS and args[0].dim() > 0 and args[0].numel() > 0)):
                raise HostSync(f"{func} would make the host wait for the device in {self.where}, "
                               "outside every named host read")
        return func(*args, **(kwargs or {}))


def _guarded(name: str, original, where: str):
    def method(self, *args, **kwargs):
        if not syncs.in_host_read():
            raise HostSync(f"Tensor.{name}() in {where}, outside every named host read")
        return original(self, *args, **kwargs)

    return method


@contextmanager
def no_host_sync(where: str = "the block"):
    """Raise ``HostSync`` on any host synchronisation a GPU would make inside the block (on CPU)."""
    saved = {name: vars(torch.Tensor).get(name) for name in HOST_METHODS}
    for name in HOST_METHODS:
        setattr(torch.Tensor, name, _guarded(name, getattr(torch.Tensor, name), where))
    try:
        with _DispatchGuard(where):
            yield
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


@contextmanager
def cuda_sync_error(where: str = "the block"):
    """CUDA's own check: any synchronising operation inside the block raises (``host_read`` excepted)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def guarded_steps(monkeypatch, guard) -> list[list[str]]:
    """Run every ``decoding._step`` and ``TreeLog.record`` inside ``guard``; returns, per step, the
    named host reads it made (``TreeLog.record`` must make none)."""
    steps: list[list[str]] = []
    step, record = decoding._step, TreeLog.record

    def guarded_step(loop, *args):
        with syncs.recording() as reads, guard("a decoding step"):
            out = step(loop, *args)
        steps.append(reads)
        return out

    def guarded_record(log, step_record):
        with syncs.recording() as reads, guard("TreeLog.record"):
            record(log, step_record)
        assert reads == [], f"TreeLog.record made host reads {reads}"

    monkeypatch.setattr(decoding, "_step", guarded_step)
    monkeypatch.setattr(TreeLog, "record", guarded_record)
    return steps
