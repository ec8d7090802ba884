"""Tree-attention verification in three named phases: score the tree, choose the accepted path,
commit it.

    score_tree(state, tree)              one target forward pass over the root and every node
    choose_greedy / choose_sampled       the accepted path and the bonus token (``Choice``)
    TargetState.advance(new, kept)       commit: keep the accepted cache entries, move the root

The target's cache holds every committed token except the last one, the *root*, which is fed
together with the drafted nodes. (The first root excepted: ``prefill_target`` caches the whole prompt
and scores the root with it, as ``model.generate`` does, so the first tree feeds only the nodes below
it.) Each node attends to the cached prefix and its own ancestors, at position prefix_len + depth.
The logits at a node predict the token after that node's path. ``TargetState.advance`` is the one
function that moves the target's state, for tree decoding and for plain autoregressive decoding alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .invariant import verification
from .modelcall import ForwardOut, forward, keep_positions, keep_prefix, model_device
from .sampling import sample_path, target_probs
from .syncs import STEP_READ, host_read, to_device
from .tree import DraftTree


@dataclass
class TargetState:
    """The target's side of a decoding: its cache and the committed sequence length."""

    model: object
    cache: DynamicCache
    committed: int  # tokens in the sequence; the cache holds committed - 1 of them (all while scored_root waits)
    root_token: int  # the last committed token, not yet in the cache (but see ``scored_root``)
    feature_layers: tuple[int, ...] | None = None  # the drafter's features: these layers' inputs (None: last layer)
    # The root's output when the prefill scored it with the prompt: its entry is then cached already,
    # and the first scoring hands this out instead of feeding the root again (``score_tree``).
    scored_root: ForwardOut | None = None

    @property
    def prefix_len(self) -> int:
        return self.committed - 1

    def advance(self, new_tokens: list[int], kept: torch.Tensor | None = None) -> None:
        """Commit ``new_tokens`` (their last becomes the next root). The entries scored since the
        last commit are kept whole (``kept`` None: autoregressive decoding scored the root alone), or
        only at the scored positions ``kept`` (ascending: the root and the accepted path)."""
        if kept is not None:
            keep_positions(self.cache, self.prefix_len, self.prefix_len + kept.to(model_device(self.model)))
        self.committed += len(new_tokens)
        self.root_token = new_tokens[-1]

    def discard_scored(self) -> None:
        """Drop every entry scored since the last commit (a probe pass, as the latency profiler makes)."""
        keep_prefix(self.cache, self.prefix_len)
        self.scored_root = None  # its entry is gone too: the root is fed again


def prefill_target(model, prompt_ids: torch.Tensor,
                   feature_layers: tuple[int, ...] | None = None) -> tuple[TargetState, torch.Tensor]:
    """Cache the whole prompt in one forward, as ``model.generate`` prefills it, so that the prompt's
    cache entries and the first new token's logits are ``generate``'s bit for bit at any prompt
    length (the invariant kernels leave a forward over an empty cache to stock products, whose rows
    depend on how many there are). The last prompt token stays the first tree's
    root, already scored (``TargetState.scored_root``); only its logits are computed, not every
    prompt row's.

    Returns the state and the prefix's features, shape (L - 1, hidden): row j precedes prompt_ids[j + 1].
    ``feature_layers`` (a drafter's ``feature_layers``, EAGLE-3's): the features are the hidden states
    entering those decoder layers, concatenated, (L - 1, k · hidden), here and after every verification.
    """
    cache = DynamicCache(config=model.config)
    out = forward(model, cache, prompt_ids, torch.arange(prompt_ids.numel(), device=prompt_ids.device),
                  layers=feature_layers, last_logits_only=True)
    root = ForwardOut(logits=out.logits, hidden=out.hidden[-1:], layers=None if out.layers is None else out.layers[-1:])
    features = out.hidden[:-1] if feature_layers is None else out.layers[:-1]
    state = TargetState(model, cache, committed=prompt_ids.numel(), root_token=int(prompt_ids[-1]),
                        feature_layers=feature_layers, scored_root=root)
    return state, features


