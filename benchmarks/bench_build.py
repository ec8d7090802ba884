"""Per-step build overhead: the host time each policy spends building one tree, apart from its drafter.

A table drafter (no model: q below a node is a fixed row of a random table, gathered on the device)
feeds every registered policy at each node budget; the time inside the drafter's calls is
subtracted, so what is left is the policy's own Python and kernel-launch work per tree, what a GPU
exposes and a CPU's slow forwards hide. Runs against any version of the engine with
``policy.build`` (before/after comparisons: set PYTHONPATH to each checkout in turn).

    .venv/bin/python benchmarks/bench_build.py [--device cpu] [--budgets 8 16 32 64] [--trees 200] [--clock cpu]

Clocks: ``wall`` (default) is host wall time, which on a GPU includes waiting at host reads;
``cpu`` is this thread's CPU time (``time.thread_time``), which other processes sharing the cores
do not inflate: the one to compare Python overhead on a busy CPU (with OMP_NUM_THREADS=1, so torch
computes on this thread). Report the machine's load (``uptime``) with the figures.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from opttree_core.policies.registry import POLICIES, policy_for_budget

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from golden import flat_profile  # noqa: E402  opt-tree-auto's fixed profile: trees independent of the machine


class TableDrafter:
    """q below a node = row ``token`` of a fixed random table (V, V) on ``device``; counts its seconds."""

    name = "table"

    def __init__(self, vocab: int, device, sharpness: float = 3.0, seed: int = 0, clock=time.perf_counter):
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.softmax(sharpness * torch.randn(vocab, vocab, generator=gen), dim=1).to(device)
        self.vocab_size, self.root, self.seconds, self.clock = vocab, 0, 0.0, clock

    def start(self, prompt_ids, features=None):
        self.root = int(prompt_ids[-1])

    def root_probs(self):
        start = self.clock()
        probs = self.table[self.root]  # (V,)
        self.seconds += self.clock() - start
        return probs

    def expand(self, layer):
        start = self.clock()
        probs = self.table[layer.tokens]  # (m, V)
        self.seconds += self.clock() - start
        return probs

    def commit(self, tokens, features=None, accepted_slots=()):
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_builds(policy, drafter: TableDrafter, device: torch.device, trees: int, depth_cap: int = 64) -> dict:
    """Host ms per tree of ``policy.build`` minus the drafter's, the median over ``trees`` trees (a
    median, so that another process taking the core now and then does not count), and the drafter's
    mean; roots cycle through the vocabulary, two unrecorded trees warm up."""
    for root in range(2):
        drafter.start(torch.tensor([root]))
        policy.build(drafter, root, depth_cap, device)
    _sync(device)
    own, draft, nodes = [], 0.0, 0
    for i in range(trees):
        root = i % drafter.vocab_size
        drafter.start(torch.tensor([root]))
        drafter.seconds, start = 0.0, drafter.clock()
        nodes += policy.build(drafter, root, depth_cap, device).n_nodes - 1
        own.append(drafter.clock() - start - drafter.seconds)
        draft += drafter.seconds
    _sync(device)
    return {"build_ms": statistics.median(own) * 1e3, "draft_ms": draft / trees * 1e3, "nodes": nodes / trees}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def build_overheads(device="cpu", policies=None, budgets=(8, 16, 32, 64), trees: int = 200,
                    vocab: int = 512, clock: str = "wall") -> list[dict]:
    """One row per policy × budget: policy, budget, build_ms, draft_ms, nodes (per tree)."""
    device = torch.device(device)
    drafter, rows = TableDrafter(vocab, device, clock=CLOCKS[clock]), []
    for name in policies or sorted(POLICIES):
        for budget in budgets:
            policy = policy_for_budget(name, budget)
            if name == "opt-tree-auto":
                policy.use_profile(flat_profile())
            rows.append({"policy": name, "budget": budget, **time_builds(policy, drafter, device, trees)})
    return rows


def markdown(rows: list[dict]) -> str:
    """Policies × budgets; cells: the policy's own ms per tree, median (mean drafted nodes)."""
    budgets = sorted({r["budget"] for r in rows})
    out = ["| policy | " + " | ".join(f"n={b}" for b in budgets) + " |",
           "| --- | " + " | ".join("---:" for _ in budgets) + " |"]
    for name in dict.fromkeys(r["policy"] for r in rows):
        cells = {r["budget"]: f"{r['build_ms']:.2f} ({r['nodes']:.0f})" for r in rows if r["policy"] == name}
        out.append(f"| {name} | " + " | ".join(cells.get(b, "–") for b in budgets) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--policies", nargs="+", default=None)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = p.parse_args(argv)
    rows = build_overheads(args.device, args.policies, tuple(args.budgets), args.trees, clock=args.clock)
    print(f"policy's own host ms per tree ({args.clock} clock), median (mean drafted nodes), {args.trees} trees, "
          f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
