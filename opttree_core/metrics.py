"""Every metric, defined once, for every method.

    p̂(node) = Π q along the node's path (root excluded)
    E(A)    = Σ p̂ over a tree's non-root nodes: the expected number of accepted drafted tokens
    A       = tokens a step adds to the output: accepted drafted tokens + the bonus token
    MAL     = mean A over steps (the bonus included, so A ≈ E(A) + 1 for a calibrated draft)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def expected_acceptance(p_hat: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """E(A) of one tree: Σ p̂ over nodes of depth ≥ 1 (0-dim tensor, stays on the device)."""
    return torch.where(depth > 0, p_hat, torch.zeros_like(p_hat)).sum()


def mean_acceptance_length(accept_lengths: Sequence[int]) -> float:
    """MAL: mean tokens per step, bonus token included."""
    return float(sum(accept_lengths)) / len(accept_lengths) if accept_lengths else 0.0


def tokens_per_second(n_tokens: int, seconds: float) -> float:
    return n_tokens / seconds if seconds > 0 else float("nan")


def speedup(method_tokens_per_s: float, baseline_tokens_per_s: float) -> float:
    """Ratio of throughputs measured in the same run (never across separate runs)."""
    return method_tokens_per_s / baseline_tokens_per_s if baseline_tokens_per_s > 0 else float("nan")
