"""Every metric, defined once, for every method (torch-free: treeviz and figures import it too).

    p̂(node) = Π q along the node's path (root excluded)
    E(A)    = Σ p̂ over a tree's non-root nodes: the expected number of accepted drafted tokens
              (computed on the device per tree: ``DraftTree.expected_acceptance``; logged as ``ea``)
    A       = tokens a step adds to the output: accepted drafted tokens + the bonus token
    MAL     = mean A over steps (the bonus included, so A ≈ E(A) + 1 for a calibrated draft)
    speedup = a method's tokens/s over autoregressive decoding's, measured in the same run;
              pooled over several prompts: Σ tokens / Σ seconds of each, over the prompts both
              finished (``pooled_speedup``)
    interval = a 95 % percentile-bootstrap interval over prompts (``bootstrap_picks``,
              ``percentile_interval``)

The tables built from these (per method, per prompt, with intervals) are ``summary.py``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_acceptance_length(accept_lengths: Sequence[int]) -> float:
    """MAL: mean tokens per step, bonus token included."""
    return float(sum(accept_lengths)) / len(accept_lengths) if accept_lengths else 0.0


def tokens_per_second(n_tokens: int, seconds: float) -> float:
    return n_tokens / seconds if seconds > 0 else float("nan")


def speedup(method_tokens_per_s: float, baseline_tokens_per_s: float) -> float:
    """Ratio of throughputs measured in the same run (never across separate runs)."""
    return method_tokens_per_s / baseline_tokens_per_s if baseline_tokens_per_s > 0 else float("nan")


def pooled_mal(new_tokens: int, steps: int) -> float:
    """MAL of several runs together: total tokens / total steps (= the mean A over all their steps).
    For peers without a tree, a step is one target forward call (HF assisted: tokens / target calls)."""
    return new_tokens / steps if steps > 0 else float("nan")


def mean_expected_acceptance(ea_per_step: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Mean E(A) per step (optionally weighted, e.g. per-run means weighted by their step counts)."""
    weights = [1.0] * len(ea_per_step) if weights is None else list(weights)
    total = float(sum(weights))
    return float(sum(e * w for e, w in zip(ea_per_step, weights))) / total if total > 0 else float("nan")


def pooled_speedup(method: dict[str, tuple[int, float]], baseline: dict[str, tuple[int, float]]) -> float:
    """The one speedup of a method over several prompts: ``method`` and ``baseline`` map a prompt id
    to (new tokens, seconds); over the prompts both finished, Σ tokens / Σ seconds of the method
    divided by the baseline's. A partial or resumed run thus compares like with like."""
    common = sorted(method.keys() & baseline.keys())  # a fixed order: the same floats every run
    m_tokens, m_seconds = (sum(method[p][i] for p in common) for i in (0, 1))
    b_tokens, b_seconds = (sum(baseline[p][i] for p in common) for i in (0, 1))
    return speedup(tokens_per_second(m_tokens, m_seconds), tokens_per_second(b_tokens, b_seconds))


def bootstrap_picks(n_items: int, n_boot: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """The draws of a bootstrap over ``n_items`` items (prompts): ``n_boot`` arrays of ``n_items``
    indices drawn with replacement, seeded; none with fewer than 2 items (no interval then)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, n_items) for _ in range(n_boot if n_items >= 2 else 0)]


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite ``values`` of a bootstrap (NaN, NaN when there are none)."""
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
