"""A small independent draft LM distilled from the target (the paper's "classic" mode).

It is a Llama with the target's layer width, few layers and a narrower MLP. It borrows
the target's token embeddings and LM head at run time (frozen, not stored), so its own
parameters fit in a few MB. Fresh layers start as copies of evenly spaced target layers
(MLP neurons truncated), which distillation then adapts.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

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
