"""``python -m opttree_core profile``: measure (or read the cached) latency profile OPT-Tree auto
uses on this machine (``opttree_core/profiling.py``), and show the budgets it picks on a prompt.

    python -m opttree_core profile --target smollm2-135m --draft eagle-smollm2 [--fresh] [--out P]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ..api import encode_prompt
from ..decoding import DecodeConfig, generate
from ..drafters.registry import load_drafter
from ..errors import report_errors
from ..models import load_model
from ..policies.auto import DEFAULT_SIZES, OptTreeAutoConfig, OptTreeAutoPolicy
from ..profiling import cached_profile, write_profile


def _profile_command(args) -> dict:
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # part of the profile's key
    target = load_model(args.target)
    drafter = load_drafter(args.draft, target)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    profile, path = cached_profile(target.model, drafter, sizes, args.repeats, args.context_len, fresh=args.fresh)
    print(f"hardware profile: {profile.key['device']}, {profile.key['threads']} threads, "
          f"{profile.key['dtype']}, context {profile.key['context_len']} ({path})")
    print(profile.table())
    if args.out is not None:
        print(f"written to {write_profile(profile, args.out)}")
    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=args.max_nodes), profile=profile)
    prompt = encode_prompt(target.tokenizer, args.prompt, chat=True)
    result = generate(target.model, drafter, policy, prompt, DecodeConfig(max_new_tokens=args.max_new_tokens))
    picked = [c.nodes for c in policy.choices]
    layers = [c.layers for c in policy.choices]
    print(f"auto on {args.prompt!r} ({len(picked)} steps, max_nodes {args.max_nodes}): n* median "
          f"{int(np.median(picked))} (range {min(picked)}-{max(picked)}), layers median {int(np.median(layers))}, "
          f"modelled {np.mean([c.tokens_per_s for c in policy.choices]):.1f} tok/s; measured MAL "
          f"{result.mal:.2f}, {result.tokens_per_s:.1f} tok/s")
    return {"profile": str(path), "picked": picked}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m opttree_core profile",
                                description="measure (or read the cached) hardware profile and show what auto picks")
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--draft", default="eagle-smollm2")
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="tree sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--context-len", type=int, default=256)
    p.add_argument("--fresh", action="store_true", help="measure again even when a cached profile exists")
    p.add_argument("--out", type=Path, default=None, help="also write the profile here")
    p.add_argument("--prompt", default="Explain in three sentences why the sky is blue.",
                   help="a typical prompt decoded with auto to show the budgets it picks")
    p.add_argument("--max-nodes", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return 0 if report_errors(_profile_command, args) is not None else 2


if __name__ == "__main__":
    sys.exit(main())
