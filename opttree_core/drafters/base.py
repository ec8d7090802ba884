"""The drafter protocol (in the spirit of HF's ``CandidateGenerator``): drafters propose
distributions for tree nodes; policies decide which nodes to keep. Per decoding step:

    start(prompt_ids, features)  once, before the first step; features (L - 1, hidden) are the
                                 target's last-layer features, row j preceding prompt_ids[j + 1]
    root_probs()   -> (V,)       q at the root: the distribution of the first drafted token;
                                 it begins a new tree (slots restart at 0)
    expand(layer)  -> (m, V)     q below each node of a ``TreeLayer`` (one forward per layer);
                                 the layer's nodes become the drafter's next slots
    commit(tokens, features, accepted_slots)
                                 these tokens were appended to the sequence (accepted path +
                                 bonus); features (len(tokens), hidden), row i preceding
                                 tokens[i]; accepted_slots: the slots of the accepted path's
                                 nodes that were fed this step, shallow to deep (a prefix of
                                 the path), so a drafter can keep what it computed for them

The verification loop never knows which drafter it has, and drafters never see the tree's
builder: everything they need about a layer is in the frozen ``TreeLayer``.

A drafter whose features are not the target's last layer (EAGLE-3's: the hidden states entering
three decoder layers) says so with an optional ``feature_layers`` attribute, a tuple of HF
``hidden_states`` indices; the target then returns those, concatenated, as the ``features`` of
``start`` and ``commit`` (``verify.prefill_target``). Without it nothing changes.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..tree import TreeLayer


@runtime_checkable
class Drafter(Protocol):
    name: str
    vocab_size: int

    def start(self, prompt_ids: torch.Tensor, features: torch.Tensor) -> None: ...

    def root_probs(self) -> torch.Tensor: ...

    def expand(self, layer: TreeLayer) -> torch.Tensor: ...

    def commit(self, tokens: list[int], features: torch.Tensor, accepted_slots: list[int]) -> None: ...


def feature_layers(drafter) -> tuple[int, ...] | None:
    """The target layers whose inputs ``drafter`` takes as its features; None: the last layer's output."""
    layers = getattr(drafter, "feature_layers", None)
    return None if layers is None else tuple(layers)
