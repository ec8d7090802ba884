"""An independent draft LM as a drafter (the paper's "classic" mode), and the small one we distil.

``DraftLMDrafter`` drafts with any causal LM on the target's tokenizer, one whole tree layer per
forward pass with a tree mask over its own KV cache. ``self_drafter`` is the target drafting for
itself (the greedy oracle).

The distilled draft (``tiny-smollm2``) is a Llama with the target's layer width, few layers and a
narrower MLP. It borrows the target's token embeddings and LM head at run time (frozen, not
stored), so its own parameters fit in a few MB. Fresh layers start as copies of evenly spaced
target layers (MLP neurons truncated), which distillation then adapts.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig

from ..draft_vocab import DraftVocab, VocabHead
from ..modelcall import keep_positions, model_device, run_decoder
from ..syncs import to_device
from ..tree import TreeLayer

SHARED_PREFIXES = ("model.embed_tokens.", "lm_head.")


def draft_lm_config(target_config, num_layers: int = 2, intermediate_size: int = 1024) -> LlamaConfig:
    keys = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
            "rope_parameters", "max_position_embeddings", "hidden_act", "vocab_size", "bos_token_id",
            "eos_token_id", "pad_token_id", "attention_bias", "mlp_bias")
    params = {k: getattr(target_config, k) for k in keys if getattr(target_config, k, None) is not None}
    config = LlamaConfig(num_hidden_layers=num_layers, intermediate_size=intermediate_size,
                         tie_word_embeddings=True, **params)
    config._attn_implementation = "sdpa"
    return config


def share_target_embeddings(draft, target_model) -> None:
    """Point the draft's embeddings and LM head at the target's (the same tensors)."""
    draft.model.embed_tokens = target_model.get_input_embeddings()
    draft.lm_head = target_model.get_output_embeddings()


def build_draft_lm(target_model, config: LlamaConfig, init_from_target: bool = True):
    """A draft LM on the target's device and dtype, sharing its embeddings and LM head."""
    draft = AutoModelForCausalLM.from_config(config)
    share_target_embeddings(draft, target_model)
    draft = draft.to(device=target_model.device, dtype=target_model.dtype)
    if init_from_target:
        copy_target_layers(draft, target_model)
    return draft


def copy_target_layers(draft, target_model) -> None:
    """Initialise draft layer i from evenly spaced target layers; the MLP keeps the first neurons."""
    t_layers, d_layers = target_model.get_decoder().layers, draft.model.layers
    picks = torch.linspace(0, len(t_layers) - 1, len(d_layers)).round().long().tolist()
    width = draft.config.intermediate_size
    with torch.no_grad():
        for d_layer, pick in zip(d_layers, picks):
            source = t_layers[pick].state_dict()
            for name, tensor in d_layer.state_dict().items():
                src = source[name]
                if name.endswith(("gate_proj.weight", "up_proj.weight")):
                    src = src[:width]
                elif name.endswith("down_proj.weight"):
                    src = src[:, :width]
                tensor.copy_(src)
        draft.model.norm.weight.copy_(target_model.get_decoder().norm.weight)


def own_state_dict(draft) -> dict[str, torch.Tensor]:
    """The draft's own parameters: everything but the borrowed embeddings and LM head."""
    return {k: v for k, v in draft.state_dict().items() if not k.startswith(SHARED_PREFIXES)}


class DraftLMDrafter:
    """An independent causal LM on the target's tokenizer.

    Cache layout: ``[committed tokens | this tree's slots, in feeding order]``; the root (the
    last committed token) is the last committed entry, so slot s sits at ``committed + s``.
    After verification the cache keeps the committed part plus the accepted slots.
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

    @torch.inference_mode()
    def root_probs(self) -> torch.Tensor:
        tokens = to_device(self.pending, self.device)  # (n_pending,)
        positions = torch.arange(self.committed, self.committed + len(self.pending), device=self.device)
        hidden = run_decoder(self.model.get_decoder(), self.cache, positions, None, tokens=tokens)
        self.committed += len(self.pending)
        self.pending = []
        return self.out.probs(hidden[-1], self.temperature)  # (V,)

    @torch.inference_mode()
    def expand(self, layer: TreeLayer) -> torch.Tensor:
        hidden = run_decoder(self.model.get_decoder(), self.cache, layer.positions(self.committed - 1),
                             layer.attention(self.committed), tokens=layer.tokens)  # (m, hidden)
        return self.out.probs(hidden, self.temperature)  # (m, V)

    def commit(self, tokens: list[int], features: torch.Tensor | None = None, accepted_slots=()) -> None:
        """Keep the accepted slots' cache entries; the rest of ``tokens`` (at least the bonus, whose
        logits are the next root's) waits to be fed with the next root."""
        accepted = list(accepted_slots) if not self.pending else []  # a root-only step fed nothing
        tail = to_device([self.committed + s for s in accepted], self.device)
        keep_positions(self.cache, self.committed, tail)
        self.committed += len(accepted)
        self.pending += list(tokens[len(accepted):])


def self_drafter(target_model) -> DraftLMDrafter:
    """The target drafting for itself: the oracle under which every greedy draft is accepted."""
    return DraftLMDrafter(target_model, name="self")
