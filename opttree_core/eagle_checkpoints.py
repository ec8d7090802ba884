"""Published EAGLE heads as drafters: the EAGLE-1/2 and EAGLE-3 layouts (``eagle_files.py`` tells them
apart), checked against the target and built from transformers' Llama layers.

EAGLE-1/2 (SafeAILab/EAGLE ``eagle/model/cnets1.py``, ``Model``; EAGLE-2 reuses EAGLE-1's weights):
a Llama config with ``num_hidden_layers`` layers; ``fc.weight [H, 2H]`` and ``fc.bias`` unless the config
says ``"bias": false`` (``ea_model.py`` ``EaModel.__init__``: ``bias = con["bias"]``, default True);
``layers.N.self_attn.{q,k,v,o}_proj``, ``layers.N.mlp.{gate,up,down}_proj``, ``layers.N.post_attention_layernorm``
and, for N > 0 only, ``layers.N.input_layernorm``; q/k/v biases when the head has them (Qwen2-style,
``LlamaAttention``'s ``config.qkv_bias``); no final norm, no LM head (the target's), an optional
``embed_tokens.weight`` (a copy of the target's: the target's own is used). Features: the target's last
layer after its final norm.

EAGLE-3 (``eagle/model/cnets.py``, ``Model``; ``eagle/traineagle3/cnets.py``): ``fc.weight [H, 3·H_target]``
(no bias), ``midlayer.{hidden_norm,input_layernorm,post_attention_layernorm}``, ``midlayer.self_attn.*`` with
q/k/v over 2H inputs, ``midlayer.mlp.*``, ``norm.weight``, its own ``lm_head.weight [draft_vocab_size, H]``,
``d2t`` (int64, target id = draft id + d2t[draft id]) and ``t2d`` (bool) when ``draft_vocab_size <
vocab_size`` (``EaModel.__init__`` deletes both when the sizes are equal). The embeddings are the
target's whenever the head's hidden size is the target's (``Model.__init__`` loads them from the base
model unless the config has ``target_hidden_size``); otherwise the head's own ``embed_tokens.weight``.
Feature layers: ``eagle_aux_hidden_state_layer_ids`` (top level or in ``eagle_config``, as vLLM reads
them) or EAGLE-3's 2, L//2, L-3.

Head dims come from the weights (q_proj rows / heads), as cnets1/cnets compute ``head_dim = H // heads``.
Every problem is one line naming the file and the key.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig

from .draft_vocab import DraftVocab, VocabHead
from .drafters.eagle import EagleDrafter, EagleHead
from .drafters.eagle3 import Eagle3Head, default_feature_layers
from .eagle_files import EAGLE1, Checkpoint, load_tensors, open_checkpoint
from .errors import OptTreeError
from .models import LoadedModel
from .skinny import use_skinny_matmul, uses_skinny_matmul

ZERO_FIRST_PAIR = "opttree_zero_first_pair"  # config field of heads exported from here (eagle_export.py)
_INDEX_KEYS = ("d2t", "t2d")
_HINTS = {"fc.bias": "(the config's 'bias' field decides: EAGLE builds fc with a bias unless it is false)"}


def _target_facts(target: LoadedModel) -> tuple[int, int, int]:
    """The target's hidden size, vocabulary (LM head rows) and decoder layers."""
    config = target.model.config.get_text_config()
    return config.hidden_size, target.model.get_output_embeddings().weight.shape[0], config.num_hidden_layers


def _check_target(ckpt: Checkpoint, hidden: int, target_hidden: int, vocab: int, key: str = "hidden_size") -> None:
    if hidden != target_hidden:
        raise ckpt.error(key, f"is {hidden}, but the target's hidden size is {target_hidden}: a head for another target")
    if "vocab_size" in ckpt.config and ckpt.value("vocab_size") != vocab:
        raise ckpt.error("vocab_size", f"is {ckpt.config['vocab_size']}, but the target's vocabulary has {vocab} "
                                       "tokens: a head for another target")


def _check_tensors(ckpt: Checkpoint, expected: dict[str, tuple], optional: dict[str, tuple] | None = None) -> None:
    """Every expected key present with its shape, optional keys with theirs, nothing else; floats except maps."""
    optional = optional or {}
    for key, shape in expected.items():
        if key not in ckpt.tensors:
            raise ckpt.error(key, f"is missing (expected shape {list(shape)}) {_HINTS.get(key, '')}", weights=True)
    for key, tensor in ckpt.tensors.items():
        shape = expected.get(key, optional.get(key))
        if shape is None:
            raise ckpt.error(key, f"is not part of this layout (unexpected key) {_HINTS.get(key, '')}")
        if tuple(tensor.shape) != shape:
            raise ckpt.error(key, f"has shape {list(tensor.shape)}, expected {list(shape)}")
        if key not in _INDEX_KEYS and not tensor.is_floating_point():
            raise ckpt.error(key, f"must be a floating-point tensor, got {tensor.dtype}")


