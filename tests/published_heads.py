"""Tiny EAGLE heads in exactly the published layouts, for a tiny random Llama target saved to a directory,
and straightforward re-implementations of the published forwards (SafeAILab/EAGLE ``eagle/model/cnets1.py``
for EAGLE-1/2, ``eagle/model/cnets.py`` for EAGLE-3) to check the drafters against.

The layouts are what ``EaModel.from_pretrained`` reads: config.json (the fields yuhuili's heads carry:
a Llama config with ``num_hidden_layers: 1``, EAGLE-1's optional ``bias`` and Qwen2-style ``qkv_bias``,
EAGLE-3's ``draft_vocab_size``) and ``pytorch_model.bin`` (fp16, as the EAGLE-1 releases) or
``model.safetensors`` (bf16), keys without a ``model.`` prefix.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from opttree_core.models import load_model, tiny_llama_config

CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def save_target(directory: Path, layers: int = 8, hidden: int = 64, vocab: int = 128, seed: int = 0) -> Path:
    """A tiny random Llama with a tiny tokenizer (with a chat template), saved as a local HF directory."""
    config = tiny_llama_config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, initializer_range=0.3)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        loaded = load_model(config)
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.chat_template = CHAT_TEMPLATE
    loaded.tokenizer.save_pretrained(directory)
    return directory


def _sizes(target) -> tuple[int, int, int, int, int]:
    c = target.model.config
    return c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, c.hidden_size // c.num_attention_heads


def _base_config(target, dtype: str) -> dict:
    c = target.model.config
    return {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
            "hidden_size": c.hidden_size, "initializer_range": 0.02, "intermediate_size": c.intermediate_size,
            "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": c.num_attention_heads,
            "num_hidden_layers": 1, "num_key_value_heads": c.num_key_value_heads, "pad_token_id": 0,
            "rms_norm_eps": c.rms_norm_eps, "rope_theta": 10000.0, "tie_word_embeddings": False,
            "torch_dtype": dtype, "transformers_version": "4.28.1", "use_cache": True,
            "vocab_size": target.model.get_output_embeddings().weight.shape[0]}


def _random(gen, *shape, scale=0.15):
    return torch.randn(*shape, generator=gen) * scale


def _layer(gen, prefix: str, hidden: int, heads: int, kv: int, inter: int, hd: int, inputs: int, norm: bool) -> dict:
    state = {f"{prefix}self_attn.q_proj.weight": _random(gen, heads * hd, inputs),
             f"{prefix}self_attn.k_proj.weight": _random(gen, kv * hd, inputs),
             f"{prefix}self_attn.v_proj.weight": _random(gen, kv * hd, inputs),
             f"{prefix}self_attn.o_proj.weight": _random(gen, hidden, heads * hd),
             f"{prefix}mlp.gate_proj.weight": _random(gen, inter, hidden),
             f"{prefix}mlp.up_proj.weight": _random(gen, inter, hidden),
             f"{prefix}mlp.down_proj.weight": _random(gen, hidden, inter),
             f"{prefix}post_attention_layernorm.weight": 1 + _random(gen, hidden, scale=0.1)}
    if norm:
        state[f"{prefix}input_layernorm.weight"] = 1 + _random(gen, hidden, scale=0.1)
    return state


def _save(directory: Path, config: dict, state: dict, weights: str, dtype: torch.dtype) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    if weights == "bin":
        torch.save(tensors, directory / "pytorch_model.bin")
    else:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def write_eagle1(directory: Path, target, bias: bool = True, bias_field: bool | None = None, embed: bool = True,
                 qkv: bool = False, layers: int = 1, weights: str = "bin", dtype=torch.float16, seed: int = 1) -> Path:
    """An EAGLE-1/2 head: fc [H, 2H] (+ fc.bias), layers.N.* without input_layernorm in layer 0, no norm, no LM
    head, embed_tokens optional. ``bias_field``: the config's ``bias`` (None: absent, EAGLE's default True)."""
    hidden, heads, kv, inter, hd = _sizes(target)
    gen = torch.Generator().manual_seed(seed)
    state = {"fc.weight": _random(gen, hidden, 2 * hidden)}
    if bias:
        state["fc.bias"] = _random(gen, hidden)
    for i in range(layers):
        state |= _layer(gen, f"layers.{i}.", hidden, heads, kv, inter, hd, hidden, norm=i > 0)
        if qkv:
            state |= {f"layers.{i}.self_attn.{p}_proj.bias": _random(gen, n * hd)
                      for p, n in (("q", heads), ("k", kv), ("v", kv))}
    if embed:
        state["embed_tokens.weight"] = target.model.get_input_embeddings().weight.detach().clone()
    config = _base_config(target, "float16" if dtype == torch.float16 else "bfloat16") | {"num_hidden_layers": layers}
    if bias_field is not None:
        config["bias"] = bias_field
    if qkv:
        config["qkv_bias"] = True
    return _save(directory, config, state, weights, dtype)


def write_eagle3(directory: Path, target, draft_vocab: int | None = None, embed: bool = False,
                 weights: str = "safetensors", dtype=torch.bfloat16, seed: int = 2) -> Path:
    """An EAGLE-3 head: fc [H, 3H], midlayer.* with q/k/v over 2H, norm, lm_head [draft_vocab, H], d2t / t2d
    when the draft vocabulary is a subset (EAGLE's construction: the chosen target ids, sorted)."""
    hidden, heads, kv, inter, hd = _sizes(target)
    vocab = target.model.get_output_embeddings().weight.shape[0]
    draft_vocab = draft_vocab or vocab
    gen = torch.Generator().manual_seed(seed)
    state = {"fc.weight": _random(gen, hidden, 3 * hidden), "norm.weight": 1 + _random(gen, hidden, scale=0.1),
             "lm_head.weight": _random(gen, draft_vocab, hidden, scale=0.5),
             "midlayer.hidden_norm.weight": 1 + _random(gen, hidden, scale=0.1)}
    state |= _layer(gen, "midlayer.", hidden, heads, kv, inter, hd, 2 * hidden, norm=True)
    if draft_vocab < vocab:
        used = torch.randperm(vocab, generator=gen)[:draft_vocab].sort().values
        state["d2t"] = used - torch.arange(draft_vocab)  # int64
        state["t2d"] = torch.zeros(vocab, dtype=torch.bool).index_fill_(0, used, True)
    if embed:
        state["embed_tokens.weight"] = target.model.get_input_embeddings().weight.detach().clone()
    config = _base_config(target, "bfloat16" if dtype == torch.bfloat16 else "float16")
    config |= {"architectures": ["LlamaForCausalLMEagle3"], "draft_vocab_size": draft_vocab}
    return _save(directory, config, state, weights, dtype)


def read_state(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, floats as float32 (the values the drafter computes with)."""
    from safetensors.torch import load_file

    path = directory / "model.safetensors"
    state = load_file(str(path)) if path.is_file() else torch.load(directory / "pytorch_model.bin", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# --------------------------------------------------------------------------- the published forwards


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, positions, theta):
    """cnets1.py / cnets.py ``apply_rotary_pos_emb``: (heads, n, hd) rotated by position."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = positions[:, None].float() * inv[None]  # (n, hd / 2)
    emb = torch.cat([freqs, freqs], dim=-1)
    half = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], dim=-1)
    return x * emb.cos() + half * emb.sin()


