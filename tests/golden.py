"""Golden trees: every registered policy × three drafters × node budgets, digested step by step.

The fixture ``tests/data/golden_trees.json`` was recorded with the engine *before* the
tree-growth loop was rewritten (one ``grow`` loop, rule objects, drafters fed frozen
``TreeLayer``s); ``tests/test_golden_trees.py`` decodes the same grid with today's engine and
requires the same generated tokens and the same tree at every step. Regenerate it (only when
a change of trees is intended and explained) with::

    .venv/bin/python tests/golden.py tiny --out tests/data/golden_trees.json [--only POLICY]

``smollm2`` mode records the same digests for the embedded SmolLM2-135M with the shipped
drafts (minutes on a CPU; compared by hand, not in CI)::

    .venv/bin/python tests/golden.py smollm2 --out out/golden/smollm2.json
    .venv/bin/python tests/golden.py compare out/golden/before.json out/golden/after.json

Per run the digest keeps the generated tokens in clear and, per step, the node count, A,
E(A) and a sha256 of the tree's integer columns (token, parent, depth, rank, target token,
accepted), so any change of structure shows while p̂ is compared to a tolerance.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BUDGETS = (4, 16, 50)
INT_COLUMNS = ("token", "parent", "depth", "rank", "target_token", "accepted")
TINY_PROMPTS = ([5, 9, 20, 7, 33, 41, 12], [3, 3, 8, 8, 3, 3, 8, 8, 3])
SMOLLM_PROMPTS = ("Explain in three sentences why the sky is blue.",
                  "Write a Python function that returns the n-th Fibonacci number.")
# Sampled runs: (temperature, children) at n = 16 on the first prompt, to cover both sampling schemes.
SAMPLED = ((1.0, "top-k"), (1.0, "sampled"))


def flat_profile():
    """A fixed OPT-Tree-auto profile (verify cost rising with the tree, cheap draft layers), so auto's
    trees do not depend on the machine that records or checks them."""
    from opttree_core.policies.auto import Profile

    sizes = (1, 2, 4, 8, 16, 32, 64, 128)
    return Profile({"synthetic": True}, sizes, tuple(0.010 + 0.0004 * s for s in sizes), 0.002,
                   tuple(0.001 + 0.00005 * s for s in sizes))


def make_policy(name: str, nodes: int):
    from opttree_core.policies.registry import policy_for_budget

    params = {"adapt": False} if name == "opt-tree-auto" else {}  # the fixed profile, not rescaled by timings
    policy = policy_for_budget(name, nodes, **params)
    if name == "opt-tree-auto":
        policy.use_profile(flat_profile())
    return policy


def digest_log(log, token_ids: list[int]) -> dict:
    frames = log.to_frames()
    steps = []
    for step, nodes in frames.nodes.groupby("step", sort=True):
        ints = np.stack([nodes[c].to_numpy().astype(np.int64) for c in INT_COLUMNS])
        row = frames.steps.iloc[int(step)]
        steps.append({"n": int(row["n_nodes"]), "a": int(row["a"]), "ea": round(float(row["ea"]), 7),
                      "sha": hashlib.sha256(ints.tobytes()).hexdigest()[:16]})
    return {"tokens": token_ids, "steps": steps}


def decode(target_model, drafter, policy, prompt, max_new_tokens: int, temperature: float = 0.0,
           children: str = "top-k") -> dict:
    from opttree_core import DecodeConfig, TreeLog, generate

    config = DecodeConfig(max_new_tokens=max_new_tokens, temperature=temperature, children=children, seed=3)
    log = TreeLog(max_steps=max_new_tokens, max_nodes=policy.max_nodes + 1)
    result = generate(target_model, drafter, policy, torch.as_tensor(prompt), config, log=log)
    return digest_log(log, result.token_ids)


def tiny_drafters(target_model) -> dict:
    """A noisy copy of the target (independent draft LM), a random EAGLE head and the n-gram table."""
    from conftest import perturbed_copy

    from opttree_core.drafters import DraftLMDrafter, EagleDrafter, NGramDrafter
    from opttree_core.drafters.eagle import EagleHead, head_config

    with torch.random.fork_rng():
        torch.manual_seed(7)
        head = EagleHead(head_config(target_model.config)).eval()
        for p in head.parameters():  # a large init makes its choices well separated
            p.data.normal_(0, 0.2)
    return {"draft-lm": DraftLMDrafter(perturbed_copy(target_model, 3, noise=0.1)),
            "eagle": EagleDrafter(head, target_model),
            "ngram": NGramDrafter(target_model.config.vocab_size)}


def run_grid(target_model, drafters: dict, prompts, max_new_tokens: int, policies=None) -> dict:
    """{"policy n=N drafter p=I[ T=.. children]": digest} over the registered policies."""
    from opttree_core.policies.registry import POLICIES

    runs = {}
    for name in policies or sorted(POLICIES):
        for draft_name, drafter in drafters.items():
            for n in BUDGETS:
                for i, prompt in enumerate(prompts):
                    runs[f"{name} n={n} {draft_name} p={i}"] = decode(target_model, drafter, make_policy(name, n),
                                                                      prompt, max_new_tokens)
            for temperature, children in SAMPLED:
                key = f"{name} n=16 {draft_name} p=0 T={temperature:g} {children}"
                runs[key] = decode(target_model, drafter, make_policy(name, 16), prompts[0], max_new_tokens,
                                   temperature, children)
    return runs


def tiny_runs(policies=None) -> dict:
    from conftest import tiny_model

    target_model = tiny_model(seed=1)
    return run_grid(target_model, tiny_drafters(target_model), TINY_PROMPTS, 12, policies)


def smollm2_runs(policies=None) -> dict:
    from opttree_core import encode_prompt, load_drafter, load_model

    target = load_model("smollm2-135m")
    drafters = {name: load_drafter(name, target) for name in ("eagle-smollm2", "tiny-smollm2", "ngram")}
    prompts = [encode_prompt(target.tokenizer, text, chat=True).tolist() for text in SMOLLM_PROMPTS]
    return run_grid(target.model, drafters, prompts, 32, policies)


def differences(before: dict, after: dict, ea_tol: float = 1e-5, ea_rel: float = 1e-4) -> list[str]:
    """One line per run whose tokens or trees differ (or that is missing on one side). E(A) may differ
    by rounding (other thread counts sum the model's products in another order)."""
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in before or key not in after:
            out.append(f"{key}: only {'after' if key in after else 'before'}")
            continue
        b, a = before[key], after[key]
        if b["tokens"] != a["tokens"]:
            out.append(f"{key}: generated tokens differ")
        elif len(b["steps"]) != len(a["steps"]):
            out.append(f"{key}: {len(b['steps'])} steps before, {len(a['steps'])} after")
        else:
            for i, (sb, sa) in enumerate(zip(b["steps"], a["steps"])):
                if ((sb["n"], sb["a"], sb["sha"]) != (sa["n"], sa["a"], sa["sha"])
                        or abs(sb["ea"] - sa["ea"]) > ea_tol + ea_rel * abs(sb["ea"])):
                    out.append(f"{key}: step {i} differs ({sb} vs {sa})")
                    break
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["tiny", "smollm2", "compare"])
    p.add_argument("files", nargs="*", help="compare: BEFORE AFTER")
    p.add_argument("--out", type=Path)
    p.add_argument("--only", nargs="*", help="policies to (re)record; the others are kept from --out")
    args = p.parse_args(argv)
    if args.mode == "compare":
        before, after = (json.loads(Path(f).read_text()) for f in args.files)
        lines = differences(before, after)
        print("\n".join(lines) or f"identical: {len(before)} runs")
        return 1 if lines else 0
    runs = (tiny_runs if args.mode == "tiny" else smollm2_runs)(args.only)
    if args.only and args.out.is_file():
        runs = {**{k: v for k, v in json.loads(args.out.read_text()).items() if k.split(" ")[0] not in args.only},
                **runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(sorted(runs.items())), separators=(",", ":")) + "\n")
    print(f"{len(runs)} runs → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