def _head_dim(ckpt: Checkpoint, q_key: str, heads: int) -> int:
    if q_key not in ckpt.tensors:
        raise ckpt.error(q_key, "is missing", weights=True)
    rows = ckpt.tensors[q_key].shape[0]
    if rows % heads:
        raise ckpt.error(q_key, f"has {rows} rows, not a multiple of num_attention_heads {heads}")
    return rows // heads


def _llama_config(ckpt: Checkpoint, hidden: int, heads: int, kv: int, head_dim: int, layers: int) -> LlamaConfig:
    """The head's decoder config: sizes from the files, norm and RoPE settings from config.json."""
    passed = {k: ckpt.config[k] for k in ("hidden_act", "rms_norm_eps", "max_position_embeddings", "rope_theta",
                                          "rope_scaling", "rope_parameters") if ckpt.config.get(k) is not None}
    try:
        config = LlamaConfig(vocab_size=1, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                             head_dim=head_dim, intermediate_size=ckpt.value("intermediate_size"),
                             num_hidden_layers=layers, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                             pad_token_id=None, attention_bias=False, mlp_bias=False, **passed)
    except (KeyError, TypeError, ValueError) as e:
        raise ckpt.error("rope_scaling", f"(or another field) is not a Llama config transformers accepts: {e}") from e
    config._attn_implementation = "sdpa"
    return config


def _attention_shapes(prefix: str, hidden: int, heads: int, kv: int, head_dim: int, inputs: int) -> dict:
    return {f"{prefix}self_attn.q_proj.weight": (heads * head_dim, inputs),
            f"{prefix}self_attn.k_proj.weight": (kv * head_dim, inputs),
            f"{prefix}self_attn.v_proj.weight": (kv * head_dim, inputs),
            f"{prefix}self_attn.o_proj.weight": (hidden, heads * head_dim)}


def _mlp_shapes(prefix: str, hidden: int, inter: int) -> dict:
    return {f"{prefix}mlp.gate_proj.weight": (inter, hidden), f"{prefix}mlp.up_proj.weight": (inter, hidden),
            f"{prefix}mlp.down_proj.weight": (hidden, inter), f"{prefix}post_attention_layernorm.weight": (hidden,)}


def _eagle1_layers(ckpt: Checkpoint) -> int:
    indices = sorted({int(k.split(".")[1]) for k in ckpt.tensors if k.startswith("layers.") and k.split(".")[1].isdigit()})
    if not indices:
        raise ckpt.error("layers.0.self_attn.q_proj.weight", "is missing: an EAGLE-1 head has layers.N.*", weights=True)
    if indices != list(range(len(indices))):
        raise ckpt.error(f"layers.{indices[-1]}", f"is there but the layers are not numbered 0..N-1: {indices}")
    if "num_hidden_layers" in ckpt.config and ckpt.value("num_hidden_layers") != len(indices):
        raise ckpt.error("num_hidden_layers", f"is {ckpt.config['num_hidden_layers']}, but the weights hold "
                                              f"{len(indices)} layers")
    return len(indices)


def _eagle1_shapes(ckpt: Checkpoint, hidden: int, heads: int, kv: int, head_dim: int, layers: int) -> dict:
    bias, qkv = ckpt.value("bias", True, bool), "layers.0.self_attn.q_proj.bias" in ckpt.tensors
    if "qkv_bias" in ckpt.config and ckpt.value("qkv_bias", kind=bool) != qkv:
        raise ckpt.error("layers.0.self_attn.q_proj.bias", f"is {'present' if qkv else 'missing'}, but the config "
                                                           f"says 'qkv_bias': {ckpt.config['qkv_bias']}", weights=True)
    inter = ckpt.value("intermediate_size")
    shapes = {"fc.weight": (hidden, 2 * hidden), **({"fc.bias": (hidden,)} if bias else {})}
    for i in range(layers):
        prefix = f"layers.{i}."
        shapes |= _attention_shapes(prefix, hidden, heads, kv, head_dim, hidden) | _mlp_shapes(prefix, hidden, inter)
        if i > 0:  # cnets1.py LlamaDecoderLayer: no input_layernorm in layer 0
            shapes[f"{prefix}input_layernorm.weight"] = (hidden,)
        if qkv:
            shapes |= {f"{prefix}self_attn.{p}_proj.bias": (rows,)
                       for p, rows in (("q", heads * head_dim), ("k", kv * head_dim), ("v", kv * head_dim))}
    return shapes


