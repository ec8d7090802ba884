"""Lossless verification at temperature > 0, for trees of deterministic (top-k) children and
for trees of sampled children.

Notation: p = the target's distribution at a node after temperature, top-k and top-p;
q = the draft's. Walking down from the root, at each node:

Deterministic children (picked as the draft's top candidates): each child x_i is a point
mass for the acceptance rule (SpecInfer's multi-candidate rule with one-hot proposals):

    accept x_i with probability p(x_i) / Σ p        (p the current residual)
    on rejection: p(x_i) ← 0, renormalise, try the next child

Sampled children (x_1, x_2, ... drawn from q without replacement, in that order; the tree
keeps some of them): every draw is tried in draw order, kept or not (recursive rejection
sampling without replacement, as in SpecInfer's multi-step rule and Jeon et al. 2024):

    accept x_i with probability min(1, p(x_i) / q_i(x_i))     q_i = q without x_1..x_{i-1}, renormalised
    on rejection: p ← norm(max(p − q_i, 0))

An accepted draw that the tree kept continues the walk; one it dropped ends the step as the
last token (no bonus after it). If no child is accepted, the bonus token is sampled from the
residual p. Each emitted token is then distributed exactly as p, whatever the draft and
whichever draws the policy kept, so the output has the target's distribution.
"""
from __future__ import annotations

import torch

from .tree import DraftTree


def target_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(N, V) logits → (N, V) probabilities: temperature, then top-k, then nucleus (top-p)."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # tokens after the nucleus is full
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _children(tree: DraftTree) -> dict[int, list[int]]:
    """node → its children in breadth-first order (siblings in draft-rank / draw order)."""
    parents, children = tree.parents.tolist(), {}
    for node in range(1, tree.n_nodes):
        children.setdefault(parents[node], []).append(node)
    return children


def _uniform(generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand((), generator=generator, device=generator.device).to(device)


def _try_deterministic(residual: torch.Tensor, children: list[int], tokens: list[int], generator) -> int | None:
    """Point-mass proposals: the accepted child's token, or None (``residual`` is updated in place)."""
    for child in children:
        if _uniform(generator, residual.device) * residual.sum() < residual[tokens[child]]:
            return tokens[child]
        residual[tokens[child]] = 0.0
    return None


def _try_sampled(residual: torch.Tensor, draws: list[int], q: torch.Tensor, generator) -> int | None:
    """Draws from q without replacement: the accepted draw, or None (``residual`` is updated in place)."""
    q = q.clone()
    for token in draws:
        residual /= residual.sum()
        q_i = q / q.sum()
        if _uniform(generator, residual.device) * q_i[token] < residual[token]:
            return token
        leftover = (residual - q_i).clamp(min=0.0)
        if leftover.sum() > 0:  # else p = q_i: rejection had probability 0 (rounding)
            residual.copy_(leftover)
        q[token] = 0.0
    return None


def sample_path(tree: DraftTree, probs: torch.Tensor, generator: torch.Generator) -> tuple[list[int], int]:
    """Walk the tree by recursive rejection; returns (accepted node indices, the token after them)."""
    children, tokens = _children(tree), tree.tokens.tolist()
    draws = tree.draws.tolist() if tree.sampled_children else None
    path, node = [], 0
    while True:
        residual = probs[node].clone()  # (V,)
        kids = children.get(node, [])
        node_draws = [t for t in draws[node] if t >= 0] if draws is not None else []
        if node_draws:
            token = _try_sampled(residual, node_draws, tree.draft_probs[node].to(residual.device), generator)
        else:
            token = _try_deterministic(residual, kids, tokens, generator)
        if token is None:
            bonus = torch.multinomial(residual / residual.sum(), 1, generator=generator)
            return path, int(bonus)
        child = next((c for c in kids if tokens[c] == token), None)
        if child is None:  # an accepted draw the policy did not keep: it ends the step
            return path, token
        path.append(child)
        node = child
