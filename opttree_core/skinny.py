"""Faster CPU matmuls for the few-row inputs of decoding and tree verification.

A decoding step multiplies every weight matrix by a handful of rows: 1 for
autoregressive decoding, a tree's n nodes for verification, a tree layer for drafting.
On the project's 2-core CPU, torch's ``F.linear`` runs such skinny products far below
memory bandwidth: SmolLM2-135M's 90 MLP matrices take 24 ms for 1 row and 38 ms for 2,
while ``W @ xᵀ`` (a column-major right operand) takes 16 ms for 2 rows. So for 2 to
``MAX_ROWS`` rows a ``SkinnyLinear`` computes ``(W @ xᵀ)ᵀ``, and a single row is padded
to two first; larger inputs (prefill, training) keep ``F.linear``.
``benchmarks/bench_skinny.py`` measures both kernels per row count on the machine at hand.

The patch changes the summation order only, so results agree with ``F.linear`` to float
rounding. It is applied to CPU models only and to every consumer of a model alike (the
autoregressive baseline included), so speedups measured with it stay fair.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MAX_ROWS = 8


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through ``W @ xᵀ`` when ``x`` has 1 to ``MAX_ROWS`` rows."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if not 1 <= rows <= MAX_ROWS:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:
        flat = flat.repeat(2, 1)
    out = (weight @ flat.T).T[:rows]
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


class SkinnyLinear(nn.Linear):
    """An ``nn.Linear`` whose forward takes the skinny-product kernel for 1 to ``MAX_ROWS`` rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return skinny_linear(x, self.weight, self.bias)


def use_skinny_matmul(model: nn.Module, on: bool = True) -> int:
    """Turn every plain ``nn.Linear`` of a CPU ``model`` into a ``SkinnyLinear`` in place (``on=False``:
    back again).

    Parameters, state-dict keys and hooks stay as they are. Returns how many layers changed;
    0 for a model on another device (GPU kernels need no help with skinny products).
    """
    before, after = (nn.Linear, SkinnyLinear) if on else (SkinnyLinear, nn.Linear)
    changed = 0
    for module in model.modules():
        if type(module) is before and module.weight.device.type == "cpu":
            module.__class__ = after
            changed += 1
    return changed


def uses_skinny_matmul(model: nn.Module) -> bool:
    return any(type(module) is SkinnyLinear for module in model.modules())
