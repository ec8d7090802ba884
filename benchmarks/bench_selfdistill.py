"""Self-distillation throughput: response tokens per second of the target's batched greedy answers.

For each batch size, answers the same prompts (sorted by length, as ``self_distill`` batches them)
with the compacting generator of ``tools/train/data.py`` (finished rows leave the batch) and, with
--hf, with ``model.generate`` (finished rows run on), alternating the two per batch size. Prints
tokens/s per method and batch size and the machine's load average before and after (a shared CPU
makes every figure here an estimate: quote the load with it).

    .venv/bin/python benchmarks/bench_selfdistill.py [--prompts 32] [--batch-sizes 1 4 8 16 32] [--hf]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from opttree_core.models import load_model
from opttree_core.tools.train.data import _encode_chat, _generate_batch, _generate_batch_hf
from opttree_core.tools.train.prompts import own_prompts


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--hf", action="store_true", help="also time model.generate")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args()


def run(target, encoded, batch, max_new_tokens, generate) -> dict:
    start, tokens = time.perf_counter(), 0
    for i in range(0, len(encoded), batch):
        tokens += sum(map(len, generate(target, encoded[i:i + batch], max_new_tokens)))
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main() -> int:
    args = parse_args()
    target = load_model(args.target, device=args.device)
    prompts = own_prompts(args.prompts, seed=7)
    encoded = sorted((_encode_chat(target.tokenizer, p.text) for p in prompts), key=len)
    methods = {"compact": _generate_batch, **({"hf": _generate_batch_hf} if args.hf else {})}
    report = {"target": args.target, "prompts": len(encoded), "max_new_tokens": args.max_new_tokens,
              "threads": torch.get_num_threads(), "load_before": os.getloadavg(), "rows": []}
    for batch in args.batch_sizes:
        order = list(methods) if batch % 2 else list(reversed(methods))
        for name in order:
            row = {"method": name, "batch": batch, **run(target, encoded, batch, args.max_new_tokens, methods[name]),
                   "load": os.getloadavg()[0]}
            report["rows"].append(row)
            print(f"{name:8s} batch {batch:3d}: {row['tokens_per_s']:7.1f} tokens/s "
                  f"({row['tokens']} tokens, {row['seconds']:.1f} s, load {row['load']:.2f})", flush=True)
    report["load_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
