"""Our EAGLE heads written in the published layouts (``eagle_checkpoints.py`` reads them back), so
SafeAILab/EAGLE, SGLang and vLLM can load a head trained here.

EAGLE-1/2, from an ``EagleHead``: config.json (a Llama config: the head's sizes, ``num_hidden_layers``,
``"bias": false`` only when fc has no bias and ``qkv_bias`` only when set, as yuhuili's heads spell them, the
target's ``vocab_size``) and ``model.safetensors`` or
``pytorch_model.bin`` with ``fc.*``, ``layers.N.*`` and ``embed_tokens.weight`` (the target's, as
published heads carry it). Two things of our heads have no place in that layout, and are handled so:

- Layer 0 of an EAGLE-1 head has no input norm (cnets1.py ``LlamaDecoderLayer``; SGLang's and vLLM's
  ``llama_eagle.py`` drop it likewise), ours has one. The export puts an identity layer first: layer 0
  with zero projections adds exactly 0 to the residual stream (its attention output is o_proj(·) = 0,
  its MLP output down_proj(·) = 0), and our layer follows as layer 1, where EAGLE-1 keeps the input
  norm. Exact, at the price of one idle layer of compute when served.
- Our heads were trained with a zero-feature pair (0, x_0) at position 0; EAGLE feeds (f_0, x_1) first.
  config.json says so (``opttree_zero_first_pair: true``) and our loader honours it, so a round trip
  drafts exactly as before; SGLang and vLLM ignore the field and feed EAGLE's pairs, so their drafts
  lack that one context entry.

A head with a draft vocabulary (``draft_vocab.py``) is exported over the full vocabulary: EAGLE-1 has no
draft vocabulary (load the draft with ``draft_vocab=0`` to compare).

EAGLE-3, from an ``Eagle3Head``: ``fc.weight``, ``midlayer.*``, ``norm.weight``, ``lm_head.weight``, ``d2t``
and ``t2d`` when its vocabulary is a subset, ``embed_tokens.weight``; config.json with ``draft_vocab_size``,
``target_hidden_size`` and ``eagle_aux_hidden_state_layer_ids`` when they differ from EAGLE-3's defaults.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .atomic import replace_dir, save_tensors
from .drafters.eagle import EagleDrafter, EagleHead
from .drafters.eagle3 import Eagle3Head, default_feature_layers
from .eagle_checkpoints import ZERO_FIRST_PAIR
from .eagle_files import CONFIG
from .errors import OptTreeError
from .models import LoadedModel

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
WEIGHT_FORMATS = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}


def _rope_fields(config) -> dict:
    rope = dict(getattr(config, "rope_parameters", None) or {})
    theta = rope.pop("rope_theta", getattr(config, "rope_theta", 10000.0))
    default = rope.get("rope_type", "default") == "default"
    return {"rope_theta": theta, "rope_scaling": None if default else rope}


def _base_config(head_config, target: LoadedModel, layers: int, dtype: str) -> dict:
    """The Llama fields every published head's config.json has (cnets1/cnets read them through ``EConfig``)."""
    text = target.model.config.get_text_config()
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "hidden_act", "rms_norm_eps", "max_position_embeddings")
    return {"model_type": "llama", **{k: getattr(head_config, k) for k in keys}, "num_hidden_layers": layers,
            **_rope_fields(head_config), "vocab_size": target.model.get_output_embeddings().weight.shape[0],
            "tie_word_embeddings": False, "bos_token_id": text.bos_token_id, "eos_token_id": text.eos_token_id,
            "pad_token_id": getattr(text, "pad_token_id", None), "torch_dtype": dtype}


def _identity_layer(head: EagleHead) -> dict[str, torch.Tensor]:
    """Layer 0 that adds exactly 0: every projection zero (no input norm: EAGLE-1's layer 0 has none)."""
    layer = head.decoder.layers[0]
    state = {f"layers.0.{k}": torch.zeros_like(v) for k, v in layer.state_dict().items()
             if not k.startswith("input_layernorm.")}
    state["layers.0.post_attention_layernorm.weight"] = torch.ones_like(state["layers.0.post_attention_layernorm.weight"])
    return state


