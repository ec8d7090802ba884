"""The EAGLE-3 recipe (Li et al., arXiv 2503.01840): an ``Eagle3Head`` trained with the training-time test.

What it trains is ``drafters/eagle3.py``'s head, in the layout ``eagle_checkpoints.py`` loads and
``eagle_export.py`` writes; it drafts through ``EagleDrafter`` with EAGLE's pairs. Followed:
SafeAILab/EAGLE ``eagle/traineagle3/cnets.py`` (``Model.forward``, ``LlamaAttention.forward``,
``Model.scandata``) and ``eagle/traineagle3/main.py`` (the 0.8^i step weights).

Batches (``recipes.Batch``) carry, per position j, the target's last-layer feature f_j followed by
g_j, the hidden states entering the three ``feature_layers`` (``data.compute_features(layers=...)``):
features (B, T, (1 + k) · H). ``mask[j]`` says f_j predicts a response token (j ≥ n_prompt − 1).

The unroll (k = ``ttt_steps`` steps, step i = 0 … k − 1), row j of step i:

    input    token x_{j+1+i}; step 0: fc(g_j), step i > 0: the head's own output at row j of step i − 1
    position j + i                                   (cnets.py: ``position_ids + lck``)
    attends  step 0's keys at rows ≤ j, and step t's key at row j for 1 ≤ t ≤ i — the ancestors a
             depth-(i + 1) tree node attends to at inference (cnets.py ``LlamaAttention.forward``: the
             causal block of ``cache_k[0]`` plus the diagonal of every later ``cache_k[i]``)
    loss     soft cross-entropy against softmax(lm_head(f_{j+1+i})) over the draft vocabulary, on rows
             whose target token x_{j+2+i} is a response token inside the draft vocabulary (EAGLE's
             ``position_mask = t2d[target argmax] · loss_mask``); weight 0.8^i

Token-level loss only (no feature regression). Departures, for small CPU runs: the steps' losses are
means over their valid rows (cnets.py divides by all B · T positions), the LM head over the draft
vocabulary starts as the target's rows and ``norm`` as the target's final norm (cnets.py starts both
fresh), and the draft vocabulary is the K most frequent tokens of the data (``draft_vocab.py``) in id
order, as ``Model.scandata`` sorts them (d2t[d] = ids[d] − d ≥ 0).
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from ...draft_vocab import DraftVocab, VocabHead
from ...drafters.eagle import EagleDrafter, head_config
from ...drafters.eagle3 import Eagle3Head, default_feature_layers
from ...errors import OptTreeError
from .recipes import Batch, soft_cross_entropy

TTT_STEPS = 7  # cnets.py ``self.length``
STEP_DECAY = 0.8  # main.py ``ploss_weight = [0.8 ** i ...]``


def check_feature_layers(layers: tuple[int, ...] | None, num_layers: int | None) -> tuple[int, ...]:
    """The three target layers (HF ``hidden_states`` indices) the head reads, ascending; EAGLE-3's 2, L//2, L−3 by
    default. ``num_layers`` None (the target not loaded yet): only the count, distinctness and sign are checked."""
    if layers is None and num_layers is None:
        return ()
    chosen = tuple(default_feature_layers(num_layers) if layers is None else layers)
    top = "L - 1" if num_layers is None else num_layers - 1
    if (len(chosen) != 3 or len(set(chosen)) != 3 or min(chosen) < 0
            or (num_layers is not None and max(chosen) >= num_layers)):
        where = "EAGLE-3's default 2, L//2, L-3 gives" if layers is None else "--feature-layers lists"
        has = "" if num_layers is None else f" (the target has {num_layers})"
        raise OptTreeError(f"{where} {list(chosen)}: an EAGLE-3 head reads three distinct target layers in 0..{top}"
                           f"{has}; pass --feature-layers with three of them")
    return tuple(sorted(chosen))


def _shift(x: torch.Tensor, by: int) -> torch.Tensor:
    """x[:, j + by] at row j, zero (False) past the end: cnets.py ``padding(left=False)`` applied ``by`` times."""
    if by == 0:
        return x
    return torch.cat([x[:, by:], torch.zeros_like(x[:, :by])], dim=1)


def unroll_mask(width: int, step: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(1, 1, T, (step + 1) · T) additive mask of step ``step``: causal over step 0's keys, then the diagonal
    of every later step's keys (each row's own chain of ancestors)."""
    eye = torch.eye(width, dtype=torch.bool, device=device)
    allowed = torch.cat([eye.cumsum(0).bool(), *[eye] * step], dim=1)  # (T, (step + 1) · T)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


