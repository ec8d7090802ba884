"""Latency profiles for OPT-Tree auto: measure, cache and hand them to the policy (the command
``python -m opttree_core profile`` is ``tools/profile.py``).

A profile (``policies.auto.Profile``) holds the target's verify latency for each tree size and
the drafter's root and per-layer latency on one machine. ``calibrate(policy, target_model,
drafter)`` gives a hardware-aware policy its profile: the config's file if it names one, else
the cached profile for this machine and pair, measured (a few seconds) when absent.
``session.Session`` calls it before its first decode; ``generate`` never does.

Profiles are cached as JSON under ``$OPTTREE_CACHE`` (default ``~/.cache/opttree_lab``)/profiles,
keyed by device name, the target's config signature, dtype, kernels, torch version, CPU threads
and the drafter.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from .atomic import write_atomic
from .draft_vocab import draft_vocab_size
from .drafters.base import feature_layers
from .errors import OptTreeError
from .grow import TreeBuilder
from .modelcall import model_device, timed_call
from .models import cache_root
from .policies.auto import DEFAULT_SIZES, Profile, _check_sizes, read_profile
from .policies.base import HardwareAware
from .shipped import target_signature
from .invariant import invariant_kernels
from .machine import describe_machine
from .skinny import uses_skinny_matmul
from .tree import DraftTree
from .verify import TargetState, prefill_target, score_tree
from .weight_only import weight_products


def profile_key(target_model, drafter, sizes, repeats: int, context_len: int) -> dict:
    """What a profile depends on: machine, target (config signature, dtype, kernels), torch, drafter, probe."""
    device = model_device(target_model)
    return {"device": describe_machine(device), "device_type": device.type, "threads": torch.get_num_threads(),
            "target": target_signature(target_model.config), "dtype": str(target_model.dtype).removeprefix("torch."),
            "skinny_matmul": uses_skinny_matmul(target_model), "invariant": invariant_kernels(target_model),
            "torch": torch.__version__,
            "drafter": f"{type(drafter).__name__}:{drafter.name}", "draft_vocab": draft_vocab_size(drafter),
            "draft_weights": _draft_weights(drafter),
            "sizes": list(sizes), "repeats": repeats, "context_len": context_len}


def _draft_weights(drafter) -> str | None:
    """How a draft model's weight-only layers multiply (``weight_only.weight_products``); None for other drafters."""
    model = getattr(drafter, "model", None)
    return weight_products(model) if isinstance(model, torch.nn.Module) else None


def _probe_tree(size: int, device, generator: torch.Generator, vocab: int) -> DraftTree:
    """A bushy tree of ``size`` nodes (node i's parent is (i - 1) // 2): the cost of a tree pass
    depends on its size, and a little on its depth (the invariant attention makes one call per
    depth: 16 nodes on the 2-core Xeon, 201 ms in this tree's 5 depths, 204 in 5 depths shaped as
    opt-tree-auto draws them, 208 in a chain of 16)."""
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
            state.discard_scored()
            times.append(seconds)
        fastest.append(min(times[1:]))
    return fastest


def _time_draft(drafter, sizes, repeats: int, gen: torch.Generator, vocab: int, hidden: int,
                device, watch: _Stopwatch) -> tuple[float, list[float]]:
    """Fastest drafter times: ``root_probs`` after a 2-token commit, and one ``expand`` of a
    layer of each size under the root, in the drafter's normal cycle (root, layer, commit)."""
    root_times, layer_fastest = [], []
    drafter.root_probs()  # feeds the prefix
    for size in sizes:
        times = []
        for _ in range(repeats + 1):
            drafter.commit(torch.randint(0, vocab, (2,), generator=gen).tolist(), torch.zeros(2, hidden, device=device),
                           [])
            root_s, _ = watch(drafter.root_probs)
            builder = TreeBuilder(0, max_depth=1, device=device, capacity=1 + size)
            layer = builder.add_layer(torch.zeros(size, dtype=torch.long, device=device),
                                      torch.randint(0, vocab, (size,), generator=gen).to(device),
                                      torch.ones(size, device=device), torch.arange(size, device=device))
            layer_s, _ = watch(drafter.expand, builder.feed(layer))
            root_times.append(root_s)
            times.append(layer_s)
        layer_fastest.append(min(times[1:]))
    return min(root_times[1:]), layer_fastest


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
def profile_hardware(target_model, drafter, sizes=DEFAULT_SIZES, repeats: int = 5,
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
    state, features = prefill_target(target_model, prompt, feature_layers(drafter))
    verify_s = _time_verify(state, sizes, repeats, gen, vocab, watch)
    drafter.start(prompt, features)
    root_s, layer_s = _time_draft(drafter, sizes, repeats, gen, vocab, features.shape[1], device, watch)
    return Profile(profile_key(target_model, drafter, sizes, repeats, context_len), sizes, tuple(verify_s),
                   root_s, tuple(layer_s))


@torch.inference_mode()
def verify_latencies(target_model, sizes=DEFAULT_SIZES, repeats: int = 5, context_len: int = 256,
                     seed: int = 0) -> tuple[list[float], int]:
    """The fastest time of one tree pass of the target over each tree size (nodes, root included)
    after ``context_len`` cached random tokens (capped to fit the model's positions), as
    ``profile_hardware`` measures ``verify_s``, without a drafter. Returns (seconds, context_len)."""
    sizes = _check_sizes(sizes)
    if not (isinstance(repeats, int) and repeats >= 1):
        raise OptTreeError(f"repeats must be an integer >= 1, got {repeats!r}")
    context_len = _probe_context(target_model, sizes, repeats, context_len)
    device, vocab = model_device(target_model), target_model.get_output_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    state, _ = prefill_target(target_model, torch.randint(0, vocab, (context_len,), generator=gen).to(device))
    return _time_verify(state, sizes, repeats, gen, vocab, _Stopwatch(device)), context_len


def profile_path(key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the profile for ``key`` is cached: <cache>/profiles/<drafter>-<hash of the key>.json."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["drafter"].split(":", 1)[-1])
    return root / "profiles" / f"{slug}-{digest}.json"


def write_profile(profile: Profile, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(profile.to_json(), indent=2)))


def cached_profile(target_model, drafter, sizes=DEFAULT_SIZES, repeats: int = 5, context_len: int = 256,
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


def calibrate(policy, target_model, drafter):
    """Give ``policy`` its latency profile if it needs one and has none (the config's file, else
    the cache, measured when absent); returns the policy. Other policies pass through."""
    if not isinstance(policy, HardwareAware) or policy.calibrated:
        return policy
    policy.use_profile(cached_profile(target_model, drafter, policy.profile_sizes())[0])
    return policy
