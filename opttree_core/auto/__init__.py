"""OPT-Tree auto: OPT-Tree whose node budget n and stop threshold δ come from the hardware.

OPT-Tree (arXiv 2406.17276) maximises E(A) under a fixed n and stops growing when a layer raises
E_sub(T, n) by at most a fixed δ. What matters in the end is tokens per second, so this policy
measures, once per machine, the target's verify latency t_verify(N) for a tree of N nodes (root
included) and the drafter's latency per layer, then at every step:

    grow the OPT-Tree exactly as ``OptTreePolicy`` does (``policies.grow_opt_tree``), n = max_nodes;
    J(n) = (E_sub(T, n) + 1) / (t_verify(n + 1) + t_draft)     expected tokens per second,
           t_draft = the modelled time of the draft calls made so far (root + one per layer);
    keep drafting while the next layer could still raise max_n J: an upper bound on the next
           layer gives every frontier node one child with q = 1 (a child's p̂ never exceeds its
           parent's), at the cost of one more draft layer; so δ is derived from the hardware;
    verify the top-n* nodes, n* = argmax_n J(n) (n* = 0 verifies the root alone).

The profile is cached as JSON under ``$OPTTREE_CACHE`` (default ``~/.cache/opttree_lab``)/profiles,
keyed by device name, the target's config signature, dtype, torch version, CPU threads and the
drafter; ``python -m opttree_core.auto profile --target ... --draft ...`` measures and prints it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomic
from ..draft_vocab import draft_vocab_size
from ..drafters import Drafter
from ..errors import OptTreeError
from ..modelcall import keep_prefix, model_device, timed_call
from ..models import _cache_root
from ..policies import StatelessPolicy, grow_opt_tree
from ..shipped import target_signature
from ..skinny import uses_skinny_matmul
from ..tree import ChildSampling, DraftTree, TreeBuilder
from ..verify import TargetState, prefill_target, score_tree

DEFAULT_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
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


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU model on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def profile_key(target_model, drafter: Drafter, sizes, repeats: int, context_len: int) -> dict:
    """What a profile depends on: machine, target (config signature, dtype, kernels), torch, drafter, probe."""
    device = model_device(target_model)
    return {"device": device_name(device), "device_type": device.type, "threads": torch.get_num_threads(),
            "target": target_signature(target_model.config), "dtype": str(target_model.dtype).removeprefix("torch."),
            "skinny_matmul": uses_skinny_matmul(target_model), "torch": torch.__version__,
            "drafter": f"{type(drafter).__name__}:{drafter.name}", "draft_vocab": draft_vocab_size(drafter),
            "sizes": list(sizes), "repeats": repeats, "context_len": context_len}


def _probe_tree(size: int, device, generator: torch.Generator, vocab: int) -> DraftTree:
    """A bushy tree of ``size`` nodes (node i's parent is (i - 1) // 2): the cost of a tree pass
    depends on its size, the mask being dense either way."""
    parents = torch.tensor([-1] + [(i - 1) // 2 for i in range(1, size)], dtype=torch.long)  # (size,)
    depth = torch.zeros(size, dtype=torch.long)
    for i in range(1, size):
        depth[i] = depth[parents[i]] + 1
    tokens = torch.randint(0, vocab, (size,), generator=generator)
    ones = torch.ones(size)
    rank = torch.tensor([0] + [(i - 1) % 2 for i in range(1, size)], dtype=torch.long)
    return DraftTree(tokens.to(device), parents.to(device), depth.to(device), ones.to(device), ones.to(device),
                     rank.to(device))


class _Stopwatch:
    def __init__(self, device: torch.device):
        self.sync = device.type == "cuda"

    def __call__(self, call, *args):
        """(seconds, result) of one call, synchronising the device around it."""
        return timed_call(self.sync, call, *args)


def _time_verify(state: TargetState, sizes, repeats: int, gen: torch.Generator, vocab: int,
                 watch: _Stopwatch) -> list[float]:
    """Fastest time of a tree pass of each size (other processes only ever add time); the cache
    is cut back after every pass."""
    fastest = []
    for size in sizes:
        tree = _probe_tree(size, model_device(state.model), gen, vocab)
        times = []
        for _ in range(repeats + 1):  # the first pass warms up
            seconds, _ = watch(score_tree, state, tree)
            keep_prefix(state.cache, state.prefix_len)
            times.append(seconds)
        fastest.append(min(times[1:]))
    return fastest


def _time_draft(drafter: Drafter, sizes, repeats: int, gen: torch.Generator, vocab: int, hidden: int,
                device, watch: _Stopwatch) -> tuple[float, list[float]]:
    """Fastest drafter times: ``root_probs`` after a 2-token commit, and one ``expand`` of a
    layer of each size under the root, in the drafter's normal cycle (root, layer, commit)."""
    root_times, layer_fastest = [], []
    drafter.root_probs()  # feeds the prefix
    for size in sizes:
        times = []
        for _ in range(repeats + 1):
            drafter.commit(torch.randint(0, vocab, (2,), generator=gen).tolist(), torch.zeros(2, hidden, device=device))
            root_s, _ = watch(drafter.root_probs)
            builder = TreeBuilder(0, capacity=1 + size, max_depth=1, device=device)
            layer = builder.add_layer(torch.zeros(size, dtype=torch.long, device=device),
                                      torch.randint(0, vocab, (size,), generator=gen).to(device),
                                      torch.ones(size, device=device), torch.arange(size, device=device))
            layer_s, _ = watch(drafter.expand, builder, layer)
            root_times.append(root_s)
            times.append(layer_s)
        layer_fastest.append(min(times[1:]))
    return min(root_times[1:]), layer_fastest


def _check_sizes(sizes) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
        raise OptTreeError(f"profile sizes must be increasing integers >= 1, got {sizes!r}")
    return sizes


def _probe_context(target_model, sizes: tuple[int, ...], repeats: int, context_len: int) -> int:
    """``context_len`` capped so that it, the probe trees and the drafter's commits fit the model's positions."""
    limit = getattr(target_model.config, "max_position_embeddings", None)
    if limit is not None:
        context_len = min(context_len, limit - sizes[-1] - 2 * len(sizes) * (repeats + 1) - 1)
    if context_len < 2:
        raise OptTreeError(f"the model's {limit} positions leave no room for a probe context with trees of "
                           f"{sizes[-1]} nodes")
    return context_len


@torch.inference_mode()
def profile_hardware(target_model, drafter: Drafter, sizes=DEFAULT_SIZES, repeats: int = 5,
                     context_len: int = 256, seed: int = 0) -> Profile:
    """Measure t_verify for each tree size and the drafter's root and per-layer latency.

    The probe context is ``context_len`` random tokens (capped so that the context, the probe
    trees and the commits fit the model's position range). Leaves the drafter started on that
    context: call ``drafter.start`` before decoding with it.
    """
    sizes = _check_sizes(sizes)
    if not (isinstance(repeats, int) and repeats >= 1):
        raise OptTreeError(f"repeats must be an integer >= 1, got {repeats!r}")
    context_len = _probe_context(target_model, sizes, repeats, context_len)
    device, vocab = model_device(target_model), target_model.get_output_embeddings().weight.shape[0]
    gen, watch = torch.Generator().manual_seed(seed), _Stopwatch(device)
    prompt = torch.randint(0, vocab, (context_len,), generator=gen).to(device)
    state, features = prefill_target(target_model, prompt)
    verify_s = _time_verify(state, sizes, repeats, gen, vocab, watch)
    drafter.start(prompt, features)
    root_s, layer_s = _time_draft(drafter, sizes, repeats, gen, vocab, features.shape[1], device, watch)
    return Profile(profile_key(target_model, drafter, sizes, repeats, context_len), sizes, tuple(verify_s),
                   root_s, tuple(layer_s))


def profile_path(key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the profile for ``key`` is cached: <cache>/profiles/<drafter>-<hash of the key>.json."""
    root = Path(cache_dir) if cache_dir is not None else _cache_root()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["drafter"].split(":")[-1])
    return root / "profiles" / f"{slug}-{digest}.json"


def read_profile(path: str | os.PathLike) -> Profile:
    """A profile JSON file; an unreadable or malformed one is a one-line OptTreeError."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise OptTreeError(f"cannot read the hardware profile {path}: {type(e).__name__}: {e}") from e
    if not isinstance(record, dict):
        raise OptTreeError(f"cannot read the hardware profile {path}: not a JSON object")
    return Profile.from_json(record)


def write_profile(profile: Profile, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(profile.to_json(), indent=2)))


def cached_profile(target_model, drafter: Drafter, sizes=DEFAULT_SIZES, repeats: int = 5, context_len: int = 256,
                   cache_dir: str | os.PathLike | None = None, fresh: bool = False) -> tuple[Profile, Path]:
    """The cached profile for this machine and pair, measured (and cached) when absent, ``fresh``
    or unusable (an unreadable cache file is reported in one line on stderr, then rebuilt)."""
    sizes = _check_sizes(sizes)
    context_len = _probe_context(target_model, sizes, repeats, context_len)  # the key records the real one
    path = profile_path(profile_key(target_model, drafter, sizes, repeats, context_len), cache_dir)
    if path.exists() and not fresh:
        try:
            return read_profile(path), path
        except OptTreeError as e:
            print(f"opttree: {e}; measuring it again", file=sys.stderr)
    profile = profile_hardware(target_model, drafter, sizes, repeats, context_len)
    return profile, write_profile(profile, path)


# ----------------------------------------------------------------------------- the policy

@dataclass(frozen=True)
class OptTreeAutoConfig:
    """OPT-Tree auto: OPT-Tree with n and δ chosen per step from measured hardware costs.

    max_nodes: the most drafted nodes per step (the tree is grown with n = max_nodes).
    max_depth: the most layers drafted.
    profile: a profile JSON (``python -m opttree_core.auto profile --out PATH``); None: measure
    it on first use, through ``calibrate`` (``generate`` calls it), and cache it.
    sizes: the tree sizes a measured profile covers.
    """

    max_nodes: int = 64
    max_depth: int = 10
    profile: str | None = None
    sizes: tuple[int, ...] = DEFAULT_SIZES

    @classmethod
    def for_budget(cls, nodes: int) -> OptTreeAutoConfig:
        return cls(max_nodes=nodes)

    def __post_init__(self):
        if not (isinstance(self.max_nodes, int) and self.max_nodes >= 1):
            raise OptTreeError(f"max_nodes must be an integer >= 1, got {self.max_nodes!r}")
        if not (isinstance(self.max_depth, int) and self.max_depth >= 1):
            raise OptTreeError(f"max depth must be an integer >= 1, got {self.max_depth!r}")
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


class _CostStop:
    """Auto's stop rule for ``grow_opt_tree``: keep drafting while the next layer could raise max_n J."""

    def __init__(self, profile: Profile, verify_s: np.ndarray, n: int):
        self.profile, self.verify_s, self.n = profile, verify_s, n
        self.draft_s, self.layers = profile.draft_root_s, 1

    def choice(self, builder: TreeBuilder) -> tuple[int, float]:
        p_hat = builder.p_hat[builder.ranking()[: self.n]].double().cpu().numpy()  # (≤ n,) descending
        return best_budget(p_hat, self.verify_s, self.draft_s)

    def __call__(self, builder: TreeBuilder, frontier: torch.Tensor) -> bool:
        if frontier.numel() == 0:
            return False
        _, now = self.choice(builder)
        p_hat = builder.p_hat[: builder.size][1:]  # every drafted node
        ceiling = torch.cat([p_hat, builder.p_hat[frontier]]).double().cpu().numpy()  # + one q = 1 child each
        ceiling = -np.sort(-ceiling)[: self.n]
        next_s = self.draft_s + self.profile.layer_time(frontier.numel())
        _, bound = best_budget(ceiling, self.verify_s, next_s)
        if bound <= now:
            return False
        self.draft_s, self.layers = next_s, self.layers + 1
        return True


class OptTreeAutoPolicy(StatelessPolicy):
    """OPT-Tree with a hardware-derived budget (see the module docstring). ``last_choice`` and
    ``choices`` (since the last ``reset``) hold the AutoChoice of each step."""

    def __init__(self, config: OptTreeAutoConfig = OptTreeAutoConfig(), profile: Profile | None = None):
        self.config, self.name = config, "opt-tree-auto"
        self.profile = profile
        self.last_choice: AutoChoice | None = None
        self.choices: list[AutoChoice] = []
        self._verify_s: np.ndarray | None = None

    @property
    def max_nodes(self) -> int:
        return self.config.max_nodes

    def calibrate(self, target_model, drafter: Drafter) -> None:
        """Get the hardware profile once: the config's file, else the cache (measured when absent)."""
        if self.profile is not None:
            return
        if self.config.profile is not None:
            self.use_profile(read_profile(self.config.profile))
        else:
            self.use_profile(cached_profile(target_model, drafter, self.config.sizes)[0])

    def use_profile(self, profile: Profile) -> None:
        self.profile, self._verify_s = profile, None

    def reset(self) -> None:
        self.choices, self.last_choice = [], None

    def _verify_table(self) -> np.ndarray:
        """t_verify(n + 1) for n = 0..max_nodes, (max_nodes + 1,)."""
        if self.profile is None:
            if self.config.profile is None:
                raise OptTreeError("opt-tree-auto has no hardware profile: decode through generate (which "
                                   "measures one) or pass profile=PATH from `python -m opttree_core.auto profile`")
            self.use_profile(read_profile(self.config.profile))
        if self._verify_s is None:
            self._verify_s = self.profile.verify_time(np.arange(1, self.config.max_nodes + 2))
        return self._verify_s

    def build(self, drafter: Drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        verify_s = self._verify_table()
        n, max_depth = self.config.max_nodes, min(self.config.max_depth, depth_cap)
        builder = TreeBuilder(root_token, capacity=1 + n * max(max_depth, 1), max_depth=max(max_depth, 0),
                              device=device, children=children)
        if max_depth < 1:
            self._record(AutoChoice(0, 0, 0.0, 0.0, float(verify_s[0])))
            return builder.whole_tree()
        stop = _CostStop(self.profile, verify_s, n)
        grow_opt_tree(drafter, builder, n, max_depth, stop)
        nodes, _ = stop.choice(builder)
        top = builder.ranking()[:nodes]
        self._record(AutoChoice(nodes, stop.layers, float(builder.p_hat[top].sum()), stop.draft_s,
                                float(verify_s[nodes])))
        return builder.subtree(top)

    def _record(self, choice: AutoChoice) -> None:
        self.last_choice = choice
        self.choices.append(choice)