class Eagle3Recipe:
    """Token-level training-time test of an ``Eagle3Head`` over the target's frozen embeddings."""

    kind = "eagle3"

    def __init__(self, target_model, draft_ids: torch.Tensor | None = None, feature_layers=None,
                 ttt_steps: int = TTT_STEPS, decay: float = STEP_DECAY):
        text = target_model.config.get_text_config()
        if ttt_steps < 1:
            raise OptTreeError(f"--ttt-steps must be >= 1, got {ttt_steps}")
        self.embed, self.target_head = target_model.get_input_embeddings(), target_model.get_output_embeddings()
        vocab = self.target_head.weight.shape[0]
        ids = torch.arange(vocab) if draft_ids is None else draft_ids.long().sort().values
        self.vocab = DraftVocab(ids, vocab)  # checks the ids
        self.feature_layers = check_feature_layers(feature_layers, text.num_hidden_layers)
        self.hidden, self.ttt_steps, self.decay = text.hidden_size, ttt_steps, decay
        self.config = head_config(text, 1)
        device = self.embed.weight.device
        self.model = Eagle3Head(self.config, self.hidden, self.feature_layers, len(ids)).to(device)
        self.ids = ids.to(device)
        self.t2d = torch.zeros(vocab, dtype=torch.bool, device=device).index_fill_(0, self.ids, True)  # (V,)
        with torch.no_grad():
            self.model.lm_head.weight.copy_(self.target_head.weight[self.ids])
            final_norm = getattr(target_model.get_decoder(), "norm", None)
            if final_norm is not None:
                self.model.norm.weight.copy_(final_norm.weight)

    def summary(self) -> dict:
        """The recipe's settings, for the model card."""
        return {"feature_layers": list(self.feature_layers), "ttt_steps": self.ttt_steps, "step_decay": self.decay,
                "draft_vocab": len(self.vocab)}

    def own_state(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def drafter(self, target_model, name: str = "eagle3") -> EagleDrafter:
        """The head drafting as a loaded EAGLE-3 checkpoint does (``eagle_checkpoints._eagle3``)."""
        self.model.eval()
        full = len(self.vocab) == self.vocab.vocab_size
        out = VocabHead(self.model.lm_head) if full else VocabHead(self.model.lm_head, self.vocab, rows=True)
        return EagleDrafter(self.model, target_model, name=name, eagle_pairs=True, out=out)

    def _teacher(self, f: torch.Tensor) -> torch.Tensor:
        """The target's logits over the draft vocabulary, (..., K): its LM head's rows at the draft ids."""
        with torch.no_grad():
            weight = self.target_head.weight[self.ids]
            bias = getattr(self.target_head, "bias", None)
            return torch.nn.functional.linear(f.to(weight.dtype), weight, None if bias is None else bias[self.ids])

    def student_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's logits over the draft vocabulary, (..., K), from its layer's outputs (..., H)."""
        return self.model.lm_head(self.model.norm(hidden))

    def _unroll(self, batch: Batch, steps: int):
        """Yields (step, the layer's outputs (B, T, H), teacher features f (B, T, H), valid rows (B, T)) per step."""
        features = batch.features.float()
        f, g = features[..., : self.hidden], features[..., self.hidden:]  # (B, T, H), (B, T, k · H)
        ids, width = batch.ids, batch.ids.shape[1]
        valid = batch.mask & _shift(batch.mask, 1)  # f_j predicts x_{j+1}, a response token that is there
        valid = valid & self.t2d[_shift(ids, 1)]  # … and that the draft may propose
        cache = DynamicCache(config=self.config)
        hidden = self.model.fc(g.to(self.model.fc.weight.dtype))  # (B, T, H)
        base = torch.arange(width, device=ids.device)[None].expand(ids.shape[0], -1)  # (B, T)
        for step in range(steps):
            with torch.no_grad():
                embeds = self.embed(_shift(ids, 1 + step))  # (B, T, H): x_{j+1+step}
            positions = base + step
            mask = unroll_mask(width, step, hidden.dtype, hidden.device)
            hidden = self.model.midlayer(embeds, hidden, self.model.rotary(hidden, positions), mask, cache)
            yield step, hidden, _shift(f, 1 + step), _shift(valid, 1 + step)

    def loss(self, batch: Batch, gen: torch.Generator | None) -> tuple[torch.Tensor, dict]:
        """Σ_i 0.8^i · CE_i over the unrolled steps; metrics: the summed CE, top-1 agreement per depth
        (``top1``, ``top1_d2`` …) and the rows step 0 learns from (``rows``: 0 makes a step of zero loss)."""
        total, metrics = self.model.fc.weight.sum() * 0.0, {"ce": 0.0, "rows": 0}
        for step, hidden, f, valid in self._unroll(batch, self.ttt_steps):
            if not bool(valid.any()):
                break  # no later step has rows either: every answer in the batch is shorter than this
            student, teacher = self.student_logits(hidden[valid]), self._teacher(f[valid])  # (rows, K) each
            ce = soft_cross_entropy(student, teacher)
            total = total + self.decay ** step * ce
            metrics["ce"] += ce.item()
            hits = (student.argmax(-1) == teacher.argmax(-1)).float().mean().item()
            metrics["top1" if step == 0 else f"top1_d{step + 1}"] = hits
            metrics["rows"] = metrics["rows"] or int(valid.sum())
        return total, metrics

    def logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """First-step student and teacher logits over the whole vocabulary, (rows, V) each (tokens outside the
        draft vocabulary get the dtype's minimum), at the rows whose next token is in the data."""
        _, hidden, f, _ = next(self._unroll(batch, 1))
        valid = _shift(batch.mask & _shift(batch.mask, 1), 1)  # as in training, but the target's top-1 may lie
        # outside the draft vocabulary: such rows count as misses
        sub, teacher = self.student_logits(hidden[valid]), self.target_head(f[valid].to(self.target_head.weight.dtype))
        full = sub.new_full((sub.shape[0], self.vocab.vocab_size), torch.finfo(sub.dtype).min)
        full[:, self.ids] = sub
        return full, teacher