def _eagle1(ckpt: Checkpoint, target: LoadedModel, name: str) -> EagleDrafter:
    target_hidden, vocab, _ = _target_facts(target)
    hidden = ckpt.value("hidden_size")
    _check_target(ckpt, hidden, target_hidden, vocab)
    heads = ckpt.value("num_attention_heads")
    kv, layers = ckpt.value("num_key_value_heads", heads), _eagle1_layers(ckpt)
    head_dim = _head_dim(ckpt, "layers.0.self_attn.q_proj.weight", heads)
    shapes = _eagle1_shapes(ckpt, hidden, heads, kv, head_dim, layers)
    _check_tensors(ckpt, shapes, {"embed_tokens.weight": (vocab, hidden)})
    config = _llama_config(ckpt, hidden, heads, kv, head_dim, layers)
    head = EagleHead(config, fc_bias="fc.bias" in shapes, layer0_norm=False,
                     qkv_bias="layers.0.self_attn.q_proj.bias" in shapes)
    state = {("decoder." + k if k.startswith("layers.") else k): v for k, v in ckpt.tensors.items() if k in shapes}
    _load(head, state, target.model, allowed_missing=("decoder.embed_tokens.",))
    eagle_pairs = not ckpt.value(ZERO_FIRST_PAIR, False, bool)
    return EagleDrafter(head, target.model, name=name, eagle_pairs=eagle_pairs)


def _feature_layers(ckpt: Checkpoint, layers: int) -> tuple[int, ...]:
    """The target layers (HF hidden_states indices) the head reads, ascending (the order every engine
    concatenates them in: each collects them while it runs the layers)."""
    key, ids = "eagle_aux_hidden_state_layer_ids", ckpt.config.get("eagle_aux_hidden_state_layer_ids")
    nested = ckpt.config.get("eagle_config")
    if ids is None and isinstance(nested, dict) and nested.get(key) is not None:
        key, ids = f"eagle_config.{key}", nested[key]
    if ids is None:
        ids, where = default_feature_layers(layers), f"EAGLE-3's default 2, L//2, L-3 for the target's {layers} layers"
        if len(set(ids)) != 3 or min(ids) < 0:
            raise ckpt.error("eagle_aux_hidden_state_layer_ids", f"is absent and {where}, {list(ids)}, are not three "
                                                                 "distinct layers: the target is too shallow")
        return tuple(ids)
    if not (isinstance(ids, list) and ids and all(isinstance(i, int) and 0 <= i < layers for i in ids)):
        raise ckpt.error(key, f"must list target layers in 0..{layers - 1}, got {ids!r}")
    if len(set(ids)) != len(ids):
        raise ckpt.error(key, f"lists a layer twice: {ids}")
    return tuple(sorted(ids))


def _eagle3_shapes(ckpt: Checkpoint, hidden: int, target_hidden: int, k: int, draft_vocab: int) -> tuple[dict, int]:
    heads = ckpt.value("num_attention_heads")
    kv, inter = ckpt.value("num_key_value_heads", heads), ckpt.value("intermediate_size")
    head_dim = _head_dim(ckpt, "midlayer.self_attn.q_proj.weight", heads)
    shapes = {"fc.weight": (hidden, k * target_hidden), "norm.weight": (hidden,), "lm_head.weight": (draft_vocab, hidden),
              "midlayer.hidden_norm.weight": (hidden,), "midlayer.input_layernorm.weight": (hidden,),
              **_attention_shapes("midlayer.", hidden, heads, kv, head_dim, 2 * hidden),
              **_mlp_shapes("midlayer.", hidden, inter)}
    return shapes, head_dim


