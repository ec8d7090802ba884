"""Host reads in the decoding hot path: each one is named, and every other sync is a bug.

On a GPU, every time the host reads a device value (``.tolist()``, ``int(t)``, a boolean mask
index, ``nonzero``, a blocking host→device copy) it waits for every kernel queued before it, so
the launch pipeline drains. A greedy step needs exactly one such read: choosing the accepted path
(``STEP_READ``, in ``verify.choose_greedy``), because the host decides what to commit. Policies
whose growth depends on the draft's numbers decide on the host, once per layer, whether and where
to grow (each rule declares its reads: ``GrowthRule.host_reads``, a policy's ``host_reads``); the
n-gram drafter is a host-side table and reads its layer's paths.
Static-shape policies with a model drafter make no read but ``STEP_READ``.

    with host_read(STEP_READ, device):      # the only places device values reach the host
        host = packed.tolist()
    to_device(values, device)               # host values → device, without a blocking copy

``host_read`` switches CUDA's sync debug mode (``torch.cuda.set_sync_debug_mode``) off around
its read, so a run under ``set_sync_debug_mode("error")`` fails on any *other* sync
(``tests/test_cuda.py``); on CPU, ``tests/sync_guard.py`` checks the same with a dispatch mode.
``recording()`` lists the named reads a run makes.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

STEP_READ = "verify.choose_greedy"  # the accepted path, its tokens and slots: one read per greedy step
AR_READ = "decoding.generate_autoregressive"  # plain decoding's next token: one read per token
OPT_TREE_READ = "opt-tree: a layer's E_sub and frontier"  # the δ rule (opt-tree), per layer
AUTO_READ = "opt-tree-auto: the cost model"  # the layer and top-n p̂ into the numpy cost model, per layer and at the end
DYNATREE_READ = "dynatree: breadths, expansion, history"  # per layer, and once after verification
NGRAM_READ = "ngram: a layer's token paths"  # the lookup table lives on the host, per layer

_open: list[str] = []  # named host reads (and uploads) in progress, innermost last
_log: list[str] | None = None  # while recording: every named read, in order


@contextmanager
def host_read(name: str, device: torch.device) -> Iterator[None]:
    """Mark the block as the named host read ``name``: CUDA's sync debug mode is off inside it."""
    if _log is not None:
        _log.append(name)
    mode = None
    if device.type == "cuda":
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
    _open.append(name)
    try:
        yield
    finally:
        _open.pop()
        if mode is not None:
            torch.cuda.set_sync_debug_mode(mode)


def in_host_read() -> bool:
    """Whether a named host read (or an upload through ``to_device``) is in progress."""
    return bool(_open)


def to_device(values, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Host values (a list of numbers) as a tensor on ``device``, copied without blocking the host
    (a blocking host→device copy waits for the device like a read does)."""
    _open.append("upload")
    try:
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
    finally:
        _open.pop()


@contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the names of the host reads made inside the block (in order) into the yielded list."""
    global _log
    outer, _log = _log, []
    try:
        yield _log
    finally:
        _log = outer
