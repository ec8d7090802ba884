"""Tree-attention verification: one target forward pass over the whole tree.

The target's cache holds every committed token except the last one, the *root*,
which is fed together with the drafted nodes. Each node attends to the cached
prefix and its own ancestors, at position prefix_len + depth. The logits at a node
predict the token after that node's path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .modelcall import ForwardOut, forward, keep_positions, model_device
from .sampling import sample_path, target_probs
from .tree import DraftTree


@dataclass
class TargetState:
    """The target's side of a decoding: its cache and the committed sequence length."""

    model: object
    cache: DynamicCache
    committed: int  # tokens in the sequence; the cache holds committed - 1 of them
    root_token: int  # the last committed token, not yet in the cache

    @property
    def prefix_len(self) -> int:
        return self.committed - 1


@dataclass(frozen=True)
class VerifyResult:
    target_tokens: torch.Tensor  # (N,) the target's choice after each node (argmax when greedy)
    accepted: torch.Tensor  # (N,) bool, the root and the accepted path
    path: list[int]  # accepted node indices, root excluded, shallow to deep
    new_tokens: list[int]  # the path's tokens, then the bonus token
    features: torch.Tensor  # (len(path) + 1, hidden) the target's features at the root and the path nodes:
    #                         row i precedes new_tokens[i] (what EAGLE-style drafters consume)

    @property
    def accept_length(self) -> int:
        """A: tokens this step adds, the bonus included."""
        return len(self.new_tokens)


def prefill_target(model, prompt_ids: torch.Tensor) -> tuple[TargetState, torch.Tensor]:
    """Cache every prompt token but the last, which becomes the first tree's root.

    Returns the state and the prefix's features, shape (L - 1, hidden): row j precedes prompt_ids[j + 1].
    """
    cache = DynamicCache(config=model.config)
    prefix = prompt_ids[:-1]
    features = torch.zeros(0, model.config.hidden_size, device=model_device(model))
    if prefix.numel():
        features = forward(model, cache, prefix, torch.arange(prefix.numel(), device=prefix.device)).hidden
    state = TargetState(model, cache, committed=prompt_ids.numel(), root_token=int(prompt_ids[-1]))
    return state, features


def tree_attention(tree: DraftTree, prefix_len: int) -> torch.Tensor:
    """(N, prefix_len + N) bool: every node sees the prefix and its ancestors (and itself)."""
    prefix = torch.ones(tree.n_nodes, prefix_len, dtype=torch.bool, device=tree.device)
    return torch.cat([prefix, tree.ancestor_mask], dim=1)


def score_tree(state: TargetState, tree: DraftTree) -> ForwardOut:
    """The target's logits (N, V) and features (N, hidden) at every node; the cache grows by N entries."""
    allowed = tree_attention(tree, state.prefix_len)
    return forward(state.model, state.cache, tree.tokens, tree.position_ids(state.prefix_len), allowed)


def greedy_accept(tree: DraftTree, target_tokens: torch.Tensor) -> torch.Tensor:
    """(N,) bool: nodes whose every ancestor-or-self token equals the target's argmax below its parent.

    Siblings carry distinct tokens, so the accepted nodes form one path from the root.
    """
    parent_choice = target_tokens[tree.parents.clamp(min=0)]  # (N,)
    correct = (tree.tokens == parent_choice) | (tree.depth == 0)  # (N,)
    return ~(tree.ancestor_mask & ~correct[None, :]).any(dim=1)


def commit_path(state: TargetState, accepted: torch.Tensor, n_new: int) -> None:
    """Keep the cache entries of the prefix, the root and the accepted path; advance the state."""
    device = model_device(state.model)
    nodes = accepted.nonzero().squeeze(1).to(device)  # (1 + len(path),) breadth-first = by depth
    keep_positions(state.cache, state.prefix_len, state.prefix_len + nodes)
    state.committed += n_new


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for verification; ``None`` in place of one means greedy."""

    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator


def _sampled_choice(tree: DraftTree, logits: torch.Tensor, sampling: Sampling):
    """Recursive rejection down the tree: (target_tokens, accepted mask, path nodes with the root)."""
    probs = target_probs(logits, sampling.temperature, sampling.top_k, sampling.top_p)  # (N, V)
    path, bonus = sample_path(tree, probs, sampling.generator)
    target_tokens = probs.argmax(dim=-1).to(tree.device)  # (N,) off the path: the most likely token
    nodes = [0] + path
    for node, nxt in zip(nodes, path):
        target_tokens[node] = tree.tokens[nxt]
    target_tokens[nodes[-1]] = bonus
    accepted = torch.zeros(tree.n_nodes, dtype=torch.bool, device=tree.device)
    accepted[nodes] = True
    return target_tokens, accepted, nodes


def verify(state: TargetState, tree: DraftTree, sampling: Sampling | None = None) -> VerifyResult:
    """Accept the longest path the target agrees with, plus the bonus token: greedy (argmax
    matching) without ``sampling``, recursive rejection sampling (lossless) with it."""
    out = score_tree(state, tree)
    if sampling is None:
        target_tokens = out.logits.argmax(dim=-1).to(tree.device)  # (N,)
        accepted = greedy_accept(tree, target_tokens)
        path_nodes = accepted.nonzero().squeeze(1).tolist()  # the one host sync of a step
    else:
        target_tokens, accepted, path_nodes = _sampled_choice(tree, out.logits, sampling)
    tokens = tree.tokens.tolist()
    new_tokens = [tokens[i] for i in path_nodes[1:]] + [int(target_tokens[path_nodes[-1]])]
    features = out.hidden[path_nodes]  # (1 + len(path), hidden)
    commit_path(state, accepted, len(new_tokens))
    state.root_token = new_tokens[-1]
    return VerifyResult(target_tokens, accepted, path_nodes[1:], new_tokens, features)
