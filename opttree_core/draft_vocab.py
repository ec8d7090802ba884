"""A drafter's output vocabulary: the K tokens the target emits most often (as in EAGLE-3).

A drafter reads tokens through an LM head over the whole vocabulary; for SmolLM2-135M
that is a 49152 × 576 matrix (113 MB in fp32) read once per drafted tree layer, which
on a 2-core CPU costs more than the draft layer itself. Restricted to the K most frequent
tokens of the target's own answers, the head is a slice that stays in cache.

The drafter's q is then a distribution over those K tokens (zero elsewhere). Verification
is unchanged and stays lossless: greedy acceptance compares tokens, and rejection
sampling takes any q, so a token outside the draft vocabulary is still produced by the
target's residual; it just cannot be drafted.

Token counts come from the training pipeline's self-distillation data (the target's
answers and the prompts they answer), saved as ``token_counts.safetensors``; the
ranking is count descending, then token id.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from .atomic import save_tensors, write_atomic
from .errors import OptTreeError
from .skinny import skinny_linear
from .weight_only import WeightOnlyLinear, weight_only_linear

META_KEY = "opttree_meta"
COUNTS_KEY = "token_counts"
DEFAULT_DRAFT_VOCAB = 8192


class DraftVocab:
    """The token ids (K,) a drafter may propose, out of a vocabulary of ``vocab_size``."""

    def __init__(self, ids: torch.Tensor, vocab_size: int):
        if ids.ndim != 1 or not 0 < ids.numel() <= vocab_size:
            raise OptTreeError(f"a draft vocabulary needs 1 to {vocab_size} token ids, got shape {tuple(ids.shape)}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size or ids.unique().numel() != ids.numel():
            raise OptTreeError(f"draft vocabulary ids must be distinct and within [0, {vocab_size})")
        self.ids, self.vocab_size = ids.long(), vocab_size

    @classmethod
    def most_frequent(cls, counts: torch.Tensor, size: int) -> DraftVocab:
        """The ``size`` most counted tokens (ties broken by the lower id)."""
        vocab_size = counts.numel()
        if not 0 < size <= vocab_size:
            raise OptTreeError(f"draft vocabulary size {size} is outside 1..{vocab_size}")
        order = torch.sort(-counts.long(), stable=True).indices  # stable: equal counts keep id order
        return cls(order[:size].clone(), vocab_size)

    def coverage(self, counts: torch.Tensor) -> float:
        """The share of the counted tokens that lie inside this vocabulary."""
        total = int(counts.sum())
        return float(counts[self.ids].sum()) / total if total else 0.0

    def __len__(self) -> int:
        return self.ids.numel()


class VocabHead:
    """Draft probabilities through an LM head, over the full vocabulary or a ``DraftVocab``."""

    def __init__(self, lm_head: torch.nn.Module, vocab: DraftVocab | None = None, rows: bool = False):
        """``rows``: the LM head already has one row per ``vocab`` token, in its order (EAGLE-3's own head
        over its draft vocabulary, ``drafters/eagle3.py``), instead of one per token of the vocabulary."""
        weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
        self.vocab_size = vocab.vocab_size if rows else weight.shape[0]
        if rows and (vocab is None or len(vocab) != weight.shape[0]):
            raise OptTreeError(f"an LM head of {weight.shape[0]} draft-vocabulary rows needs a draft vocabulary "
                               f"of as many tokens, got {None if vocab is None else len(vocab)}")
        if vocab is not None and vocab.vocab_size != self.vocab_size:
            raise OptTreeError(f"draft vocabulary is for {vocab.vocab_size} tokens, the LM head has {self.vocab_size}")
        self.vocab = vocab
        self.lm_head = lm_head
        self.sub_head = None  # a weight-only (int8/int4) head's rows of the draft vocabulary, quantized alike
        if vocab is not None:
            ids = vocab.ids.to(weight.device)
            self.ids = ids
            quantized = isinstance(lm_head, WeightOnlyLinear) and not rows
            if quantized:
                weight = lm_head.dense  # the head's own weights (an int8 head's ``weight`` is its int8 copy)
            self.weight = weight.detach() if rows else weight.detach()[ids].contiguous()  # (K, hidden)
            self.bias = (bias.detach() if rows else bias.detach()[ids]) if bias is not None else None
            if quantized:
                self.sub_head = weight_only_linear(_linear(self.weight, self.bias), lm_head.FORMAT)

    def probs(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """hidden (..., hidden) → q (..., V), float32."""
        if self.vocab is None:
            return torch.softmax(self.lm_head(hidden).float() / temperature, dim=-1)
        logits = self.sub_head(hidden) if self.sub_head is not None else skinny_linear(hidden, self.weight, self.bias)
        sub = torch.softmax(logits.float() / temperature, dim=-1)
        full = sub.new_zeros(*sub.shape[:-1], self.vocab_size)
        full[..., self.ids] = sub
        return full


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
    """An ``nn.Linear`` over these tensors (not copied)."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = torch.nn.Parameter(bias, requires_grad=False)
    return linear


def draft_vocab_size(drafter) -> int | None:
    """How many tokens ``drafter`` may propose when it drafts from a ``DraftVocab``; None: any token."""
    head = getattr(drafter, "out", None)
    return len(head.vocab) if isinstance(head, VocabHead) and head.vocab is not None else None


def count_tokens(sequences: Iterable[list[int]], vocab_size: int) -> torch.Tensor:
    """How often each token id occurs in ``sequences`` (int64, shape (vocab_size,))."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for ids in sequences:
        counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long), minlength=vocab_size)[:vocab_size]
    return counts


def save_counts(path: Path, counts: torch.Tensor, meta: dict) -> None:
    """Write counts atomically, with ``meta`` (sources, target) as ONE metadata string (``META_KEY``:
    sorted JSON), so the same counts and meta give the same bytes: the safetensors writer orders
    several metadata keys by a per-process hash."""
    tensors = {COUNTS_KEY: counts.to(torch.int64).contiguous()}
    metadata = {META_KEY: json.dumps(meta, sort_keys=True)}
    write_atomic(path, lambda tmp: save_tensors(tensors, tmp, metadata=metadata))


def load_counts(path: Path) -> tuple[torch.Tensor, dict]:
    """Counts and meta from ``save_counts``' file (or from one of a key per meta entry, as written before)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = f.metadata() or {}
            meta = json.loads(stored[META_KEY]) if META_KEY in stored else {k: json.loads(v) for k, v in stored.items()}
            return f.get_tensor(COUNTS_KEY), meta
    except (OSError, KeyError, ValueError) as e:
        raise OptTreeError(f"cannot read token counts from {path}: {e}") from e
