"""Sequoia (Chen et al., arXiv 2402.12374): the optimal static tree for a measured acceptance vector.

Notation, as in the paper: the acceptance vector p = (p_1, ..., p_k). Once a node is accepted,
p_i is the probability that its draft-rank-i child is the accepted one (rank i - 1 in
``DraftTree.rank``, 0 = top-1). These events are disjoint, so Σ p_i ≤ 1. Under Sequoia's
positional-acceptance assumption a node v is accepted with probability f(v) = Π p_rank along its
path, and a tree's expected number of accepted drafted tokens is F(T) = Σ_v f(v).
``optimal_tree`` is Sequoia's dynamic program for the n-node tree maximising F, in which the
children of a node take ranks 1..c (contiguous). ``SequoiaPolicy`` drafts that tree every step,
through the rank-path rule EAGLE's static tree uses (``rank_paths.py``).

The acceptance vector of a target/draft pair is measured by ``python -m opttree_core sequoia
measure`` (``tools/sequoia_measure.py``); ``python -m opttree_core sequoia tree`` prints a tree.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..checks import check_int
from ..errors import OptTreeError
from ..memory import require
from .base import GrowthPolicy
from .rank_paths import RankPath, RankPathRule

MAX_RANKS = 32
DP_BYTES_PER_CELL = 64  # ``_dp_level``: gap, right, values and ``_combine``'s temporaries, 8 B each
DEFAULT_ACCEPTANCE_FILE = Path(__file__).parents[1] / "weights" / "sequoia" / "eagle-smollm2.json"


# ----------------------------------------------------------------------------- the dynamic program

def _check_acceptance(acceptance) -> tuple[float, ...]:
    """The acceptance vector as a tuple of floats; a bad one is a one-line OptTreeError."""
    try:
        p = tuple(float(x) for x in acceptance)
    except (TypeError, ValueError) as e:
        raise OptTreeError(f"acceptance vector must be a sequence of numbers: {e}") from e
    if not 1 <= len(p) <= MAX_RANKS:
        raise OptTreeError(f"acceptance vector needs 1 to {MAX_RANKS} entries, got {len(p)}")
    if not all(0.0 <= x <= 1.0 for x in p):
        raise OptTreeError(f"acceptance rates must lie in [0, 1], got {p}")
    if sum(p) > 1.0 + 1e-6:
        raise OptTreeError(f"acceptance rates sum to {sum(p):.4f} > 1: p_i must be the probability that the "
                           f"rank-i child is the accepted one (disjoint events), not a conditional rate")
    return p


def _check_size(nodes: int, max_depth: int | None) -> None:
    check_int(nodes, "node budget n")
    if max_depth is not None:
        check_int(max_depth, "max depth (or None)")


def _combine(left: np.ndarray, p_b: float, right: np.ndarray) -> np.ndarray:
    """left + p_b · right where both are finite, else -inf (so 0 · -inf never makes a tree)."""
    feasible = np.isfinite(left) & np.isfinite(right)
    return np.where(feasible, np.where(feasible, left, 0.0) + p_b * np.where(feasible, right, 0.0), -np.inf)


def _dp_level(p: np.ndarray, size: int, below: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One depth level of Sequoia's DP over subtree size and number of children.

    best[m, b]: the largest F of a subtree of m nodes whose root (worth 1) has b children (ranks
    1..b) and which fits this level's depth; -inf when impossible. split[m, b]: the nodes y of
    the root plus its first b - 1 subtrees in that optimum (child b's subtree has m - y):
        best[m, b] = max_y best[y, b - 1] + p_b · below[m - y]
    ``below`` (size + 1,) is max_b best[·, b] of the level one deeper. Column b needs only
    column b - 1, so each column is one (max, +) product over all (y, m) at once.
    """
    k = p.shape[0]
    best = np.full((size + 1, k + 1), -np.inf)  # (size + 1, k + 1)
    split = np.zeros((size + 1, k + 1), dtype=np.int64)
    best[1, 0] = 1.0
    gap = np.arange(size + 1)[None, :] - np.arange(size + 1)[:, None]  # (y, m): m - y
    right = np.where(gap >= 1, below[gap.clip(0, size)], -np.inf)  # (size + 1, size + 1)
    columns = np.arange(size + 1)
    for b in range(1, k + 1):
        values = _combine(best[:, b - 1][:, None], p[b - 1], right)  # (y, m)
        split[:, b] = values.argmax(axis=0)  # (m,) the first best y
        best[:, b] = values[split[:, b], columns]
    return best, split


