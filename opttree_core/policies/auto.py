"""OPT-Tree auto: OPT-Tree whose node budget n and stop threshold δ come from the hardware.

OPT-Tree (arXiv 2406.17276) maximises E(A) under a fixed n and stops growing when a layer raises
E_sub(T, n) by at most a fixed δ. What matters in the end is tokens per second, so this policy
takes a latency profile of the machine (``Profile``: the target's verify latency t_verify(N) for a
tree of N nodes, root included, and the drafter's latency per layer) and at every step:

    grow OPT-Tree's layers (``OptTreeRule``: the n candidates of largest p̂ join), n = max_nodes;
    J(n) = (E_sub(T, n) + 1) / (t_verify(n + 1) + t_draft)     expected tokens per second,
           t_draft = the modelled time of the draft calls made so far (root + one per layer);
    after each layer, expand the w frontier nodes of largest p̂ whose next layer is expected to
           raise max_n J the most, costing t_layer(w); stop when no width is expected to raise it.
           A child's expected p̂ is its parent's times q̄_r, the mean draft probability of the
           rank-r children in the layer just drafted; so δ and the width come from the hardware;
    verify the top-n* nodes, n* = argmax_n J(n) (n* = 0 verifies the root alone).

(Before this expected-gain rule auto kept drafting while an optimistic bound, a child with q = 1
below every frontier node, could still pay. With a strong draft that bound drafted wide, dear
layers whose nodes were then not verified: on the Qwen2.5-Coder pair auto spent 2.4x the draft
time its verified trees modelled, and ran 12 % slower than OPT-Tree at its best fixed budget,
``benchmarks/results/qwen-pair.md``.)

The profile comes from whoever makes the policy: ``profile=PATH`` in the config, ``use_profile``,
or ``profiling.calibrate`` (``Session.run`` calls it before its first decode), which
measures it once per machine and caches it (``python -m opttree_core profile``). ``generate``
never measures anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checks import check_int
from ..errors import OptTreeError
from ..grow import TreeBuilder, grow
from ..syncs import AUTO_READ, host_read
from ..tree import DraftTree
from .base import GrowthPolicy
from .opt_tree import OptTreeRule

# Powers of two, and one past each multiple of 16 up to 64: the row-count-invariant kernels
# (``invariant.BLOCK``) multiply in blocks of 16 rows, so verifying 17 nodes costs a step more than 16
# (measured on the Qwen2.5-Coder pair: 0.40 s at 16 nodes, 0.68 s at 17), a jump that interpolating
# between 16 and 32 would hide.
DEFAULT_SIZES = (1, 2, 4, 8, 16, 17, 32, 33, 64, 65, 128)
PROFILE_FORMAT = 1


# ----------------------------------------------------------------------------- the hardware profile

def _interp(x: np.ndarray, xs: tuple[int, ...], ys: tuple[float, ...]) -> np.ndarray:
    """Piecewise-linear in the measured points; beyond the last one, the last slope (never < 0)."""
    x = np.asarray(x, dtype=np.float64)
    inside = np.interp(x, xs, ys)
    if len(xs) < 2:
        return inside
    slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
    return np.where(x > xs[-1], ys[-1] + slope * (x - xs[-1]), inside)


@dataclass(frozen=True)
class Profile:
    """Latencies (seconds, the fastest of the repeats) measured on one machine for one target/draft pair.

    sizes: tree sizes N measured (nodes, root included); verify_s[i]: one tree-attention pass of
    the target over sizes[i] nodes at ``key["context_len"]`` cached tokens. draft_root_s: the
    drafter's ``root_probs`` after a commit of 2 tokens. draft_layer_s[i]: one ``expand`` of a
    layer of sizes[i] nodes. Between measured sizes, costs are interpolated linearly.
    """

    key: dict
    sizes: tuple[int, ...]
    verify_s: tuple[float, ...]
    draft_root_s: float
    draft_layer_s: tuple[float, ...]

    def verify_time(self, nodes) -> np.ndarray:
        """t_verify(N) for N nodes (root included); array in, array out."""
        return _interp(nodes, self.sizes, self.verify_s)

    def layer_time(self, width: int) -> float:
        """The drafter's time for one layer of ``width`` nodes."""
        return float(_interp(width, self.sizes, self.draft_layer_s))

    def scaled(self, verify: float, draft: float) -> Profile:
        """This profile with every verify time × ``verify`` and every draft time × ``draft`` (what the
        policy does when observed step times disagree with the measured ones)."""
        key = {**self.key, "rescaled": [verify, draft]}
        return Profile(key, self.sizes, tuple(t * verify for t in self.verify_s), self.draft_root_s * draft,
                       tuple(t * draft for t in self.draft_layer_s))

    def to_json(self) -> dict:
        return {"format": PROFILE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, record: dict) -> Profile:
        """A profile from ``to_json``'s dict; a malformed one is a one-line OptTreeError."""
        try:
            if record.get("format") != PROFILE_FORMAT:
                raise ValueError(f"format {record.get('format')!r}, expected {PROFILE_FORMAT}")
            profile = cls(dict(record["key"]), tuple(int(s) for s in record["sizes"]),
                          tuple(float(t) for t in record["verify_s"]), float(record["draft_root_s"]),
                          tuple(float(t) for t in record["draft_layer_s"]))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise OptTreeError(f"malformed hardware profile: {type(e).__name__}: {e}") from e
        if not (len(profile.sizes) == len(profile.verify_s) == len(profile.draft_layer_s) >= 1):
            raise OptTreeError("malformed hardware profile: sizes, verify_s and draft_layer_s differ in length")
        return profile

    def table(self) -> str:
        """The profile as a text table (milliseconds)."""
        rows = [f"{'nodes':>6} {'verify ms':>10} {'draft layer ms':>15}"]
        rows += [f"{n:>6} {v * 1e3:>10.1f} {d * 1e3:>15.1f}"
                 for n, v, d in zip(self.sizes, self.verify_s, self.draft_layer_s)]
        rows.append(f"draft root: {self.draft_root_s * 1e3:.1f} ms")
        return "\n".join(rows)