# --- phase 1: score ---------------------------------------------------------------------------

def tree_attention(tree: DraftTree, prefix_len: int) -> torch.Tensor:
    """(N, prefix_len + N) bool: every node sees the prefix and its ancestors (and itself)."""
    prefix = torch.ones(tree.n_nodes, prefix_len, dtype=torch.bool, device=tree.device)
    return torch.cat([prefix, tree.ancestor_mask], dim=1)


def score_tree(state: TargetState, tree: DraftTree) -> ForwardOut:
    """The target's logits (N, V) and features (N, hidden) at every node; the cache grows by N entries
    (N - 1 after a prefill that scored the root: ``scored_root``).
    A tree of the root alone is scored as an autoregressive step (``score_root``): it costs no more.
    A target with the row-count-invariant kernels scores a tree of any size in their blocks
    (``invariant.verification``), so every node's logits equal sequential decoding's."""
    if state.scored_root is not None:
        return _score_below_scored_root(state, tree)
    if tree.n_nodes == 1:
        return score_root(state)
    allowed = tree_attention(tree, state.prefix_len)
    with verification():
        return forward(state.model, state.cache, tree.tokens, tree.position_ids(state.prefix_len), allowed,
                       layers=state.feature_layers)


def _score_below_scored_root(state: TargetState, tree: DraftTree | None) -> ForwardOut:
    """``score_tree`` when the root's entry is cached and its output known: only the nodes below it are
    fed, each seeing the prefix, the root and its own ancestors, as in a whole tree pass (None or a
    root-only tree: ``score_root``, nothing to feed)."""
    root, state.scored_root = state.scored_root, None
    if tree is None or tree.n_nodes == 1:
        return root
    allowed = tree_attention(tree, state.prefix_len)[1:]  # (N - 1, prefix_len + N): the root is cached
    with verification():
        below = forward(state.model, state.cache, tree.tokens[1:], tree.position_ids(state.prefix_len)[1:], allowed,
                        layers=state.feature_layers)
    layers = None if below.layers is None else torch.cat([root.layers, below.layers])
    return ForwardOut(logits=torch.cat([root.logits, below.logits]), hidden=torch.cat([root.hidden, below.hidden]),
                      layers=layers)


def score_root(state: TargetState) -> ForwardOut:
    """The target's logits (1, V) after the root alone: one autoregressive step (plain causal attention)."""
    if state.scored_root is not None:
        return _score_below_scored_root(state, None)
    device = model_device(state.model)
    return forward(state.model, state.cache, torch.full((1,), state.root_token, device=device),
                   torch.full((1,), state.prefix_len, device=device), layers=state.feature_layers)


# --- phase 2: choose --------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """The accepted path of one scored tree."""

    target_tokens: torch.Tensor  # (N,) the target's choice after each node (argmax when greedy)
    accepted: torch.Tensor  # (N,) bool, the root and the accepted path
    path: list[int]  # accepted node indices, root excluded, shallow to deep
    new_tokens: list[int]  # the path's tokens, then the bonus token
    slots: list[int]  # the drafter slots of the path nodes that were fed (a prefix of the path)
    kept: torch.Tensor  # (len(path) + 1,) on the tree's device: the root and the path, ascending


def greedy_accept(tree: DraftTree, target_tokens: torch.Tensor) -> torch.Tensor:
    """(N,) bool: nodes whose every ancestor-or-self token equals the target's argmax below its parent.

    Siblings carry distinct tokens, so the accepted nodes form one path from the root.
    """
    parent_choice = target_tokens[tree.parents.clamp(min=0)]  # (N,)
    correct = (tree.tokens == parent_choice) | (tree.depth == 0)  # (N,)
    return ~(tree.ancestor_mask & ~correct[None, :]).any(dim=1)


