"""CPU kernel benchmark: what the skinny-matmul kernel and a draft vocabulary save per call.

For the embedded target after a 300-token prefix, times one forward pass over q new
tokens (q = 1 is an autoregressive step, q > 1 a tree verification under a tree mask)
with ``nn.Linear``'s own kernel and with ``SkinnyLinear`` (``opttree_core/skinny.py``),
interleaved, median of --repeats. Then times one EAGLE-head draft layer of w nodes with
the full vocabulary and with draft vocabularies of K tokens (``draft_vocab.py``).
Prints milliseconds and the ratios that matter: skinny / plain per q, each verify size
against an AR step (the marginal cost of verifying more nodes), and draft-layer cost per K.

    .venv/bin/python benchmarks/bench_skinny.py [--sizes 1 2 4 8 16 32] [--vocab 0 16384 8192 4096]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from transformers import DynamicCache

from opttree_core import skinny
from opttree_core import load_drafter
from opttree_core.draft_vocab import VocabHead
from opttree_core.modelcall import forward, keep_prefix
from opttree_core.models import load_model
from opttree_core.skinny import use_skinny_matmul


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="tokens per forward pass")
    p.add_argument("--vocab", type=int, nargs="+", default=[0, 16384, 8192, 4096], help="draft vocabularies (0: full)")
    p.add_argument("--width", type=int, nargs="+", default=[1, 4, 8], help="nodes per draft layer")
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--draft", default="eagle-smollm2")
    p.add_argument("--max-rows", type=int, default=skinny.MAX_ROWS,
                   help="largest row count that takes the skinny kernel (to try other cut-offs)")
    return p.parse_args()


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    args = parse_args()
    skinny.MAX_ROWS = args.max_rows
    target = load_model("smollm2-135m")
    model = target.model
    prefix = torch.randint(1000, 20000, (args.context,), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=model.config)
    forward(model, cache, prefix, torch.arange(args.context))

    def verify(q: int):
        keep_prefix(cache, args.context)
        allowed = torch.ones(q, args.context + q, dtype=torch.bool).tril(args.context) if q > 1 else None
        forward(model, cache, prefix[:q], torch.arange(args.context, args.context + q), allowed)

    times = {True: {}, False: {}}
    for _ in range(3):  # rounds, so slow drifts hit both kernels alike
        for q in args.sizes:
            for on in (False, True):
                use_skinny_matmul(model, on=on)
                times[on].setdefault(q, []).append(median_ms(lambda: verify(q), args.repeats // 3 or 1))
    print(f"target forward after {args.context} tokens, ms (median over {3 * (args.repeats // 3 or 1)} runs; "
          f"skinny kernel up to {skinny.MAX_ROWS} rows)")
    print("| q | nn.Linear | skinny | skinny / nn.Linear | q vs AR (nn.Linear) | q vs AR (skinny) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    ms = {k: {q: statistics.median(v) for q, v in d.items()} for k, d in times.items()}
    base = {k: ms[k].get(1) for k in ms}
    for q in args.sizes:
        vs_ar = [f"{ms[k][q] / base[k]:.2f}×" if base[k] else "" for k in (False, True)]
        print(f"| {q} | {ms[False][q]:.1f} | {ms[True][q]:.1f} | {ms[True][q] / ms[False][q]:.2f}× | "
              f"{vs_ar[0]} | {vs_ar[1]} |")

    use_skinny_matmul(model, on=True)
    drafter = load_drafter(args.draft, target, draft_vocab=0)
    hidden = model.config.hidden_size
    print(f"\n{args.draft}: one draft layer (head pass + q over the vocabulary), ms")
    print("| nodes | " + " | ".join("full" if k == 0 else f"K={k}" for k in args.vocab) + " |")
    print("| ---: |" + " ---: |" * len(args.vocab))
    heads = {k: VocabHead(model.get_output_embeddings(), None if k == 0 else
                          load_drafter(args.draft, target, draft_vocab=k).out.vocab) for k in args.vocab}
    for width in args.width:
        feats = torch.randn(width, hidden)
        embeds = torch.randn(width, hidden)
        row = []
        for k in args.vocab:
            def layer():
                with torch.inference_mode():
                    head_cache = DynamicCache(config=drafter.head.config)
                    out = drafter.head(embeds, feats, torch.arange(width), head_cache)
                    heads[k].probs(out, 1.0)
            row.append(median_ms(layer, args.repeats))
        print(f"| {width} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
