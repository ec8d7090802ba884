"""Drafters propose distributions for tree nodes; policies decide which nodes to keep.

The protocol (in the spirit of HF's ``CandidateGenerator``), per decoding step:

    start(prompt_ids, features)  once, before the first step; features (L - 1, hidden) are the
                                 target's last-layer features, row j preceding prompt_ids[j + 1]
    root_probs()   -> (V,)       q at the root: the distribution of the first drafted token
    expand(builder, nodes) -> (len(nodes), V)
                                 q below each given node of the tree being built
    commit(tokens, features)     these tokens were appended to the sequence (accepted
                                 path + bonus); features (len(tokens), hidden), row i
                                 preceding tokens[i]; the drafter brings its state up to date

The verification loop never knows which drafter it has.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from transformers import DynamicCache

from .draft_vocab import DraftVocab, VocabHead
from .modelcall import keep_positions, model_device, run_decoder
from .tree import TreeBuilder


@runtime_checkable
class Drafter(Protocol):
    name: str
    vocab_size: int

    def start(self, prompt_ids: torch.Tensor, features: torch.Tensor) -> None: ...

    def root_probs(self) -> torch.Tensor: ...

    def expand(self, builder: TreeBuilder, nodes: torch.Tensor) -> torch.Tensor: ...

    def commit(self, tokens: list[int], features: torch.Tensor) -> None: ...


def tree_layer_inputs(builder: TreeBuilder, nodes: torch.Tensor, fed: list[int],
                      committed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention and positions for feeding one tree layer to a drafter whose cache holds
    ``[committed entries | fed tree nodes, in order]``; the root is the last committed entry.

    Returns allowed (n_nodes, committed + n_fed + n_nodes) bool, built afresh from the
    ancestor paths (never reused across layers), and positions (n_nodes,) by depth.
    """
    device = builder.device
    allowed = torch.cat([
        torch.ones(len(nodes), committed, dtype=torch.bool, device=device),
        builder.ancestor_mask(nodes, torch.tensor(fed, dtype=torch.long, device=device)),  # (n_nodes, n_fed)
        torch.eye(len(nodes), dtype=torch.bool, device=device),
    ], dim=1)
    return allowed, builder.depth[nodes] + (committed - 1)


class DraftLMDrafter:
    """An independent causal LM on the target's tokenizer (the paper's classic mode).

    It drafts one whole tree layer per forward pass with a tree mask over its own KV
    cache. Cache layout: ``[committed tokens | tree nodes fed this step]``; the root
    (the last committed token) is the last committed entry. After verification the
    cache keeps the committed part plus the fed nodes on the accepted path.
    """

    def __init__(self, model, name: str = "draft", temperature: float = 1.0, vocab: DraftVocab | None = None):
        self.model, self.name, self.temperature = model, name, temperature
        self.out = VocabHead(model.get_output_embeddings(), vocab)
        self.vocab_size = self.out.vocab_size
        self.device = model_device(model)

    def start(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        self.cache = DynamicCache(config=self.model.config)
        self.committed = 0  # cache entries that hold committed tokens
        self.pending: list[int] = prompt_ids.tolist()  # committed tokens not yet in the cache
        self.fed: list[int] = []  # builder indices of tree nodes in the cache, in cache order
        self.builder: TreeBuilder | None = None

    @torch.inference_mode()
    def root_probs(self) -> torch.Tensor:
        tokens = torch.tensor(self.pending, dtype=torch.long, device=self.device)  # (n_pending,)
        positions = torch.arange(self.committed, self.committed + len(self.pending), device=self.device)
        hidden = run_decoder(self.model.get_decoder(), self.cache, positions, None, tokens=tokens)
        self.committed += len(self.pending)
        self.pending, self.fed, self.builder = [], [], None
        return self.out.probs(hidden[-1], self.temperature)  # (V,)

    @torch.inference_mode()
    def expand(self, builder: TreeBuilder, nodes: torch.Tensor) -> torch.Tensor:
        if self.builder is not builder:
            self.builder, self.fed = builder, []
        allowed, positions = tree_layer_inputs(builder, nodes, self.fed, self.committed)
        hidden = run_decoder(self.model.get_decoder(), self.cache, positions, allowed, tokens=builder.tokens[nodes])
        self.fed.extend(nodes.tolist())
        return self.out.probs(hidden, self.temperature)  # (n_nodes, V)

    def commit(self, tokens: list[int], features: torch.Tensor | None = None) -> None:
        matched = self._fed_prefix(tokens[:-1])  # the last token stays pending: its logits are the next root's
        tail = [self.committed + self.fed.index(n) for n in matched]
        keep_positions(self.cache, self.committed, torch.tensor(tail, dtype=torch.long, device=self.device))
        self.committed += len(matched)
        self.pending += tokens[len(matched):]
        self.fed, self.builder = [], None

    def _fed_prefix(self, tokens: list[int]) -> list[int]:
        """Builder indices of the fed nodes that spell the longest prefix of ``tokens``."""
        if not self.fed or self.pending:
            return []
        fed_tokens = self.builder.tokens[self.fed].tolist()
        fed_parents = self.builder.parents[self.fed].tolist()
        child_of = {(p, t): n for n, p, t in zip(self.fed, fed_parents, fed_tokens)}
        matched, parent = [], 0
        for token in tokens:
            node = child_of.get((parent, token))
            if node is None:
                break
            matched.append(node)
            parent = node
        return matched


def self_drafter(target_model) -> DraftLMDrafter:
    """The target drafting for itself: the oracle under which every greedy draft is accepted."""
    return DraftLMDrafter(target_model, name="self")