def _attention(sd, prefix, a, heads, kv, theta):
    """``LlamaAttention.forward`` over the whole sequence, causal: (n, in) -> (n, H)."""
    n = a.shape[0]
    q = a @ sd[f"{prefix}q_proj.weight"].T + sd.get(f"{prefix}q_proj.bias", 0)
    k = a @ sd[f"{prefix}k_proj.weight"].T + sd.get(f"{prefix}k_proj.bias", 0)
    v = a @ sd[f"{prefix}v_proj.weight"].T + sd.get(f"{prefix}v_proj.bias", 0)
    hd = q.shape[1] // heads
    q, k, v = (t.view(n, -1, hd).transpose(0, 1) for t in (q, k, v))  # (heads or kv, n, hd)
    positions = torch.arange(n)
    q, k = _rope(q, positions, theta), _rope(k, positions, theta)
    k, v = k.repeat_interleave(heads // kv, 0), v.repeat_interleave(heads // kv, 0)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd) + torch.full((n, n), float("-inf")).triu(1)
    out = torch.softmax(scores, dim=-1) @ v  # (heads, n, hd)
    return out.transpose(0, 1).reshape(n, -1) @ sd[f"{prefix}o_proj.weight"].T


def _mlp(sd, prefix, x):
    gate, up = x @ sd[f"{prefix}gate_proj.weight"].T, x @ sd[f"{prefix}up_proj.weight"].T
    return (torch.nn.functional.silu(gate) * up) @ sd[f"{prefix}down_proj.weight"].T


def eagle1_forward(sd, config, embeds, features):
    """cnets1.py ``Model.forward``: fc([embed ‖ feature]) then the layers, layer 0 without input norm: (n, H)."""
    eps, theta, heads = config["rms_norm_eps"], config["rope_theta"], config["num_attention_heads"]
    kv = config["num_key_value_heads"]
    h = torch.cat([embeds, features], dim=-1) @ sd["fc.weight"].T + sd.get("fc.bias", 0)
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}."
        a = h if i == 0 else _rms(h, sd[f"{p}input_layernorm.weight"], eps)
        h = h + _attention(sd, f"{p}self_attn.", a, heads, kv, theta)
        h = h + _mlp(sd, f"{p}mlp.", _rms(h, sd[f"{p}post_attention_layernorm.weight"], eps))
    return h


def eagle3_forward(sd, config, embeds, hidden):
    """cnets.py ``LlamaDecoderLayeremb.forward`` over the whole sequence: ``hidden`` (n, H) is fc of the target's
    features, or the head's own output at the parent for a tree node; returns the layer output (n, H)."""
    eps, theta, heads = config["rms_norm_eps"], config["rope_theta"], config["num_attention_heads"]
    kv, p = config["num_key_value_heads"], "midlayer."
    a = torch.cat([_rms(embeds, sd[f"{p}input_layernorm.weight"], eps), _rms(hidden, sd[f"{p}hidden_norm.weight"], eps)],
                  dim=-1)
    h = hidden + _attention(sd, f"{p}self_attn.", a, heads, kv, theta)
    return h + _mlp(sd, f"{p}mlp.", _rms(h, sd[f"{p}post_attention_layernorm.weight"], eps))


def eagle3_probs(sd, config, out, vocab):
    """``topK_genrate``: lm_head(norm(out)) over the draft vocabulary, as target ids (d + d2t[d])."""
    logits = _rms(out, sd["norm.weight"], config["rms_norm_eps"]) @ sd["lm_head.weight"].T
    draft = torch.softmax(logits, dim=-1)
    full = torch.zeros(*draft.shape[:-1], vocab)
    ids = torch.arange(draft.shape[-1]) + sd["d2t"] if "d2t" in sd and draft.shape[-1] < vocab else torch.arange(vocab)
    full[..., ids] = draft
    return full
