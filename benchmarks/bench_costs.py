"""The target's cost of one forward of q new tokens (tree verification's T(q)), per kernel set, on
the machine at hand: the roofline a tree policy lives on.

For each kernel set (stock ``F.linear`` + SDPA; ``skinny.py``'s few-row products, float32 only;
``invariant.py``'s row-count-invariant kernels, their weights packed once for oneDNN, and "unpacked",
the same kernels reordering each weight on every product as ``F.linear`` does; with ``--weights int8`` (or ``int4``, or ``int8,int4``) also
``weight_only.py``'s weight-only layers, each on a quantized copy: what a draft model runs) it prints the fastest of ``--repeats`` passes at a
``--context``-token cache for q = 1, 2, 4, ..., and T(q)/T(1). Kernel sets are interleaved size by
size in one process, so their ratios compare; absolute times depend on the machine and its load.

    .venv/bin/python benchmarks/bench_costs.py --target qwen2.5-coder-1.5b --dtype bfloat16
    .venv/bin/python benchmarks/bench_costs.py --target qwen2.5-coder-0.5b --weights int8,int4
"""
from __future__ import annotations

import argparse
import copy

import torch

from opttree_core.invariant import use_invariant_kernels
from opttree_core.models import load_model
from opttree_core.machine import describe_machine
from opttree_core.profiling import verify_latencies
from opttree_core.skinny import use_skinny_matmul
from opttree_core.weight_only import WEIGHT_FORMATS, quantize_linears


def kernel_sets(model, weights: tuple[str, ...] = ()) -> dict:
    """Kernel set name → a function giving the model patched for it."""
    def patched(*patches):
        def apply():
            for patch in patches:
                patch(model)
            return model
        return apply

    sets = {"stock": patched(lambda m: use_invariant_kernels(m, on=False), lambda m: use_skinny_matmul(m, on=False)),
            "invariant": patched(lambda m: use_skinny_matmul(m, on=False), use_invariant_kernels),
            "unpacked": patched(lambda m: use_skinny_matmul(m, on=False),
                                lambda m: use_invariant_kernels(m, packed=False))}
    if model.dtype == torch.float32:
        sets["skinny"] = patched(lambda m: use_invariant_kernels(m, on=False), use_skinny_matmul)
    for bits in weights:
        quantized = copy.deepcopy(model)
        use_invariant_kernels(quantized, on=False)
        use_skinny_matmul(quantized, on=False)
        quantize_linears(quantized, bits)
        sets[bits] = lambda quantized=quantized: quantized
    return sets


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--sizes", default="1,2,4,8,16,32")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--weights", default="", help="also time weight-only layers: int8, int4 or int8,int4")
    args = p.parse_args()
    target = load_model(args.target, dtype=args.dtype, invariant=False)
    model, sizes = target.model, tuple(int(s) for s in args.sizes.split(","))
    print(f"{args.target}, {str(model.dtype).removeprefix('torch.')}, {describe_machine(model.device)}, "
          f"{torch.get_num_threads()} threads, context {args.context}, "
          f"fastest of {args.repeats}")
    weights = tuple(w for w in args.weights.split(",") if w)
    unknown = [w for w in weights if w not in WEIGHT_FORMATS]
    if unknown:
        p.error(f"unknown weight format {unknown[0]!r}: expected one of {', '.join(WEIGHT_FORMATS)}")
    sets = kernel_sets(model, weights)
    results = {name: [] for name in sets}
    for size in sizes:  # kernel sets interleaved size by size
        for name, variant in sets.items():
            results[name].append(verify_latencies(variant(), (size,), args.repeats, args.context)[0][0])
    print(f"{'kernels':<10} " + " ".join(f"{f'q={s}':>8}" for s in sizes) + "   T(q)/T(1)")
    for name, times in results.items():
        print(f"{name:<10} " + " ".join(f"{t * 1e3:>6.0f}ms" for t in times) + "   "
              + " ".join(f"{t / times[0]:.2f}" for t in times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
