"""What is trained, and its loss: the EAGLE head and the distilled draft LM.

Batches hold right-padded sequences: ids (B, T), features (B, T, hidden) = the target's
f_j, and a loss mask (B, T) that is True on positions j whose prediction is a response
token (j ≥ n_prompt − 1). Causal attention makes right padding harmless.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...drafters.draft_lm import build_draft_lm, draft_lm_config, own_state_dict
from ...drafters.eagle import EagleHead, head_config


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # (B, T) long
    features: torch.Tensor  # (B, T, hidden) float
    mask: torch.Tensor  # (B, T) bool


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of −Σ softmax(teacher) · log_softmax(student); (rows, V) each."""
    teacher = torch.softmax(teacher_logits.float(), dim=-1)
    return -(teacher * torch.log_softmax(student_logits.float(), dim=-1)).sum(-1).mean()


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Share of rows whose teacher top-1 token is in the student's top-k."""
    top = student_logits.topk(k, dim=-1).indices  # (rows, k)
    return (top == teacher_logits.argmax(-1, keepdim=True)).any(-1).float().mean()


class EagleRecipe:
    """Smooth-L1 on the next feature + ce_weight × soft CE through the frozen LM head (EAGLE-1),
    with uniform noise on the input features."""

    kind = "eagle"

    def __init__(self, target_model, num_layers: int = 1, noise: float = 0.2, ce_weight: float = 0.1):
        self.embed, self.lm_head = target_model.get_input_embeddings(), target_model.get_output_embeddings()
        self.config = head_config(target_model.config, num_layers)
        self.model = EagleHead(self.config).to(device=target_model.device)
        self.noise, self.ce_weight = noise, ce_weight

    def own_state(self) -> dict[str, torch.Tensor]:
        return self.model.own_state_dict()

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=False)

    def _predict(self, batch: Batch, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted and true next features at the masked positions, (rows, H) each."""
        features = batch.features.float()
        previous = torch.cat([torch.zeros_like(features[:, :1]), features[:, :-1]], dim=1)  # f_{j-1}, (B, T, H)
        if gen is not None and self.noise > 0:
            noise = torch.rand(previous.shape, generator=gen, device=gen.device).to(previous.device)
            previous = previous + (noise - 0.5) * self.noise * features.std()
        with torch.no_grad():
            embeds = self.embed(batch.ids)  # (B, T, H)
        x = self.model.fc(torch.cat([embeds, previous], dim=-1))
        positions = torch.arange(batch.ids.shape[1], device=x.device)[None].expand(batch.ids.shape[0], -1)
        predicted = self.model.decoder(inputs_embeds=x, position_ids=positions, use_cache=False).last_hidden_state
        return predicted[batch.mask], features[batch.mask]

    def logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher logits at the masked positions, (rows, V) each."""
        pred, true = self._predict(batch, None)
        return self.lm_head(pred), self.lm_head(true)

    def loss(self, batch: Batch, gen: torch.Generator | None) -> tuple[torch.Tensor, dict]:
        pred, true = self._predict(batch, gen)
        student, teacher = self.lm_head(pred), self.lm_head(true).detach()
        feature_loss = F.smooth_l1_loss(pred, true)
        ce = soft_cross_entropy(student, teacher)
        return feature_loss + self.ce_weight * ce, {"feature_loss": feature_loss.item(), "ce": ce.item(),
                                                    "top1": agreement(student, teacher).item()}


class DraftLMRecipe:
    """Soft CE against the target's next-token distribution (logit distillation)."""

    kind = "draft-lm"

    def __init__(self, target_model, num_layers: int = 2, intermediate_size: int = 1024):
        self.lm_head = target_model.get_output_embeddings()
        self.config = draft_lm_config(target_model.config, num_layers, intermediate_size)
        self.model = build_draft_lm(target_model, self.config)
        for p in (*target_model.get_input_embeddings().parameters(), *self.lm_head.parameters()):
            p.requires_grad_(False)

    def own_state(self) -> dict[str, torch.Tensor]:
        return own_state_dict(self.model)

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=False)

    def logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher logits at the masked positions, (rows, V) each."""
        hidden = self.model.model(input_ids=batch.ids, use_cache=False).last_hidden_state  # (B, T, H)
        return self.lm_head(hidden[batch.mask]), self.lm_head(batch.features[batch.mask].float()).detach()

    def loss(self, batch: Batch, gen: torch.Generator | None) -> tuple[torch.Tensor, dict]:
        student, teacher = self.logits(batch)
        ce = soft_cross_entropy(student, teacher)
        return ce, {"ce": ce.item(), "top1": agreement(student, teacher).item()}


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