def choose_greedy(tree: DraftTree, logits: torch.Tensor) -> Choice:
    """The longest path whose tokens are the target's argmax, plus the target's next token.

    Everything stays on the device but one read (``syncs.STEP_READ``): the path's length, nodes,
    tokens, slots and the bonus token reach the host together, packed into one tensor."""
    target_tokens = logits.argmax(dim=-1).to(tree.device)  # (N,)
    accepted = greedy_accept(tree, target_tokens)
    order = torch.argsort((~accepted).to(torch.uint8), stable=True)  # accepted first, by index = by depth
    packed = torch.stack([order, tree.tokens[order], tree.slots[order], target_tokens[order]])  # (4, N)
    with host_read(STEP_READ, tree.device):  # the step's one host read
        host = torch.cat([accepted.sum()[None], packed.flatten()]).tolist()
    k, n = host[0], tree.n_nodes
    nodes, tokens, slots, targets = (host[1 + i * n: 1 + i * n + k] for i in range(4))
    return Choice(target_tokens, accepted, nodes[1:], tokens[1:] + [targets[-1]], [s for s in slots[1:] if s >= 0],
                  order[:k])


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for verification; ``None`` in place of one means greedy."""

    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator


def choose_sampled(tree: DraftTree, logits: torch.Tensor, sampling: Sampling) -> Choice:
    """Recursive rejection down the tree (lossless: ``sampling.py``)."""
    probs = target_probs(logits, sampling.temperature, sampling.top_k, sampling.top_p)  # (N, V)
    path, bonus = sample_path(tree, probs, sampling.generator)
    target_tokens = probs.argmax(dim=-1).to(tree.device)  # (N,) off the path: the most likely token
    nodes = [0] + path
    tokens, slots = tree.tokens.tolist(), tree.slots.tolist()
    for node, nxt in zip(nodes, path):
        target_tokens[node] = tokens[nxt]
    target_tokens[nodes[-1]] = bonus
    accepted = torch.zeros(tree.n_nodes, dtype=torch.bool, device=tree.device)
    accepted[nodes] = True
    return Choice(target_tokens, accepted, path, [tokens[i] for i in path] + [bonus],
                  [slots[i] for i in path if slots[i] >= 0], to_device(nodes, tree.device))


# --- the three phases together ----------------------------------------------------------------

@dataclass(frozen=True)
class VerifyResult:
    target_tokens: torch.Tensor  # (N,) the target's choice after each node (argmax when greedy)
    accepted: torch.Tensor  # (N,) bool, the root and the accepted path
    path: list[int]  # accepted node indices, root excluded, shallow to deep
    new_tokens: list[int]  # the path's tokens, then the bonus token
    features: torch.Tensor  # (len(path) + 1, hidden) the target's features at the root and the path nodes:
    #                         row i precedes new_tokens[i] (what EAGLE-style drafters consume; the
    #                         state's ``feature_layers`` when it names some, (len(path) + 1, k · hidden))
    slots: list[int]  # the drafter slots of the accepted nodes that were fed (for ``Drafter.commit``)

    @property
    def accept_length(self) -> int:
        """A: tokens this step adds, the bonus included."""
        return len(self.new_tokens)


def verify(state: TargetState, tree: DraftTree, sampling: Sampling | None = None) -> VerifyResult:
    """Score the tree, choose the longest path the target agrees with plus the bonus token (greedy
    argmax matching without ``sampling``, lossless recursive rejection with it), and commit it."""
    scores = score_tree(state, tree)
    choice = choose_greedy(tree, scores.logits) if sampling is None else choose_sampled(tree, scores.logits, sampling)
    state.advance(choice.new_tokens, kept=choice.kept)
    features = scores.hidden if scores.layers is None else scores.layers
    return VerifyResult(choice.target_tokens, choice.accepted, choice.path, choice.new_tokens,
                        features[choice.kept.to(features.device)], choice.slots)
