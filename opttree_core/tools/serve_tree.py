"""Take a tree to a serving engine: from logged runs, vLLM's best static tree and SGLang's best flags,
each with its expected MAL and its MAL replayed on the logged steps (``serving.py`` holds the math).

    python -m opttree_core serve-tree out/bench/headline --nodes 60 --max-depth 10 --out out/serve.json

Arguments are tree logs or folders holding them (a bench run's ``logs/``). The acceptance vector is
measured from the logs; the trees are the best for it under Sequoia's positional model.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..atomic import check_file_destination, write_text
from ..checks import check_int
from ..errors import OptTreeError, report_errors
from ..metrics import pooled_mal
from ..policies.sequoia import MAX_RANKS, expected_accepted, level_uniform_paths, level_uniform_tree
from ..records import read_log
from .serving import (
    acceptance_from_logs,
    best_sglang_flags,
    find_logs,
    logged_steps,
    rank_events,
    replay,
    vllm_config,
)


def _workload(paths) -> dict:
    """The logs' steps, pooled, and what they say about the trees that drafted them."""
    steps, tokens, n_steps, depths, policies, thresholds = [], 0, 0, [], set(), set()
    logs = find_logs(paths)
    for path in logs:
        data = read_log(path)
        steps += logged_steps(data)
        tokens, n_steps = tokens + int(data.steps["a"].sum()), n_steps + len(data.steps)
        depths += data.nodes.groupby("step")["depth"].max().tolist()
        policies.add(data.meta.get("policy"))
        thresholds.add((data.meta.get("policy_config") or {}).get("threshold"))
    if not steps:
        raise OptTreeError("the logs hold no steps")
    return {"n_logs": len(logs), "steps": steps, "logged_mal": pooled_mal(tokens, n_steps), "depths": np.array(depths),
            "policies": sorted(map(str, policies)), "thresholds": sorted(t for t in thresholds if t is not None)}


def _delta_stop(work: dict, sglang_steps: int) -> dict:
    """What OPT-Tree's δ-stop does on these logs beside SGLang's fixed depth (meaningful for OPT-Tree logs)."""
    depths = work["depths"]
    return {"logs_are_opt_tree": work["policies"] in (["opt-tree"], ["opt-tree-auto"]),
            "thresholds": work["thresholds"], "mean_depth": float(depths.mean()),
            "share_stopped_early": float((depths < sglang_steps).mean()),
            "mean_layers_short_of_sglang": float(np.maximum(sglang_steps - depths, 0).mean())}


def serve_report(paths, nodes: int, max_depth: int, max_topk: int = 10) -> dict:
    """Everything ``serve-tree`` prints: the acceptance vector, vLLM's tree, SGLang's flags, the δ-stop facts.
    A tree of n nodes is never deeper or wider than n, so ``max_depth`` and ``max_topk`` are cut to
    ``nodes`` (the report gives the values used): a depth of 100000 searched for minutes."""
    for value, what in ((nodes, "nodes"), (max_depth, "max depth"), (max_topk, "max topk")):
        check_int(value, what)
    max_depth, max_topk = min(max_depth, nodes), min(max_topk, nodes)
    work = _workload(paths)
    p = acceptance_from_logs(work["steps"], MAX_RANKS)
    _, at_risk = rank_events(work["steps"], len(p))
    children = level_uniform_tree(p, nodes, max_depth)
    vllm_paths = level_uniform_paths(children)
    sglang = best_sglang_flags(p, nodes, max_depth, max_topk)
    vllm = {**vllm_config(vllm_paths), "children_per_level": list(children),
            "expected_mal": 1.0 + expected_accepted(p, vllm_paths), "replay": vars(replay(work["steps"], vllm_paths))}
    sglang_out = {"speculative_num_steps": sglang["steps"], "speculative_eagle_topk": sglang["topk"],
                  "speculative_num_draft_tokens": sglang["draft_tokens"], "expected_mal": sglang["expected_mal"],
                  "replay": vars(replay(work["steps"], sglang["paths"]))}
    return {"logs": work["n_logs"], "steps": len(work["steps"]), "logged_mal": work["logged_mal"],
            "policies": work["policies"], "acceptance": p,
            "acceptance_at_risk": [int(n) for n in at_risk], "nodes": nodes, "max_depth": max_depth,
            "max_topk": max_topk,
            "vllm": vllm, "sglang": sglang_out, "delta_stop": _delta_stop(work, sglang["steps"])}


def _text(report: dict) -> str:
    v, s, d = report["vllm"], report["sglang"], report["delta_stop"]
    p = ", ".join(f"{x:.3f}" for x in report["acceptance"])
    lines = [f"{report['logs']} logs, {report['steps']} steps ({', '.join(report['policies'])}), logged MAL "
             f"{report['logged_mal']:.2f}; acceptance vector p = [{p}] (nodes at risk per rank: "
             f"{', '.join(map(str, report['acceptance_at_risk']))})",
             "",
             f"vLLM: children per level {v['children_per_level']}, {v['num_speculative_tokens']} nodes; expected MAL "
             f"{v['expected_mal']:.2f}, replayed on the logs {v['replay']['mal']:.2f} "
             f"({v['replay']['censored']} of {v['replay']['steps']} steps censored)",
             "  --speculative-config '" + json.dumps({"method": "eagle", "model": "HEAD",
                                                      "num_speculative_tokens": v["num_speculative_tokens"],
                                                      "speculative_token_tree": v["speculative_token_tree"]}) + "'",
             "",
             f"SGLang: --speculative-num-steps {s['speculative_num_steps']} --speculative-eagle-topk "
             f"{s['speculative_eagle_topk']} --speculative-num-draft-tokens {s['speculative_num_draft_tokens']}; "
             f"expected MAL {s['expected_mal']:.2f}, its average tree replayed {s['replay']['mal']:.2f} "
             f"({s['replay']['censored']} steps censored)",
             "",
             f"OPT-Tree's δ-stop: its kept trees here reach {d['mean_depth']:.2f} layers on average; "
             f"{100 * d['share_stopped_early']:.0f} % of steps stopped short of SGLang's fixed "
             f"{s['speculative_num_steps']} layers ({d['mean_layers_short_of_sglang']:.2f} layers short per step), "
             "where SGLang drafts every layer and keeps its best nodes"
             + ("" if d["logs_are_opt_tree"] else " (these are not OPT-Tree logs: read this as their own depth)")]
    return "\n".join(lines)


def _run(args) -> dict:
    if args.out:
        check_file_destination(args.out)
    report = serve_report(args.logs, args.nodes, args.max_depth, args.max_topk)
    if args.out:
        write_text(args.out, json.dumps(report, indent=2))
    print(json.dumps(report) if args.json else _text(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m opttree_core serve-tree", description=__doc__.split("\n")[0])
    p.add_argument("logs", nargs="+", help="tree logs, or folders holding them (a bench run)")
    p.add_argument("--nodes", type=int, default=60, help="drafted tokens per step at most (vLLM's tree size)")
    p.add_argument("--max-depth", type=int, default=10, help="tree depth (SGLang's --speculative-num-steps) at most")
    p.add_argument("--max-topk", type=int, default=10, help="SGLang's --speculative-eagle-topk at most")
    p.add_argument("--out", default=None, help="also write the report as JSON here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return 0 if report_errors(_run, args) is not None else 2


if __name__ == "__main__":
    sys.exit(main())
