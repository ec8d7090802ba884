"""An EAGLE-style feature drafter (Li et al., arXiv 2401.15077), drafting whole tree layers.

Notation: f_j = the target's last-layer feature (after the final norm) at position j, so
the target's logits there are lm_head(f_j) and predict token x_{j+1}.

The head reads the pair (f_{j-1}, x_j) at position j (f_{-1} = 0): fc([emb(x_j) ‖ f_{j-1}])
→ one Llama decoder layer → f̂_j; the target's own frozen LM head turns f̂_j into q(x_{j+1}).
So the head's position j is the target's position j. Inside the tree a node's pair is
(f̂ of its parent, its own token), at the node's position root_pos + depth. After
verification the tree entries are dropped from the head's cache and the accepted tokens
are fed again with the target's *true* features, which ``verify`` returns at no extra cost.

Published EAGLE-1/2 heads (``eagle_checkpoints.py``) are the same computation with their own
conventions, all options of ``EagleHead`` and ``EagleDrafter``: no input norm in layer 0, an fc
bias or not, Qwen2-style q/k/v biases, and EAGLE's pairs (f_j, x_{j+1}) at position j, which start
at the first prompt token's feature instead of a zero feature (``eagle_pairs``). The drafter
also runs EAGLE-3 heads (``eagle3.py``): a head says how it is fed (``own``) and read
(``logit_input``), and an EAGLE-3 drafter brings its own LM head over its draft vocabulary.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

from ..draft_vocab import DraftVocab, VocabHead
from ..errors import OptTreeError
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


def add_qkv_bias(attention: nn.Module) -> None:
    """Give a transformers attention module biased q/k/v projections (Qwen2-style; o_proj keeps none)."""
    for name in ("q_proj", "k_proj", "v_proj"):
        old = getattr(attention, name)
        setattr(attention, name, nn.Linear(old.in_features, old.out_features, bias=True,
                                           device=old.weight.device, dtype=old.weight.dtype))


class EagleHead(nn.Module):
    """fc([emb ‖ feature]) → decoder layer(s) → predicted next feature (no final norm).

    Our heads keep every layer's input norm and an fc bias. The published EAGLE-1/2 layout
    (SafeAILab/EAGLE ``eagle/model/cnets1.py``) differs in three options: ``fc_bias`` (``Model.__init__``:
    ``nn.Linear(2H, H, bias=bias)``, the config's ``bias`` field, read in ``ea_model.py``
    ``EaModel.__init__``), ``layer0_norm=False`` (``LlamaDecoderLayer.__init__`` builds
    ``input_layernorm`` only when ``index != 0``) and ``qkv_bias`` (``LlamaAttention.__init__``:
    ``config.qkv_bias``, the Qwen2-style heads)."""

    def __init__(self, config: LlamaConfig, fc_bias: bool = True, layer0_norm: bool = True, qkv_bias: bool = False):
        super().__init__()
        self.config = config
        self.fc_bias, self.layer0_norm, self.qkv_bias = fc_bias, layer0_norm, qkv_bias
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=fc_bias)
        self.decoder = LlamaModel(config)
        self.decoder.norm = nn.Identity()  # the features it predicts are already post-norm
        if not layer0_norm:
            self.decoder.layers[0].input_layernorm = nn.Identity()
        if qkv_bias:
            for layer in self.decoder.layers:
                add_qkv_bias(layer.self_attn)

    def forward(self, embeds: torch.Tensor, features: torch.Tensor, position_ids: torch.Tensor,
                cache: DynamicCache, allowed: torch.Tensor | None = None, own: bool = False) -> torch.Tensor:
        """embeds, features: (q, hidden) → predicted next features (q, hidden). ``own`` (the features are
        the head's own predictions, inside a tree) changes nothing: EAGLE-1 feeds both through fc."""
        x = self.fc(torch.cat([embeds, features.to(embeds.dtype)], dim=-1))  # (q, hidden)
        return run_decoder(self.decoder, cache, position_ids, allowed, inputs_embeds=x)

    def logit_input(self, predicted: torch.Tensor) -> torch.Tensor:
        """What the LM head reads: the predicted feature itself (it is already post-norm)."""
        return predicted

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only (the dummy 1-row embedding is left out)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("decoder.embed_tokens")}


class EagleDrafter:
    """Drafts with an EAGLE head over the target's embeddings and LM head (both frozen).

    ``eagle_pairs``: feed EAGLE's pairs (f_j, x_{j+1}) at position j from the first prompt token on
    (cnets1.py ``Model.topK_genrate``: ``input_ids = input_ids[:, 1:]``; vLLM's ``EagleProposer.propose``
    shifts the same way), as published heads were trained; off (our heads), the zero-feature pair
    (0, x_0) comes first. ``embed`` / ``out``: an EAGLE-3 head's own embedding table and LM head over its
    draft vocabulary (``eagle3.py``); by default the target's."""

    def __init__(self, head: nn.Module, target_model, name: str = "eagle", temperature: float = 1.0,
                 vocab: DraftVocab | None = None, eagle_pairs: bool = False, embed: nn.Module | None = None,
                 out: VocabHead | None = None):
        self.head, self.name, self.temperature, self.eagle_pairs = head.eval(), name, temperature, eagle_pairs
        self.embed = embed if embed is not None else target_model.get_input_embeddings()
        self.out = out if out is not None else VocabHead(target_model.get_output_embeddings(), vocab)
        self.vocab_size = self.out.vocab_size
        self.device = self.embed.weight.device

    @property
    def feature_layers(self) -> tuple[int, ...] | None:
        """The target layers the head reads (EAGLE-3); None: the last layer (``drafters/base.py``)."""
        return getattr(self.head, "feature_layers", None)

    def start(self, prompt_ids: torch.Tensor, features: torch.Tensor) -> None:
        self.cache = DynamicCache(config=self.head.config)
        self.committed = 0  # head cache entries holding pairs with true features
        if self.eagle_pairs:
            if prompt_ids.numel() < 2:
                raise OptTreeError(f"draft '{self.name}' (an EAGLE-layout head) needs a prompt of at least 2 tokens: "
                                   "its first pair is (feature of token 0, token 1)")
            self.pending_tokens: list[int] = prompt_ids[1:].tolist()
            self.pending_features = features  # (L - 1, width), row i precedes pending_tokens[i]
            return
        self.pending_tokens = prompt_ids.tolist()
        # (n_pending, hidden), row i precedes pending_tokens[i]; nothing precedes the first token
        self.pending_features = torch.cat([features.new_zeros(1, features.shape[1]), features])

    def _probs(self, predicted: torch.Tensor) -> torch.Tensor:
        return self.out.probs(self.head.logit_input(predicted), self.temperature)

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
                              self.cache, layer.attention(self.committed), own=True)
        self.slot_features = torch.cat([self.slot_features, predicted])
        return self._probs(predicted)  # (m, V)

    def commit(self, tokens: list[int], features: torch.Tensor, accepted_slots=()) -> None:
        """Forget the tree; the accepted tokens come back next step with the target's true features."""
        self.pending_tokens = self.pending_tokens + list(tokens)
        self.pending_features = torch.cat([self.pending_features, features.to(self.pending_features.dtype)])
