"""``make demo``: OPT-Tree against autoregressive decoding, in one run, on the models that show the method.

The models (``choose_models``): the Qwen2.5-Coder pair (the 1.5B target in bfloat16, its 0.5B sibling
drafting with int4 weights) wherever it fits: its packages installed (``make pair``), bfloat16 fast
on the device (a GPU, or a CPU with avx512_bf16 / amx_bf16: there verifying 16 tokens costs about
1.3 AR steps, so trees pay), and the memory for both. Elsewhere the embedded SmolLM2-135M drafted by
the shipped EAGLE-style head (``eagle-smollm2``), on which trees pay on some CPUs (a Xeon with AMX:
about 2-2.8x AR) and not on others (the AMD EPYCs: about 1x; README, "The roofline belongs to the
machine"); the demo says which and why. ``--target smollm2-135m`` (or any target, with ``--draft``) chooses yourself.

The policy is OPT-Tree auto (``--policy`` takes any other): it is OPT-Tree whose node budget and
threshold come from this machine's latency profile (measured once, cached), and it drafts nothing
while its cost model says drafting cannot pay, so it aims never to be slower than plain decoding.
Tree decoding must reproduce the AR tokens exactly.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import transformers

from .. import invariant
from ..decoding import DecodeConfig, generate_autoregressive
from ..drafters.registry import weight_suffix
from ..errors import report_errors
from ..metrics import speedup
from ..policies.auto import OptTreeAutoPolicy
from ..policies.registry import POLICIES, policy_for_budget
from ..records import check_log_destination
from ..session import Session
from .cli import parse_policy_params

PROMPTS = {
    "chat": "What are three good habits for staying healthy?",
    "code": "Write a Python function that checks whether a string is a palindrome.",
    "math": "A shop sells pencils at 3 for $1. How much do 12 pencils cost? Explain step by step.",
    "explain": "Explain what a hash table is to a beginner.",
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m opttree_core demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/demo", help="directory for the tree logs")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="default: 64, or 32 on the Qwen pair (whose AR baseline costs 0.3 s a token on a 2-core CPU)")
    p.add_argument("--policy", default="opt-tree-auto", choices=sorted(POLICIES),
                   help="default: opt-tree-auto, which picks n and delta every step from this machine's latency profile")
    p.add_argument("--nodes", type=int, default=None,
                   help="node budget (opt-tree-auto: the most it may draft); default: 15 for opt-tree-auto (with "
                        "the root, 16 rows: one block of the row-count-invariant kernels), else 8 (the pair's best "
                        "fixed budget, benchmarks/results/qwen-pair.md)")
    p.add_argument("--policy-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any field of the policy's config (repeatable)")
    p.add_argument("--target", default=None,
                   help="the target model (default: the Qwen2.5-Coder-1.5B where the pair fits, else SmolLM2-135M)")
    p.add_argument("--draft", default=None, help="any draft spec (default: the target's own, see DRAFTS)")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


PAIR = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
DRAFTS = {"smollm2-135m": "eagle-smollm2", PAIR[0]: PAIR[1] + ":int4"}  # a target's default draft on a CPU
# opt-tree-auto's default cap: with the root, one block of the invariant kernels (16 rows); on the pair
# auto drafts 15 nodes in 98 % of its steps when allowed 16 (benchmarks/results/qwen-pair-auto.md)
AUTO_NODES = invariant.BLOCK - 1
# the demo's need on the pair: its own memory peaked at 6.8 GiB (2.9 GiB of it the target's weights packed
# for oneDNN, invariant.py), beside up to 4.0 GiB of the memory-mapped model cache, pages the system may
# evict once packing has read them (Xeon with AMX, 2026-12-07; 7.0 GB building the caches, Zen 4, 2026-12-05)
PAIR_MEMORY = 9 * 2**30
TOKENS = {PAIR[0]: 32}  # new tokens per prompt where not 64: a later run of the pair's demo stays under 2 minutes


def pair_problem(device: str) -> str | None:
    """Why the Qwen pair cannot show the method here (None: it can)."""
    import torch

    from ..embedded import EMBEDDED, part_paths, preferred_dtype
    from ..errors import OptTreeError
    from ..memory import available_bytes, size_text

    try:
        for name in PAIR:
            part_paths(EMBEDDED[name])
    except OptTreeError as e:
        return f"its packages are not installed (make pair): {e}"
    if preferred_dtype(EMBEDDED[PAIR[0]], torch.device(device)) != torch.bfloat16:
        return ("this CPU has no native bfloat16 (avx512_bf16 or amx_bf16), and in float32 verifying 16 tokens "
                "costs the 1.5B about 4 AR steps, so trees cannot pay")
    if available_bytes(device) < PAIR_MEMORY:
        return f"it needs about {size_text(PAIR_MEMORY)} of memory and {size_text(available_bytes(device))} is free"
    return None


def choose_models(target: str | None, draft: str | None, device: str) -> tuple[str, str, str]:
    """The target, the draft and why: what the user named, else the pair where it fits, else SmolLM2."""
    if target is None:
        problem = pair_problem(device)
        target = "smollm2-135m" if problem else PAIR[0]
        why = (f"the Qwen pair cannot run here ({problem}); SmolLM2-135M runs instead, on which trees do not pay"
               if problem else "the Qwen pair fits here: bfloat16 is fast on this device and the memory suffices")
    else:
        why = "chosen with --target"
    if draft is None:
        draft = DRAFTS.get(target, "ngram")
        if device != "cpu":
            draft = weight_suffix(draft)[0]  # int8/int4 weight-only layers are CPU kernels
    return target, draft, why


def describe(policy) -> str:
    """One line saying which configuration runs and why."""
    if isinstance(policy, OptTreeAutoPolicy):
        return (f"opt-tree-auto, at most {policy.max_nodes} nodes: n and delta chosen every step from this "
                f"machine's latency profile ({policy.profile.key.get('device', '?')}, "
                f"{policy.profile.key.get('threads', '?')} threads), and no drafting while it cannot pay")
    return f"{policy.name} {asdict(policy.config)}"


def auto_summary(policy) -> str:
    if not isinstance(policy, OptTreeAutoPolicy) or not policy.choices:
        return ""
    drafted = [c.nodes for c in policy.choices if not c.skipped]
    skipped = sum(c.skipped for c in policy.choices)
    median = int(np.median(drafted)) if drafted else 0
    return f"  n* median {median}, {skipped}/{len(policy.choices)} steps without drafting"


def main(argv=None) -> int:
    args = parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    return 0 if report_errors(_demo, args) is not None else 2


def _demo(args) -> bool:
    nodes = args.nodes if args.nodes is not None else AUTO_NODES if args.policy == "opt-tree-auto" else 8
    policy = policy_for_budget(args.policy, nodes, **parse_policy_params(args.policy, args.policy_param))
    log_paths = {name: check_log_destination(Path(args.out) / name) for name in PROMPTS}  # before anything loads
    target, draft, why = choose_models(args.target, args.draft, args.device)
    config = DecodeConfig(max_new_tokens=TOKENS.get(target, 64) if args.max_new_tokens is None else args.max_new_tokens)
    session = Session.load(target, draft, policy, device=args.device)
    session.run("Hello!", max_new_tokens=4, chat=True)  # calibrates opt-tree-auto; no timed run pays a first call
    generate_autoregressive(session.target.model, session.encode("Hello!", chat=True), DecodeConfig(max_new_tokens=4))
    dtype = str(session.target.model.dtype).removeprefix("torch.")
    print(f"target: {target} ({dtype}) | draft: {draft} | {why}\n(other models, drafts and policies: "
          f"`python -m opttree_core demo -h`)\npolicy: {describe(policy)}\n"
          f"greedy, {config.max_new_tokens} new tokens, chat template\n")
    print(f"{'prompt':<8} {'MAL':>5} {'tree tok/s':>10} {'AR tok/s':>9} {'speedup':>8}  log")
    for name, text in PROMPTS.items():
        ar = generate_autoregressive(session.target.model, session.encode(text, chat=True), config)
        tree = session.run(text, config, chat=True, log_path=log_paths[name]).result
        assert tree.token_ids == ar.token_ids, "tree decoding diverged from greedy decoding"
        print(f"{name:<8} {tree.mal:>5.2f} {tree.tokens_per_s:>10.1f} {ar.tokens_per_s:>9.1f} "
              f"{speedup(tree.tokens_per_s, ar.tokens_per_s):>7.2f}x  {Path(args.out) / name}{auto_summary(policy)}")
    print("\nTree decoding produced exactly the autoregressive tokens for every prompt.")
    return True


if __name__ == "__main__":
    sys.exit(main())
