"""An EAGLE-style feature drafter (Li et al., arXiv 2401.15077), drafting whole tree layers.

Notation: f_j = the target's last-layer feature (after the final norm) at position j, so
the target's logits there are lm_head(f_j) and predict token x_{j+1}.

The head reads the pair (f_{j-1}, x_j) at position j (f_{-1} = 0): fc([emb(x_j) ‖ f_{j-1}])
→ one Llama decoder layer → f̂_j; the target's own frozen LM head turns f̂_j into q(x_{j+1}).
So the head's position j is the target's position j. Inside the tree a node's pair is
(f̂ of its parent, its own token), at the node's position root_pos + depth. After
verification the tree entries are dropped from the head's cache and the accepted tokens
are fed again with the target's *true* features, which ``verify`` returns at no extra cost.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

from ..draft_vocab import DraftVocab, VocabHead
from ..modelcall import keep_prefix, run_decoder
from ..syncs import to_device
from ..tree import TreeLayer


def head_config(target_config, num_layers: int = 1) -> LlamaConfig:
    """The head's decoder: the target's layer shape, ``num_layers`` layers, a 1-token dummy vocab."""
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "rms_norm_eps", "rope_parameters", "max_position_embeddings", "hidden_act", "attention_bias", "mlp_bias")
    params = {k: getattr(target_config, k) for k in keys if getattr(target_config, k, None) is not None}
    config = LlamaConfig(vocab_size=1, num_hidden_layers=num_layers, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None, **params)
    config._attn_implementation = "sdpa"
    return config


class EagleHead(nn.Module):
    """fc([emb ‖ feature]) → decoder layer(s) → predicted next feature (no final norm)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=True)
        self.decoder = LlamaModel(config)
        self.decoder.norm = nn.Identity()  # the features it predicts are already post-norm

    def forward(self, embeds: torch.Tensor, features: torch.Tensor, position_ids: torch.Tensor,
                cache: DynamicCache, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """embeds, features: (q, hidden) → predicted next features (q, hidden)."""
        x = self.fc(torch.cat([embeds, features.to(embeds.dtype)], dim=-1))  # (q, hidden)
        return run_decoder(self.decoder, cache, position_ids, allowed, inputs_embeds=x)

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only (the dummy 1-row embedding is left out)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("decoder.embed_tokens")}


class EagleDrafter:
    """Drafts with an EagleHead over the target's embeddings and LM head (both frozen)."""

    def __init__(self, head: EagleHead, target_model, name: str = "eagle", temperature: float = 1.0,
                 vocab: DraftVocab | None = None):
        self.head, self.name, self.temperature = head.eval(), name, temperature
        self.embed = target_model.get_input_embeddings()
        self.out = VocabHead(target_model.get_output_embeddings(), vocab)
        self.vocab_size = self.out.vocab_size
        self.device = self.embed.weight.device

    def start(self, prompt_ids: torch.Tensor, features: torch.Tensor) -> None:
        self.cache = DynamicCache(config=self.head.config)
        self.committed = 0  # head cache entries holding pairs with true features
        self.pending_tokens: list[int] = prompt_ids.tolist()
        # (n_pending, hidden), row i precedes pending_tokens[i]; nothing precedes the first token
        self.pending_features = torch.cat([features.new_zeros(1, features.shape[1]), features])

    def _probs(self, features: torch.Tensor) -> torch.Tensor:
        return self.out.probs(features, self.temperature)

    @torch.inference_mode()
    def root_probs(self) -> torch.Tensor:
        keep_prefix(self.cache, self.committed)
        tokens = to_device(self.pending_tokens, self.device)  # (n_pending,)
        positions = torch.arange(self.committed, self.committed + tokens.numel(), device=self.device)
        predicted = self.head(self.embed(tokens), self.pending_features, positions, self.cache)
        self.committed += tokens.numel()
        self.pending_tokens, self.pending_features = [], self.pending_features[:0]
        self.slot_features = predicted[-1:]  # (1 + n_fed, hidden): f̂ of the root, then of each slot
        return self._probs(predicted[-1])  # (V,)

    @torch.inference_mode()
    def expand(self, layer: TreeLayer) -> torch.Tensor:
        parent_features = self.slot_features[layer.parent_slots + 1]  # (m, hidden); slot -1 is the root
        predicted = self.head(self.embed(layer.tokens), parent_features, layer.positions(self.committed - 1),
                              self.cache, layer.attention(self.committed))
        self.slot_features = torch.cat([self.slot_features, predicted])
        return self._probs(predicted)  # (m, V)

    def commit(self, tokens: list[int], features: torch.Tensor, accepted_slots=()) -> None:
        """Forget the tree; the accepted tokens come back next step with the target's true features."""
        self.pending_tokens = self.pending_tokens + list(tokens)
        self.pending_features = torch.cat([self.pending_features, features.to(self.pending_features.dtype)])