def _check_sizes(sizes) -> tuple[int, ...]:
    sizes = tuple(sizes)
    for size in sizes:
        check_int(size, "a profile size")
    if not sizes or list(sizes) != sorted(set(sizes)):
        raise OptTreeError(f"profile sizes must be increasing integers >= 1, got {sizes!r}")
    return sizes


def read_profile(path: str | os.PathLike) -> Profile:
    """A profile JSON file; an unreadable or malformed one is a one-line OptTreeError."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise OptTreeError(f"cannot read the hardware profile {path}: {type(e).__name__}: {e}") from e
    if not isinstance(record, dict):
        raise OptTreeError(f"cannot read the hardware profile {path}: not a JSON object")
    return Profile.from_json(record)



# ----------------------------------------------------------------------------- the policy

@dataclass(frozen=True)
class OptTreeAutoConfig:
    """OPT-Tree auto: OPT-Tree with n and δ chosen per step from measured hardware costs.

    max_nodes: the most drafted nodes per step (the tree is grown with n = max_nodes).
    max_depth: the most layers drafted.
    profile: a profile JSON (``python -m opttree_core profile --out PATH``); None: the policy
    needs ``use_profile`` (``profiling.calibrate`` measures or reads the cached one).
    sizes: the tree sizes a measured profile covers.
    adapt: check the profile against the step times observed while decoding and rescale it when
    they disagree by more than ``DISAGREE`` (a profile measured on a busy machine); off: the
    profile's times are used as they are (reproducible trees, as the golden-tree test needs).
    """

    max_nodes: int = 64
    max_depth: int = 10
    profile: str | None = None
    sizes: tuple[int, ...] = DEFAULT_SIZES
    adapt: bool = True

    @classmethod
    def for_budget(cls, nodes: int) -> OptTreeAutoConfig:
        return cls(max_nodes=nodes)

    def __post_init__(self):
        check_int(self.max_nodes, "max_nodes")
        check_int(self.max_depth, "max depth")
        object.__setattr__(self, "sizes", _check_sizes(self.sizes))
        if self.profile is not None:
            object.__setattr__(self, "profile", os.fspath(self.profile))


@dataclass(frozen=True)
class AutoChoice:
    """What auto chose at one step: n* nodes out of a tree grown ``layers`` deep, with the
    modelled E_sub(T, n*), draft and verify times, and so the expected tokens per second."""

    nodes: int
    layers: int
    expected: float
    draft_s: float
    verify_s: float
    skipped: bool = False  # the step drafted nothing (no draft call): drafting did not pay lately

    @property
    def tokens_per_s(self) -> float:
        return (self.expected + 1.0) / (self.draft_s + self.verify_s)


def best_budget(p_hat_sorted: np.ndarray, verify_s: np.ndarray, draft_s: float) -> tuple[int, float]:
    """(n*, J(n*)): n* = argmax_n (Σ of the n largest p̂ + 1) / (verify_s[n] + draft_s), n = 0..len.

    p_hat_sorted: (m,) descending; verify_s: (≥ m + 1,) t_verify(n + 1) for n = 0, 1, ...
    """
    e_sub = np.concatenate([[0.0], np.cumsum(p_hat_sorted)])  # (m + 1,)
    objective = (e_sub + 1.0) / (verify_s[: e_sub.shape[0]] + draft_s)
    n = int(np.argmax(objective))
    return n, float(objective[n])


def expected_child_q(q: np.ndarray, rank: np.ndarray, parents: int) -> np.ndarray:
    """q̄_r for r = 0.. max rank: the summed draft probability of a layer's rank-r children over the
    ``parents`` it expanded (a rank not drafted below a parent counts 0)."""
    total = np.zeros(int(rank.max()) + 1 if rank.size else 0)
    np.add.at(total, rank, q)
    return total / max(parents, 1)


def best_width(top: np.ndarray, frontier_p: np.ndarray, q_bar: np.ndarray, verify_s: np.ndarray,
               draft_s: float, layer_time, n: int) -> tuple[int, float]:
    """(w*, J): expanding the w* frontier nodes of largest p̂ (``frontier_p``, descending) maximises
    the expected max_n J after the next layer, whose children have expected p̂ = parent p̂ · q̄_r and
    which costs ``layer_time(w)`` more. ``top``: the current top-n p̂, descending. w* = 0: none pays."""
    best, best_j = 0, -np.inf
    for w in range(1, frontier_p.shape[0] + 1):
        children = np.outer(frontier_p[:w], q_bar).ravel()
        values = -np.sort(-np.concatenate([top, children]))[:n]
        _, j = best_budget(values, verify_s, draft_s + layer_time(w))
        if j >= best_j:  # ties: the wider frontier (what OPT-Tree would expand)
            best, best_j = w, j
    return best, best_j


class CostRule(OptTreeRule):
    """OPT-Tree's layers (n = max_nodes) with auto's width, stop and keep: expand the frontier width
    expected to raise max_n J most, stop when none is (``frontier``); keep the top n* nodes
    (``keep``), recorded as ``choice``."""

    host_reads = (AUTO_READ,)

    def __init__(self, n: int, profile: Profile, verify_s: np.ndarray):
        super().__init__(n, threshold=0.0)
        self.profile, self.verify_s = profile, verify_s
        self.draft_s, self.layers = profile.draft_root_s, 1
        self.choice: AutoChoice | None = None

    def pick(self, tree: TreeBuilder) -> tuple[int, float]:
        with host_read(AUTO_READ, tree.device):
            p_hat = tree.p_hat[tree.ranking()[: self.n]].double().cpu().numpy()  # (≤ n,) descending
        return best_budget(p_hat, self.verify_s, self.draft_s)

    def frontier(self, tree: TreeBuilder, layer: torch.Tensor) -> torch.Tensor:
        """The layer's nodes to expand next (empty: stop): one host read of the layer and the top-n."""
        top = tree.ranking()[: self.n]
        in_top = torch.isin(layer, top, assume_unique=True) & tree.open(layer)  # (n_layer,) frontier candidates
        with host_read(AUTO_READ, tree.device):
            top_p = tree.p_hat[top].double().cpu().numpy()  # (≤ n,) descending
            layer_p, q = tree.p_hat[layer].double().cpu().numpy(), tree.q[layer].double().cpu().numpy()
            rank, parents = tree.rank[layer].cpu().numpy(), tree.parents[layer].cpu().numpy()
            candidates = in_top.cpu().numpy()
        q_bar = expected_child_q(q, rank, np.unique(parents).size)
        _, now = best_budget(top_p, self.verify_s, self.draft_s)
        width, expected = best_width(top_p, -np.sort(-layer_p[candidates]), q_bar, self.verify_s, self.draft_s,
                                     self.profile.layer_time, self.n)
        if width == 0 or expected <= now:
            return layer[:0]
        self.draft_s, self.layers = self.draft_s + self.profile.layer_time(width), self.layers + 1
        return tree.best(tree.compact(layer, in_top, int(candidates.sum())), width)

    def keep(self, tree: TreeBuilder) -> torch.Tensor:
        nodes, _ = self.pick(tree)
        top = tree.ranking()[:nodes]
        with host_read(AUTO_READ, tree.device):
            expected = float(tree.p_hat[top].sum())
        self.choice = AutoChoice(nodes, self.layers, expected, self.draft_s, float(self.verify_s[nodes]))
        return top


