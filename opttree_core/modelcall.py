"""The one path through which every model is called: target verification, drafting
and the autoregressive baseline all use ``forward`` (so comparisons are fair).

Transformers is wrapped through its public inputs only: an additive float 4D mask of
shape (1, 1, q_len, past_len + q_len), explicit ``position_ids`` and a ``DynamicCache``.
"""
from __future__ import annotations

import time

from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass(frozen=True)
class ForwardOut:
    logits: torch.Tensor  # (q_len, vocab) float32
    hidden: torch.Tensor  # (q_len, hidden) last-layer features after the final norm: logits = lm_head(hidden)
    # (q_len, k · hidden) the hidden states entering the k decoder layers a drafter asked for (HF
    # ``hidden_states[i]``, before any final norm), concatenated in the order asked; None when none were
    layers: torch.Tensor | None = None


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(q, k) bool → (1, 1, q, k) additive mask: 0 where allowed, dtype-min elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def cache_length(cache: DynamicCache) -> int:
    return cache.get_seq_length()


def model_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def _decoder_inputs(decoder, cache: DynamicCache, position_ids: torch.Tensor, allowed: torch.Tensor | None,
                    tokens: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> dict:
    embed = decoder.get_input_embeddings() if tokens is not None else None
    device = (embed.weight if embed is not None else inputs_embeds).device
    kwargs = dict(position_ids=position_ids[None].to(device), past_key_values=cache, use_cache=True)
    if tokens is not None:
        kwargs["input_ids"] = tokens[None].to(device)  # (1, q)
    else:
        kwargs["inputs_embeds"] = inputs_embeds[None]  # (1, q, hidden)
    if allowed is not None:
        dtype = embed.weight.dtype if embed is not None else inputs_embeds.dtype
        kwargs["attention_mask"] = additive_mask(allowed.to(device), dtype)
    return kwargs


def run_decoder(decoder, cache: DynamicCache, position_ids: torch.Tensor, allowed: torch.Tensor | None,
                tokens: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """One pass of a transformers decoder stack over q new positions; returns (q, hidden).

    ``allowed`` (q, past + q) bool says which cached and new positions each query may
    attend to; ``None`` means plain causal attention over the cache.
    """
    return decoder(**_decoder_inputs(decoder, cache, position_ids, allowed, tokens, inputs_embeds)).last_hidden_state[0]


@torch.inference_mode()
def forward(model, cache: DynamicCache, tokens: torch.Tensor, position_ids: torch.Tensor,
            allowed: torch.Tensor | None = None, layers: tuple[int, ...] | None = None,
            last_logits_only: bool = False) -> ForwardOut:
    """Run a causal LM over ``tokens`` (q,) after the cached prefix; the cache grows by q entries.

    ``layers``: also return the hidden states entering these decoder layers (``ForwardOut.layers``),
    through transformers' ``output_hidden_states`` index selection; None (the default, and what every
    drafter but EAGLE-3's asks for) keeps the plain pass. ``last_logits_only``: logits (1, V) of the
    last row alone, as ``model.generate`` computes a prefill's (a long prompt's rows need none)."""
    decoder = model.get_decoder()
    inputs = _decoder_inputs(decoder, cache, position_ids, allowed, tokens, None)
    out = decoder(**inputs) if layers is None else decoder(**inputs, output_hidden_states=list(layers))
    hidden = out.last_hidden_state[0]  # (q, hidden)
    logits = model.get_output_embeddings()(hidden[-1:] if last_logits_only else hidden).float()
    if layers is None:
        return ForwardOut(logits=logits, hidden=hidden)
    chosen = torch.cat([out.hidden_states[i][0] for i in layers], dim=-1)  # (q, k · hidden)
    return ForwardOut(logits=logits, hidden=hidden, layers=chosen)


@torch.inference_mode()
def keep_positions(cache: DynamicCache, prefix_len: int, tail: torch.Tensor) -> None:
    """Keep the first ``prefix_len`` cache entries followed by the entries at positions ``tail``
    (ascending, each >= ``prefix_len``), in place.

    Used to compact the cache to the accepted path after a tree pass: ``crop`` can't select a
    path and ``reorder_cache`` works on the batch dimension only. Only the tail moves: the
    prefix stays where it is, so a step copies a few entries instead of the whole cache.
    """
    end = prefix_len + tail.numel()
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        index = tail.to(layer.keys.device)
        for name in ("keys", "values"):
            tensor = getattr(layer, name)  # (1, kv_heads, length, head_dim)
            tensor[..., prefix_len:end, :] = tensor.index_select(-2, index)
            setattr(layer, name, tensor[..., :end, :])


def keep_prefix(cache: DynamicCache, length: int) -> None:
    """Drop every cache entry at or after ``length``."""
    excess = cache_length(cache) - length
    if excess > 0:
        cache.crop(-excess)


def timed_call(sync: bool, call, *args):
    """(seconds, result) of ``call(*args)``; with ``sync`` the CUDA device is synchronised before and
    after, so the seconds include the device's work and not only the kernel launches."""
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = call(*args)
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out