def _dp_unbounded(p: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``_dp_level`` without a depth limit: the level is its own level below, so rows are filled
    by increasing m (a child's subtree is always smaller than its parent's)."""
    k = p.shape[0]
    best = np.full((size + 1, k + 1), -np.inf)  # (size + 1, k + 1)
    split = np.zeros((size + 1, k + 1), dtype=np.int64)
    best[1, 0] = 1.0
    whole = best.max(axis=1)  # (size + 1,) max_b best[m, b], final for rows < m
    for m in range(2, size + 1):
        for b in range(1, min(k, m - 1) + 1):
            ys = np.arange(b, m)  # (m - b,)
            values = _combine(best[ys, b - 1], p[b - 1], whole[m - ys])
            i = int(np.argmax(values))
            best[m, b], split[m, b] = values[i], ys[i]
        whole[m] = best[m].max()
    return best, split


def _dp_tables(p: tuple[float, ...], size: int, levels: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tables for depth limits of 1..levels levels (root included), or one table without a limit."""
    arr = np.asarray(p, dtype=np.float64)
    if levels is None:
        return [_dp_unbounded(arr, size)]
    root_only = np.full((size + 1, arr.shape[0] + 1), -np.inf)  # one level holds the root alone
    root_only[1, 0] = 1.0
    tables = [(root_only, np.zeros(root_only.shape, dtype=np.int64))]
    for _ in range(2, levels + 1):
        tables.append(_dp_level(arr, size, tables[-1][0].max(axis=1)))
    return tables


def _unwind(tables, size: int, level: int, children: int, prefix: RankPath, out: list[RankPath]) -> None:
    """Append the rank paths below ``prefix`` of the optimum (size, level, children): child b's
    subtree has size - split[size, b] nodes, the rest goes to the root and children 1..b-1."""
    split = tables[level][1]
    child_level = level - 1 if len(tables) > 1 else level  # one table: no depth limit
    below = tables[child_level][0]
    for b in range(children, 0, -1):
        y = int(split[size, b])
        child = prefix + (b - 1,)
        out.append(child)
        _unwind(tables, size - y, child_level, int(np.argmax(below[size - y])), child, out)
        size = y


@lru_cache(maxsize=256)
def _optimal_tree(p: tuple[float, ...], nodes: int, max_depth: int | None) -> tuple[RankPath, ...]:
    unlimited = max_depth is None or max_depth >= nodes
    if not unlimited:  # each depth level builds a few (n + 2)² arrays (``_dp_level``)
        require(DP_BYTES_PER_CELL * (nodes + 2) ** 2, f"Sequoia's tree of {nodes} nodes (its dynamic program)",
                advice=": use a smaller node budget")
    tables = _dp_tables(p, nodes + 1, None if unlimited else max_depth + 1)
    top = tables[-1][0][nodes + 1]  # (k + 1,)
    if not np.isfinite(top).any():
        raise OptTreeError(f"{nodes} nodes do not fit a tree of depth {max_depth} with {len(p)} ranks per node")
    paths: list[RankPath] = []
    _unwind(tables, nodes + 1, len(tables) - 1, int(np.argmax(top)), (), paths)
    return tuple(sorted(paths, key=lambda path: (len(path), path)))


def optimal_tree(acceptance, nodes: int, max_depth: int | None = None) -> list[RankPath]:
    """Sequoia's optimal static tree: the ``nodes`` rank paths (root excluded, breadth-first) that
    maximise F(T) = Σ_v Π p_rank along v's path, children of a node taking ranks 0..c-1 (at most
    k = len(acceptance)), depth at most ``max_depth`` (None: no limit). Memoised; O(n² k · depth)."""
    _check_size(nodes, max_depth)
    return list(_optimal_tree(_check_acceptance(acceptance), nodes, max_depth))


def _uniform_dp(p: tuple[float, ...], width: int, budget: int, levels: int):
    """(best F below a level of ``width`` nodes with ``budget`` nodes and ``levels`` levels left, its
    children per level); F = Σ_d Π_{i≤d} P(c_i) with P(c) = p_1 + … + p_c."""
    best, children = 0.0, ()
    if levels == 0:
        return best, children
    mass = 0.0
    for c in range(1, len(p) + 1):
        mass += p[c - 1]
        if width * c > budget:
            break
        below, rest = _uniform_cached(p, width * c, budget - width * c, levels - 1)
        value = mass * (1.0 + below)
        if value > best + 1e-12:  # ties keep the smaller tree
            best, children = value, (c, *rest)
    return best, children


_uniform_cached = lru_cache(maxsize=None)(_uniform_dp)


def level_uniform_tree(acceptance, nodes: int, max_depth: int | None = None) -> tuple[int, ...]:
    """Sequoia's DP restricted to level-uniform trees (vLLM's ``speculative_token_tree``): children per
    level (c_1, …, c_D), every node of level d − 1 having the ranks 0..c_d − 1, that maximise F(T) with at
    most ``nodes`` nodes and ``max_depth`` levels. Level d then holds every rank combination, so F
    factorises: F = Σ_d Π_{i≤d} P(c_i), P(c) = p_1 + … + p_c, and the DP runs over (width, nodes left,
    levels left) instead of over subtree shapes."""
    _check_size(nodes, max_depth)
    p = _check_acceptance(acceptance)
    _, children = _uniform_cached(p, 1, nodes, nodes if max_depth is None else min(max_depth, nodes))
    return children or (1,)  # nothing pays (p = 0): one node, the least a static tree drafts


def level_uniform_paths(children: tuple[int, ...]) -> list[RankPath]:
    """The rank paths of the level-uniform tree with ``children[d]`` children per node at depth d + 1,
    breadth-first and sorted (vLLM's order: by length, then lexicographically)."""
    paths, level = [], [()]
    for c in children:
        level = [path + (r,) for path in level for r in range(c)]
        paths += level
    return paths


def expected_accepted(acceptance, paths: list[RankPath]) -> float:
    """F(T): the expected accepted drafted tokens of a tree of rank paths (the bonus token excluded)."""
    p = _check_acceptance(acceptance)
    return float(sum(np.prod([p[r] if r < len(p) else 0.0 for r in path]) for path in paths))


# ----------------------------------------------------------------------------- the acceptance vector

def load_acceptance(path: str | os.PathLike) -> tuple[float, ...]:
    """The acceptance vector of a JSON file written by ``save_acceptance`` (key "acceptance")."""
    try:
        record = json.loads(Path(path).read_text())
        vector = record["acceptance"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OptTreeError(f"cannot read an acceptance vector from {path}: {type(e).__name__}: {e}") from e
    return _check_acceptance(vector)


def save_acceptance(path: str | os.PathLike, acceptance, **meta) -> Path:
    """Write ``{"acceptance": [...], **meta}`` as JSON (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"acceptance": list(_check_acceptance(acceptance)), **meta}
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))


# ----------------------------------------------------------------------------- the policy

@dataclass(frozen=True)
class SequoiaConfig:
    """Sequoia's static tree (arXiv 2402.12374).

    nodes: drafted nodes per step (root excluded).
    max_depth: the deepest layer (None: no limit).
    acceptance: the acceptance vector p_1..p_k (see the module docstring); None takes the one
    shipped in ``weights/sequoia/eagle-smollm2.json`` (measured with ``python -m opttree_core
    sequoia measure`` for SmolLM2-135M with the eagle-smollm2 draft).
    """

    nodes: int = 32
    max_depth: int | None = 10
    acceptance: tuple[float, ...] | None = None

    @classmethod
    def for_budget(cls, nodes: int) -> SequoiaConfig:
        return cls(nodes=nodes)

    def __post_init__(self):
        _check_size(self.nodes, self.max_depth)
        acceptance = load_acceptance(DEFAULT_ACCEPTANCE_FILE) if self.acceptance is None else self.acceptance
        object.__setattr__(self, "acceptance", _check_acceptance(acceptance))


class SequoiaPolicy(GrowthPolicy):
    """Drafts Sequoia's optimal tree, computed once from the acceptance vector, through
    ``RankPathRule``: each node expands into exactly the ranks the tree lists (its top-c
    candidates, or its first c draws when children are sampled)."""

    name, config_class, rule_class = "sequoia", SequoiaConfig, RankPathRule

    def __init__(self, config: SequoiaConfig | None = None):
        super().__init__(config)  # the default config reads the shipped vector
        self.paths = optimal_tree(self.config.acceptance, self.config.nodes, self.config.max_depth)

    @property
    def depth(self) -> int:
        return max(len(path) for path in self.paths)

    def rule(self) -> RankPathRule:
        return RankPathRule(self.paths)