def _eagle1(drafter: EagleDrafter, target: LoadedModel, dtype: str) -> tuple[dict, dict]:
    head = drafter.head
    if drafter.out.vocab is not None:
        raise OptTreeError(f"draft '{drafter.name}' drafts from a draft vocabulary of {len(drafter.out.vocab)} tokens, "
                           "which EAGLE-1's layout cannot hold: load it with draft_vocab=0 (--draft-vocab 0)")
    own = {k.removeprefix("decoder."): v for k, v in head.own_state_dict().items()}
    shift = 1 if head.layer0_norm else 0  # our layer 0 has an input norm: an identity layer goes first
    state = {}
    for key, value in own.items():
        if key.startswith("layers."):
            index, rest = key.split(".", 2)[1:]
            key = f"layers.{int(index) + shift}.{rest}"
        state[key] = value
    if shift:
        state |= _identity_layer(head)
    state["embed_tokens.weight"] = target.model.get_input_embeddings().weight
    config = {"architectures": ["LlamaForCausalLM"],
              **_base_config(head.config, target, head.config.num_hidden_layers + shift, dtype)}
    if not head.fc_bias:  # as yuhuili's heads: no field when fc has a bias (EAGLE's default), "bias": false when not
        config["bias"] = False
    if head.qkv_bias:
        config["qkv_bias"] = True
    if not drafter.eagle_pairs:
        config[ZERO_FIRST_PAIR] = True
    return state, config


def _eagle3(drafter: EagleDrafter, target: LoadedModel, dtype: str, embeddings: bool = True) -> tuple[dict, dict]:
    head = drafter.head
    state = dict(head.state_dict())
    draft_vocab, vocab = head.lm_head.out_features, drafter.vocab_size
    if drafter.out.vocab is not None:
        ids = drafter.out.vocab.ids.cpu()
        state["d2t"] = ids - torch.arange(draft_vocab)  # target id = draft id + d2t[draft id]
        state["t2d"] = torch.zeros(vocab, dtype=torch.bool).index_fill_(0, ids, True)
    if embeddings or drafter.embed is not target.model.get_input_embeddings():  # a head's own table always goes
        state["embed_tokens.weight"] = drafter.embed.weight
    config = {"architectures": ["LlamaForCausalLMEagle3"], **_base_config(head.config, target, 1, dtype),
              "draft_vocab_size": draft_vocab}
    target_hidden = head.fc.in_features // len(head.feature_layers)
    if target_hidden != head.config.hidden_size:
        config["target_hidden_size"] = target_hidden
    if head.feature_layers != default_feature_layers(target.model.config.get_text_config().num_hidden_layers):
        config["eagle_aux_hidden_state_layer_ids"] = list(head.feature_layers)
    if head.midlayer.norm_before_residual:
        config["norm_before_residual"] = True
    return state, config


def _write(out: Path, state: dict[str, torch.Tensor], config: dict, weights: str) -> Path:
    """config.json and the weights, written whole into a sibling that then takes ``out``'s place."""
    out.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if weights == "safetensors":
            save_tensors(state, tmp / WEIGHT_FORMATS[weights], metadata={"format": "pt"})
        else:
            torch.save(state, tmp / WEIGHT_FORMATS[weights])

    return replace_dir(out, fill)


def export_head(drafter: EagleDrafter, target: LoadedModel, out: str | os.PathLike, dtype: str = "float16",
                weights: str = "safetensors", embeddings: bool = True, replace: bool = False) -> Path:
    """Write ``drafter``'s head as an EAGLE-1/2 (``EagleHead``) or EAGLE-3 (``Eagle3Head``) checkpoint in
    the directory ``out`` (new, or empty; with ``replace``, an earlier checkpoint there is swapped out
    atomically once the new one is whole); returns it. ``dtype`` of the float tensors; ``weights``
    "safetensors" or "bin"; ``embeddings`` False leaves out an EAGLE-3 head's ``embed_tokens.weight`` when it
    is the target's (as yuhuili's EAGLE-3 releases; loaders then take the target's). Nothing is written
    unless everything checks out."""
    out = Path(out)
    if dtype not in DTYPES:
        raise OptTreeError(f"export dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if weights not in WEIGHT_FORMATS:
        raise OptTreeError(f"weights format must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (replace and (out / CONFIG).is_file()))):
        raise OptTreeError(f"{out} exists and is not an empty directory: choose a new one")
    head = getattr(drafter, "head", None)
    if isinstance(head, Eagle3Head):
        state, config = _eagle3(drafter, target, dtype, embeddings)
    elif isinstance(head, EagleHead):
        state, config = _eagle1(drafter, target, dtype)
    else:
        raise OptTreeError(f"draft '{drafter.name}' is not an EAGLE head: only EAGLE-1/2 and EAGLE-3 heads export")
    tensors = {k: (v.detach().to("cpu", DTYPES[dtype]) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state.items()}
    return _write(out, tensors, config, weights)
