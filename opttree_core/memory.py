"""What a decoding with trees of n nodes needs in memory, checked before anything is allocated.

The allocations that grow with the node budget n (N = n + 1 with the root), for T new tokens, a
sequence of S tokens (prompt + T), a vocabulary of V entries and H attention heads:

    the tree log      T × N × 25 B              (``TreeLog``, preallocated: treelog.NODE_FIELDS)
    tree attention    N × (S + N) × (5 + 4 H) B  (the bool mask, its additive float copy, the scores)
    logits            3 × N × V × 4 B            (the target's logits and probabilities, the draft's q)

Before a model is loaded S, V and H are unknown and taken as T, 0 and 1: a lower bound, so a budget
refused then would be refused for every model. ``check_tree_memory`` compares the sum with the
memory available on the device and refuses in one line, naming the numbers and the largest budget
that fits. ``require`` does the same for any other allocation (Sequoia's dynamic program).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import OptTreeError

LOG_NODE_BYTES = 25  # int32 token, parent, target; int16 depth, rank; float32 p̂, q; bool accepted
MASK_BYTES = 5  # per (query, key) pair: the bool tree mask and its additive float32 copy
SCORE_BYTES = 4  # per head and (query, key) pair: float32 attention scores
LOGIT_COPIES = 3  # (N, V) float32 arrays alive at once: target logits, their probabilities, the draft's q


def tree_bytes(nodes: int, new_tokens: int, sequence: int = 0, vocab: int = 0, heads: int = 1) -> dict[str, int]:
    """The memory (bytes) of each part above for trees of ``nodes`` drafted nodes."""
    n, s = nodes + 1, max(sequence, new_tokens)
    return {"the tree log": new_tokens * n * LOG_NODE_BYTES,
            "tree attention": n * (s + n) * (MASK_BYTES + SCORE_BYTES * heads),
            "logits": LOGIT_COPIES * n * vocab * 4}


def _host_available() -> int:
    """Memory the host can still give: MemAvailable on Linux (free plus reclaimable), else the free
    physical pages (or, where even those are not reported, all of them)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    name = "SC_AVPHYS_PAGES" if "SC_AVPHYS_PAGES" in os.sysconf_names else "SC_PHYS_PAGES"
    return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")


def available_bytes(device="cpu") -> int:
    """Free memory on ``device``: the GPU's free memory for CUDA, the host's otherwise."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.mem_get_info(torch.device(device))[0]
    return _host_available()


def size_text(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024:
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"


def require(need: int, what: str, device="cpu", advice: str = "") -> None:
    """Raise a one-line OptTreeError when ``need`` bytes exceed the memory available on ``device``."""
    have = available_bytes(device)
    if need > have:
        raise OptTreeError(f"{what} needs about {size_text(need)}, more than the {size_text(have)} available on "
                           f"{device}{advice}")


def _model_shape(model, sequence: int) -> dict[str, int]:
    if model is None:
        return {"sequence": sequence}
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return {"sequence": sequence, "vocab": int(getattr(config, "vocab_size", 0) or 0),
            "heads": int(getattr(config, "num_attention_heads", 1) or 1)}


def check_tree_memory(nodes: int, new_tokens: int, device="cpu", model=None, prompt_len: int = 0) -> None:
    """Refuse, in one line, a node budget whose trees cannot fit in the memory available on
    ``device`` (``model``: the target, whose vocabulary and heads then count too)."""
    shape = _model_shape(model, prompt_len + new_tokens)
    parts = tree_bytes(nodes, new_tokens, **shape)
    need, have = sum(parts.values()), available_bytes(device)
    if need <= have:
        return
    low, high = 0, nodes  # the largest budget that fits: sum(tree_bytes) grows with the budget
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if sum(tree_bytes(mid, new_tokens, **shape).values()) <= have else (low, mid - 1)
    largest = max(parts, key=parts.get)
    raise OptTreeError(f"a node budget of {nodes} needs about {size_text(need)} ({largest}: {size_text(parts[largest])}) "
                       f"for {new_tokens} new tokens, more than the {size_text(have)} available on {device}: "
                       f"use at most about {low} nodes")
