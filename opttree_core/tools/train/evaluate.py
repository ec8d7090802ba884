"""Held-out measurements of a draft during and after training: agreement and MAL."""
from __future__ import annotations

import torch

from ...decoding import DecodeConfig, generate
from ...metrics import mean_acceptance_length
from ...policies import OptTreeConfig, OptTreePolicy
from .data import Sequence
from .loop import make_batch
from .recipes import agreement


@torch.inference_mode()
def heldout_agreement(recipe, sequences: list[Sequence], features: list[torch.Tensor], max_len: int = 512,
                      batch_size: int = 8) -> dict:
    """First-step top-1 / top-4 agreement with the target on held-out response positions."""
    recipe.model.eval()
    device = next(recipe.model.parameters()).device
    hits1 = hits4 = rows = 0
    for start in range(0, len(sequences), batch_size):
        index = list(range(start, min(start + batch_size, len(sequences))))
        batch = make_batch(sequences, features, index, max_len, device)
        student, teacher = recipe.logits(batch)
        n = student.shape[0]
        hits1 += agreement(student, teacher, 1).item() * n
        hits4 += agreement(student, teacher, 4).item() * n
        rows += n
    return {"top1": hits1 / max(rows, 1), "top4": hits4 / max(rows, 1), "positions": rows}


def heldout_mal(target_model, make_drafter, sequences: list[Sequence], max_new_tokens: int = 64,
                policy: OptTreePolicy | None = None) -> float:
    """MAL of tree decoding on the held-out prompts (greedy, OPT-Tree at its defaults)."""
    policy = policy or OptTreePolicy(OptTreeConfig())
    lengths = []
    for seq in sequences:
        prompt = torch.tensor(seq.ids[: seq.n_prompt], device=target_model.device)
        lengths += generate(target_model, make_drafter(), policy, prompt,
                            DecodeConfig(max_new_tokens=max_new_tokens)).accept_lengths
    return mean_acceptance_length(lengths)
