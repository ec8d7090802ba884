"""EAGLE-3 heads (Li et al., arXiv 2503.01840) in their published layout, built from transformers'
Llama layers; ``eagle.EagleDrafter`` drafts with them.

The forward, as SafeAILab/EAGLE's ``eagle/model/cnets.py`` has it (``LlamaDecoderLayeremb.forward``,
``Model.forward``, ``Model.topK_genrate``; the training code ``eagle/traineagle3/cnets.py``
``Model.forward`` agrees):

    g_j = [h^(a)_j ‖ h^(b)_j ‖ h^(c)_j]   the target's hidden states entering decoder layers a, b, c
                                          (default 2, L//2, L-3: ``modeling_llama_kv.py`` collects them
                                          when ``idx == 2 or idx == L//2 or idx == L-3``; HF ``hidden_states[i]``,
                                          before the final norm), low to high
    x   = fc(g_j)                         3·H_target → H, no bias; a tree node's x is instead the head's own
                                          output at its parent, and fc is skipped (``Model.forward``:
                                          ``if hidden_states.shape[-1] != inputs_embeds.shape[-1]``)
    a   = [input_layernorm(emb(token)) ‖ hidden_norm(x)]              (2H, the embedding first)
    h   = x + o_proj(attention(q/k/v_proj(a)))                       (q/k/v take 2H inputs)
    out = h + mlp(post_attention_layernorm(h))                        what the next tree layer is fed
    q   = softmax(lm_head(norm(out)))     over ``draft_vocab_size`` tokens; target id = d + d2t[d]

Pairs are EAGLE's (g_j, x_{j+1}) at position j (``topK_genrate``: ``input_ids[:, 1:]``). The
variant ``norm_before_residual`` (vLLM's ``llama_eagle3.py``, ``LlamaDecoderLayer._norm_before_residual``)
takes h = hidden_norm(x) + o_proj(...) instead.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from ..modelcall import additive_mask


def default_feature_layers(num_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's three target layers for a target of ``num_layers`` decoder layers: 2, L//2, L-3."""
    return 2, num_layers // 2, num_layers - 3


class Eagle3Layer(LlamaDecoderLayer):
    """transformers' Llama decoder layer with q/k/v over 2H inputs and a ``hidden_norm``
    (cnets.py ``LlamaDecoderLayeremb``; vLLM's ``llama_eagle3.py`` subclasses the same way)."""

    def __init__(self, config: LlamaConfig, norm_before_residual: bool = False):
        super().__init__(config, layer_idx=0)
        attention = self.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            old = getattr(attention, name)
            setattr(attention, name, nn.Linear(2 * config.hidden_size, old.out_features, bias=False))
        self.hidden_norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_before_residual = norm_before_residual

    def forward(self, embeds: torch.Tensor, hidden: torch.Tensor, position_embeddings, mask: torch.Tensor,
                cache: DynamicCache) -> torch.Tensor:
        """embeds, hidden: (1, q, H) → (1, q, H); ``mask`` (1, 1, q, past + q) additive."""
        normed = self.hidden_norm(hidden)
        residual = normed if self.norm_before_residual else hidden
        x = torch.cat([self.input_layernorm(embeds), normed], dim=-1)  # (1, q, 2H)
        x, _ = self.self_attn(hidden_states=x, position_embeddings=position_embeddings, attention_mask=mask,
                              past_key_values=cache)
        h = residual + x
        return h + self.mlp(self.post_attention_layernorm(h))


class Eagle3Head(nn.Module):
    """fc over the target's k feature layers, one ``Eagle3Layer`` (``midlayer``), ``norm`` and an LM head
    over the draft vocabulary (``lm_head``; its token map lives with the drafter's ``VocabHead``)."""

    def __init__(self, config: LlamaConfig, target_hidden: int, feature_layers: tuple[int, ...], draft_vocab: int,
                 norm_before_residual: bool = False):
        super().__init__()
        self.config = config
        self.feature_layers = tuple(feature_layers)
        hidden = config.hidden_size
        self.fc = nn.Linear(len(self.feature_layers) * target_hidden, hidden, bias=False)
        self.midlayer = Eagle3Layer(config, norm_before_residual)
        self.norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(hidden, draft_vocab, bias=False)
        self.rotary = LlamaRotaryEmbedding(config=config)

    def forward(self, embeds: torch.Tensor, features: torch.Tensor, position_ids: torch.Tensor,
                cache: DynamicCache, allowed: torch.Tensor | None = None, own: bool = False) -> torch.Tensor:
        """embeds (q, H); features (q, k·H_target) from the target, or (q, H) of the head's own (``own``)
        → the layer's outputs (q, H). ``allowed`` None: causal over the cache."""
        x = features.to(embeds.dtype) if own else self.fc(features.to(embeds.dtype))  # (q, H)
        past = cache.get_seq_length()
        if allowed is None:
            q = embeds.shape[0]
            allowed = torch.ones(q, past + q, dtype=torch.bool, device=embeds.device).tril(diagonal=past)
        mask = additive_mask(allowed.to(embeds.device), embeds.dtype)  # (1, 1, q, past + q)
        positions = position_ids[None].to(embeds.device)  # (1, q)
        out = self.midlayer(embeds[None], x[None], self.rotary(x[None], positions), mask, cache)
        return out[0]

    def logit_input(self, predicted: torch.Tensor) -> torch.Tensor:
        """What the LM head reads: the final ``norm`` of the layer's output (``topK_genrate``)."""
        return self.norm(predicted)