MAX_SKIP = 16  # the longest run of steps that draft nothing before drafting is tried again
DISAGREE = 1.5  # observed / modelled step time beyond this factor (either way) rescales the profile
WINDOW = 8  # steps the check of the profile looks at


class OptTreeAutoPolicy(GrowthPolicy):
    """OPT-Tree with a hardware-derived budget (see the module docstring). ``last_choice`` and
    ``choices`` (since the last ``reset``) hold the AutoChoice of each step.

    Never slower than AR: when a step's best choice, draft calls included, models fewer tokens per
    second than an AR step (n* = 0, or drafts that cost more than they bring), the next steps draft
    nothing at all — no draft call, the root alone verified exactly as an AR step — for 1, 2, 4, …
    up to ``MAX_SKIP`` steps, after which one step drafts again to look; drafters take the tokens
    committed meanwhile lazily, in one batch, when drafting resumes. With
    ``config.adapt`` the profile is checked against the observed step times (``observe``) and
    rescaled when they disagree (``recalibrations`` counts it)."""

    name, config_class, rule_class = "opt-tree-auto", OptTreeAutoConfig, CostRule
    max_nodes_field = "max_nodes"

    def __init__(self, config: OptTreeAutoConfig | None = None, profile: Profile | None = None):
        self.profile, self._verify_s, self.recalibrations = profile, None, 0
        super().__init__(config)

    @property
    def calibrated(self) -> bool:
        """Whether it has a profile, or a profile file to read."""
        return self.profile is not None or self.config.profile is not None

    def use_profile(self, profile: Profile) -> None:
        self.profile, self._verify_s = profile, None

    def profile_sizes(self) -> tuple[int, ...]:
        """The configured sizes its profile needs: those up to max_nodes + 1 nodes (root included),
        and the next one, so the cost of the largest tree it may verify is interpolated, not guessed."""
        reach = self.config.max_nodes + 1
        above = [s for s in self.config.sizes if s > reach]
        return tuple(s for s in self.config.sizes if s <= reach) + tuple(above[:1])

    def reset(self) -> None:
        self.choices: list[AutoChoice] = []
        self.last_choice: AutoChoice | None = None
        self._skip, self._backoff = 0, 0
        self._ratios: list[tuple[float, float | None]] = []  # (observed / modelled verify, draft or None)

    def _verify_table(self) -> np.ndarray:
        """t_verify(n + 1) for n = 0..max_nodes, (max_nodes + 1,)."""
        if self.profile is None:
            if self.config.profile is None:
                raise OptTreeError("opt-tree-auto has no hardware profile: calibrate it first "
                                   "(opttree_core.profiling.calibrate, as Session.run does) or pass "
                                   "profile=PATH from `python -m opttree_core profile --out PATH`")
            self.use_profile(read_profile(self.config.profile))
        if self._verify_s is None:
            self._verify_s = self.profile.verify_time(np.arange(1, self.config.max_nodes + 2))
        return self._verify_s

    def rule(self) -> CostRule:
        return CostRule(self.config.max_nodes, self.profile, self._verify_table())

    def build(self, drafter, root_token: int, depth_cap: int, device, children=None, stop=None):
        rule = self.rule()
        if self._skip > 0:  # drafting did not pay lately: an AR step, no draft call
            self._skip -= 1
            return self._chose(AutoChoice(0, 0, 0.0, 0.0, float(rule.verify_s[0]), skipped=True),
                               DraftTree.root_only(root_token, device))
        tree = grow(drafter, root_token, rule, min(self.depth, depth_cap), device, children, stop)
        choice = rule.choice or AutoChoice(0, 0, 0.0, 0.0, float(rule.verify_s[0]))
        if choice.layers > 0:  # it drafted: back off when the step, as modelled, was slower than AR's
            pays = choice.tokens_per_s > 1.0 / float(rule.verify_s[0])
            self._backoff = 0 if pays else min(max(1, 2 * self._backoff), MAX_SKIP)
            self._skip = self._backoff
        return self._chose(choice, tree)

    def _chose(self, choice: AutoChoice, tree: DraftTree) -> DraftTree:
        self.last_choice = choice
        self.choices.append(choice)
        return tree

    def observe(self, record) -> None:
        """Check the profile against the step's observed times; after ``WINDOW`` steps whose median
        ratio is off by more than ``DISAGREE``, rescale it (verify and draft times separately)."""
        choice = self.last_choice
        if not self.config.adapt or choice is None or choice.verify_s <= 0:
            return
        draft = record.draft_s / choice.draft_s if choice.draft_s > 0 and not choice.skipped else None
        self._ratios.append((record.verify_s / choice.verify_s, draft))
        if len(self._ratios) < WINDOW:
            return
        verify = float(np.median([v for v, _ in self._ratios]))
        drafts = [d for _, d in self._ratios if d is not None]
        draft = float(np.median(drafts)) if drafts else 1.0
        self._ratios = []
        if max(verify, 1 / verify, draft, 1 / draft) > DISAGREE:
            self.use_profile(self.profile.scaled(verify, draft))
            self.recalibrations += 1
