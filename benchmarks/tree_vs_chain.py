"""Where a bench run's tree method and its chain peer (HF assisted generation) spend their time, and
what the tree's shape bought: read from a run folder's results and tree logs, nothing re-run.

    .venv/bin/python benchmarks/tree_vs_chain.py benchmarks/results/qwen-pair-hf --draft-forward-ms 29

It prints
- each method's seconds per prompt, split into drafting, the target's forwards and the rest (for a
  tree method the rest is the time outside its steps, essentially the prompt's prefill; for a peer
  the bench counts the target's forwards, prefill included, and everything else as drafting);
- the draft's calibration: of the drafted children whose parent was accepted, the share accepted,
  by the draft probability q;
- what the tree's width bought: the share of accepted drafted tokens that were not their parent's
  top draft (a chain of top drafts could not have had them), and the share of steps (and of their
  tokens) whose deepest path was accepted whole, where the tree ended before the draft went wrong;
- the floor of the tree method's time at its own MAL: the time outside its steps, plus per step its
  mean verification and one one-row draft forward (``--draft-forward-ms``, from
  ``bench_costs.py --weights``) per accepted draft token, no forward wasted and no width; and the
  peer's time over that floor: the most any tree policy with this MAL, draft and target could gain.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from opttree_core.records import read_log
from treeviz.analysis import nodes_with_parent_state

Q_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def time_split(results: pd.DataFrame) -> pd.DataFrame:
    """Per method kind: mean seconds per prompt, drafting, target forwards, the rest; steps and MAL."""
    sums = results.groupby("kind")[["seconds", "draft_s", "verify_s", "build_s", "steps", "new_tokens"]].sum()
    prompts = results.groupby("kind")["prompt_id"].nunique()
    split = sums[["seconds", "draft_s", "verify_s", "build_s"]].div(prompts, axis=0)
    split["rest"] = split["seconds"] - split[["draft_s", "verify_s", "build_s"]].sum(axis=1)
    split["steps"] = sums["steps"] / prompts
    split["mal"] = sums["new_tokens"] / sums["steps"]
    return split


def step_nodes(run: Path, results: pd.DataFrame) -> pd.DataFrame:
    """Every drafted node of every tree step of the run (root excluded), with ``parent_accepted``."""
    frames = [nodes_with_parent_state(read_log(run / log_dir)).assign(log=log_dir)
              for log_dir in results["log_dir"].dropna()]
    return pd.concat(frames, ignore_index=True)


def calibration(nodes: pd.DataFrame) -> pd.DataFrame:
    """Children of accepted parents by draft probability q: how many, the share accepted, mean q."""
    children = nodes[nodes["parent_accepted"]]
    bins = pd.cut(children["q"], Q_BINS, include_lowest=True)
    return children.groupby(bins, observed=True).agg(children=("accepted", "size"), accepted=("accepted", "mean"),
                                                      mean_q=("q", "mean"))


def shape_use(nodes: pd.DataFrame) -> dict:
    """What the tree's width and depth bought (see the module docstring)."""
    accepted = nodes[nodes["accepted"]]
    per_step = nodes.groupby(["log", "step"]).agg(depth=("depth", "max"), taken=("accepted", "sum"))
    whole = per_step["taken"] >= per_step["depth"]
    return {"accepted drafted tokens": len(accepted),
            "not their parent's top draft": float((accepted["rank"] > 0).mean()),
            "steps whose deepest path was accepted whole": float(whole.mean()),
            "their share of accepted drafted tokens": float(per_step.loc[whole, "taken"].sum() / per_step["taken"].sum())}


def floor_ratio(split: pd.DataFrame, tree: str, peer: str, draft_forward_s: float) -> tuple[float, float]:
    """(the tree method's floor in seconds per prompt, the peer's seconds over it)."""
    t = split.loc[tree]
    per_step = t["verify_s"] / t["steps"] + (t["mal"] - 1.0) * draft_forward_s
    floor = t["rest"] + t["steps"] * per_step
    return float(floor), float(split.loc[peer, "seconds"] / floor)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a bench run folder with one tree method and an hf-assisted peer")
    p.add_argument("--draft-forward-ms", type=float, required=True, help="one one-row draft forward, in ms")
    args = p.parse_args(argv)
    results = pd.read_parquet(args.run / "results.parquet")
    split = time_split(results)
    with pd.option_context("display.width", 160, "display.precision", 3):
        print("seconds per prompt\n", split, "\n")
        nodes = step_nodes(args.run, results)
        print("draft calibration (children of accepted parents)\n", calibration(nodes), "\n")
    for what, value in shape_use(nodes).items():
        print(f"{what}: {value:.3f}" if isinstance(value, float) else f"{what}: {value}")
    floor, ratio = floor_ratio(split, "tree", "hf-assisted", args.draft_forward_ms / 1e3)
    print(f"\ntree floor at its MAL, one-row draft forwards, none wasted: {floor:.2f} s a prompt; "
          f"HF assisted over it: {ratio:.3f}x (now: {split.loc['hf-assisted', 'seconds'] / split.loc['tree', 'seconds']:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