def _vocab_map(ckpt: Checkpoint, draft_vocab: int, vocab: int) -> DraftVocab | None:
    """The draft vocabulary d2t spells (target id = draft id + d2t[draft id]); None when it is the whole vocabulary."""
    if draft_vocab == vocab:
        return None
    d2t = ckpt.tensors["d2t"]
    if d2t.dtype not in (torch.int64, torch.int32):
        raise ckpt.error("d2t", f"must be an integer tensor (target id = draft id + d2t[draft id]), got {d2t.dtype}")
    ids = torch.arange(draft_vocab) + d2t.long()  # (draft_vocab,)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ckpt.error("d2t", f"maps a draft id outside the target's {vocab} tokens")
    if ids.unique().numel() != draft_vocab:
        raise ckpt.error("d2t", "maps two draft ids to one target id")
    t2d = ckpt.tensors.get("t2d")
    if t2d is not None and (t2d.dtype != torch.bool or int(t2d.sum()) != draft_vocab or not bool(t2d[ids].all())):
        raise ckpt.error("t2d", f"must be a bool mask of the {draft_vocab} target ids d2t maps to")
    return DraftVocab(ids, vocab)


def _eagle3(ckpt: Checkpoint, target: LoadedModel, name: str) -> EagleDrafter:
    target_hidden, vocab, layers = _target_facts(target)
    hidden = ckpt.value("hidden_size")
    own_hidden = ckpt.value("target_hidden_size", hidden)
    _check_target(ckpt, own_hidden, target_hidden, vocab, "target_hidden_size" if "target_hidden_size" in ckpt.config
                  else "hidden_size")
    draft_vocab = ckpt.value("draft_vocab_size", vocab)
    if not 1 <= draft_vocab <= vocab:
        raise ckpt.error("draft_vocab_size", f"is {draft_vocab}, outside 1..{vocab} (the target's vocabulary)")
    feature_layers = _feature_layers(ckpt, layers)
    shapes, head_dim = _eagle3_shapes(ckpt, hidden, target_hidden, len(feature_layers), draft_vocab)
    maps = {"d2t": (draft_vocab,), "t2d": (vocab,)}
    if draft_vocab < vocab:
        shapes["d2t"] = maps.pop("d2t")
    own_embeddings = hidden != target_hidden
    if own_embeddings:
        shapes["embed_tokens.weight"] = (vocab, hidden)
    _check_tensors(ckpt, shapes, {**maps, "embed_tokens.weight": (vocab, hidden)})
    heads = ckpt.value("num_attention_heads")
    config = _llama_config(ckpt, hidden, heads, ckpt.value("num_key_value_heads", heads), head_dim, 1)
    head = Eagle3Head(config, target_hidden, feature_layers, draft_vocab,
                      norm_before_residual=ckpt.value("norm_before_residual", False, bool))
    _load(head, {k: v for k, v in ckpt.tensors.items() if k.startswith(("fc.", "midlayer.", "norm.", "lm_head."))},
          target.model)
    vocab_map = _vocab_map(ckpt, draft_vocab, vocab)
    out = VocabHead(head.lm_head, vocab_map, rows=vocab_map is not None)
    embed = None
    if own_embeddings:
        weight = ckpt.tensors["embed_tokens.weight"].to(target.model.dtype)
        embed = nn.Embedding.from_pretrained(weight, freeze=True).to(target.model.device)
    return EagleDrafter(head, target.model, name=name, eagle_pairs=True, embed=embed, out=out)


def _load(head: nn.Module, state: dict[str, torch.Tensor], target_model, allowed_missing: tuple[str, ...] = ()) -> None:
    """The weights into ``head`` (in the target's dtype, on its device, with its CPU kernels), grads off."""
    head.to(device=target_model.device, dtype=target_model.dtype)
    dtype = next(head.parameters()).dtype
    missing, unexpected = head.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.startswith(allowed_missing)]
    if missing or unexpected:  # the shape checks above make this a bug, not a bad file
        raise OptTreeError(f"internal: the head does not take the checked weights (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    use_skinny_matmul(head, on=uses_skinny_matmul(target_model))
    head.requires_grad_(False)


def load_eagle_checkpoint(directory: str | os.PathLike, target: LoadedModel, name: str | None = None) -> EagleDrafter:
    """A drafter from a published EAGLE-1/2 or EAGLE-3 head in ``directory``, checked against ``target``."""
    directory = Path(directory)
    checkpoint = open_checkpoint(directory)
    if checkpoint is None:
        raise OptTreeError(f"{directory}: not an EAGLE head: it needs config.json and model.safetensors or "
                           "pytorch_model.bin")
    layout = checkpoint.layout()
    if layout is None:
        raise checkpoint.error("fc.weight", "is missing: not an EAGLE head (a draft LM loads with load_model)",
                               weights=True)
    checkpoint = load_tensors(checkpoint)
    build = _eagle1 if layout == EAGLE1 else _eagle3
    return build(checkpoint, target, name or directory.name)
