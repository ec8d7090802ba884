"""Int8 and int4 weight-only linear layers for a draft model on a CPU.

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

``Int4Linear`` reads about a third of the bf16 bytes: 4-bit weights in groups of ``GROUP`` inputs, each
group with its own scale and offset (asymmetric, round to nearest), multiplied through torch's
``aten._weight_int4pack_mm_for_cpu`` for up to ``INT4_MAX_ROWS`` rows. The pair's GGUF weights are
mostly Q4_K, 4-bit groups of 32 with their own scale and minimum, so little is lost that the file
had not already lost. Measured on the same machine (``bench_costs.py --weights int8,int4``), one forward
of q tokens: q = 1: 29 ms; 2: 31; 4: 40; 8: 65 (int8 in the same run: 45, 48, 56, and 104 through bf16 at 8
rows). A layer whose shape the kernel cannot pack (outputs not a multiple of 16, inputs not of ``GROUP``)
stays int8.

More rows than a quantized kernel takes go through the original weight, packed once for oneDNN
(``invariant.pack_weight``, the target's products' layout) up to ``PACKED_MAX_ROWS`` rows; beyond,
``F.linear``. Measured on the 2-core Xeon with AMX, the 0.5B draft's forward (int4): a tree layer of
12-16 rows 78-82 ms packed against 102-106 through ``F.linear``, its layers' products for a
56-token prompt 27 ms against 44; at 741 rows ``F.linear`` was faster. What packing costs is a
copy of the original weights in oneDNN's layout, 1 GB for the 0.5B in bfloat16.

``quantize_linears(model)`` replaces every ``nn.Linear`` in place (the LM head included; the input
embeddings stay as they are). Targets are never quantized.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .errors import OptTreeError
from .invariant import PacksWeight, packed_product

WEIGHT_FORMATS = ("int8", "int4")  # what ``load_model(weights=)`` and a draft spec's ":int8" / ":int4" take
MAX_ROWS = 4  # more rows than this: the original weight (see above)
INT4_MAX_ROWS = 8
PACKED_MAX_ROWS = 512  # past the quantized kernel's rows and up to this many: the original weight packed (above)
GROUP = 32  # inputs per int4 scale and offset (the kernel takes 32, 64, 128 or 256)
INT4_ROWS_MULTIPLE = 16  # the int4 kernel packs output rows in sixteens


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (N, K) as int8 rows and one float32 scale per row: ``weight ≈ q * scale[:, None]``."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale


def int4_groups(weight: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``weight`` (N, K) as 4-bit codes 0..15 (int32, (N, K)) with a scale and a minimum per group of
    ``group`` inputs (float32, (N, K // group)): ``weight ≈ codes * scale + minimum`` group by group."""
    rows, cols = weight.shape
    w = weight.detach().float().reshape(rows, cols // group, group)
    low, high = w.amin(-1), w.amax(-1)
    scale = ((high - low) / 15.0).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return codes.reshape(rows, cols), scale, low


def int4_fits(linear: nn.Linear) -> bool:
    """Whether the int4 kernel can pack ``linear``'s weight."""
    return linear.out_features % INT4_ROWS_MULTIPLE == 0 and linear.in_features % GROUP == 0


class WeightOnlyLinear(PacksWeight, nn.Module):
    """What the weight-only layers share: ``nn.Linear``'s shape, the original weight (``dense``) and
    bias, and a forward that multiplies up to ``KERNEL_ROWS`` rows through the quantized kernel
    (``_product``, in the input's dtype) and more through the original weight, packed once
    (``PacksWeight``)."""

    packs = "dense"
    FORMAT = ""  # "int8" / "int4": what ``weight_format`` and a spec's suffix call it
    KERNEL_ROWS = 0

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("dense", linear.weight.detach())  # shared with a tied embedding, not copied
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def _product(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > self.KERNEL_ROWS:
            return self._dense_product(flat).reshape(*x.shape[:-1], self.out_features)
        out = self._product(flat.contiguous())
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def _dense_product(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat``'s product with the original weight: packed for oneDNN up to ``PACKED_MAX_ROWS`` rows
        (packed on first use), else ``F.linear``'s."""
        if flat.shape[0] > PACKED_MAX_ROWS or flat.requires_grad:
            return F.linear(flat, self.dense, self.bias)
        return packed_product(self.packed_weight(), self.dense, self.bias)(flat.contiguous())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.FORMAT} weights"


class Int8Linear(WeightOnlyLinear):
    """``nn.Linear`` with int8 weights and per-row scales for up to ``MAX_ROWS`` rows, and the original
    weight for more."""

    FORMAT, KERNEL_ROWS = "int8", MAX_ROWS

    def __init__(self, linear: nn.Linear):
        super().__init__(linear)
        q, scale = int8_rows(linear.weight)
        self.register_buffer("weight", q)  # (out, in): ``weight.shape`` reads like nn.Linear's
        self.register_buffer("scales", scale.to(linear.weight.dtype))

    def _product(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales.to(flat.dtype))


class Int4Linear(WeightOnlyLinear):
    """``nn.Linear`` with 4-bit weights in groups of ``GROUP`` inputs for up to ``INT4_MAX_ROWS`` rows,
    and the original weight for more."""

    FORMAT, KERNEL_ROWS = "int4", INT4_MAX_ROWS

    def __init__(self, linear: nn.Linear):
        if not int4_fits(linear):
            raise OptTreeError(f"an int4 layer needs outputs in multiples of {INT4_ROWS_MULTIPLE} and inputs in "
                               f"multiples of {GROUP}, got {linear.out_features} x {linear.in_features}")
        super().__init__(linear)
        codes, scale, low = int4_groups(linear.weight)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        # the kernel computes (code - 8) * scale + offset: offset = minimum + 8 * scale, as (K // GROUP, N, 2)
        pairs = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scales_and_offsets", pairs.to(linear.weight.dtype))

    @property
    def weight(self) -> torch.Tensor:
        return self.dense  # ``weight.shape`` and dtype read like nn.Linear's

    def _product(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP,
                                                          self.scales_and_offsets.to(flat.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()} in groups of {GROUP}"


def weight_only_linear(linear: nn.Linear, weights: str) -> WeightOnlyLinear:
    """``linear`` with ``weights``-bit weights (int4 where the kernel can pack it, int8 where not)."""
    return Int4Linear(linear) if weights == "int4" and int4_fits(linear) else Int8Linear(linear)


def quantize_linears(model: nn.Module, weights: str = "int8") -> int:
    """Every ``nn.Linear`` (and ``SkinnyLinear``) of a CPU ``model`` replaced by an ``Int8Linear`` or an
    ``Int4Linear`` (``weights``), in place; returns how many. One-line error for a format other than
    ``WEIGHT_FORMATS`` or a GPU model."""
    if weights not in WEIGHT_FORMATS:
        raise OptTreeError(f"unknown weight format '{weights}': expected one of {', '.join(WEIGHT_FORMATS)}")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if any(module.weight.device.type != "cpu" for _, module in targets):
        raise OptTreeError(f"{weights} weight-only layers run on a CPU only (torch's CPU kernels); "
                           "load the model on the CPU or without --draft-weights")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, weight_only_linear(module, weights))
    return len(targets)


def weight_products(model: nn.Module) -> str | None:
    """What a profile of a draft ``model`` depends on: None without weight-only layers, else its format
    and how rows past the quantized kernel are multiplied."""
    weights = weight_format(model)
    return None if weights is None else f"{weights}, original weight packed up to {PACKED_MAX_ROWS} rows"


def weight_format(model: nn.Module) -> str | None:
    """"int4" when ``model`` has ``Int4Linear`` layers, "int8" when it has ``Int8Linear`` ones only, else None."""
    formats = {m.FORMAT for m in model.modules() if isinstance(m, WeightOnlyLinear)}
    return "int4" if "int4" in formats else "int8" if "int8" in formats else None
