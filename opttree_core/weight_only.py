"""Int8 weight-only linear layers for a draft model on a CPU.

A draft needs no exactness (verification decides every token), only speed. Its forward, like the
target's, is bound by streaming its weights: the Qwen2.5-Coder-0.5B draft reads about 1 GB of bf16
weights per forward, a quarter of it its 151,936-row LM head. ``Int8Linear`` keeps each weight
matrix as int8 with one scale per output row (symmetric, round to nearest) and multiplies up to
``MAX_ROWS`` rows through torch's ``aten._weight_int8pack_mm``, reading half the bytes; more rows
go through the original weight, where that kernel is slower than bf16's own. Measured on a 2-core
Zen 4 (``benchmarks/bench_costs.py --target qwen2.5-coder-0.5b --weights int8``), one forward of q
tokens: q = 1: 42 ms int8 against 71 bf16; q = 2: 46 / 81; q = 4: 52 / 76; q = 8: 93 / 85;
q = 16: 156 / 113. What the quantized draft does to acceptance is in the pair's benchmark (it
proposes slightly different tokens, so MAL can move either way).

``quantize_linears(model)`` replaces every ``nn.Linear`` in place (the LM head included; the input
embeddings stay as they are). Targets are never quantized.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .errors import OptTreeError

WEIGHT_FORMATS = ("int8",)  # what ``load_model(weights=)`` and a draft spec's ":int8" take
MAX_ROWS = 4  # more rows than this: the original weight (see above)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (N, K) as int8 rows and one float32 scale per row: ``weight ≈ q * scale[:, None]``."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights and per-row scales for up to ``MAX_ROWS`` rows (computed in the
    input's dtype), and the original weight for more."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = int8_rows(linear.weight)
        self.register_buffer("weight", q)  # (out, in): ``weight.shape`` reads like nn.Linear's
        self.register_buffer("scales", scale.to(linear.weight.dtype))
        self.register_buffer("dense", linear.weight.detach())  # shared with a tied embedding, not copied
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > MAX_ROWS:
            return F.linear(x, self.dense, self.bias)
        out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight, self.scales.to(x.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_linears(model: nn.Module, weights: str = "int8") -> int:
    """Every ``nn.Linear`` (and ``SkinnyLinear``) of a CPU ``model`` replaced by an ``Int8Linear``, in
    place; returns how many. One-line error for a format other than ``WEIGHT_FORMATS`` or a GPU model."""
    if weights not in WEIGHT_FORMATS:
        raise OptTreeError(f"unknown weight format '{weights}': expected one of {', '.join(WEIGHT_FORMATS)}")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if any(module.weight.device.type != "cpu" for _, module in targets):
        raise OptTreeError("int8 weight-only layers run on a CPU only (aten._weight_int8pack_mm); "
                           "load the model on the CPU or without --draft-weights")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Int8Linear(module))
    return len(targets)


def weight_format(model: nn.Module) -> str | None:
    """"int8" when ``model``'s linear layers are ``Int8Linear``, else None."""
    return "int8" if any(isinstance(m, Int8Linear) for m in model.modules()) else None
