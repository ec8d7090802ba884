"""``python -m opttree_core generate ...``: decode a prompt with a draft tree and log every tree."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import transformers

from .api import RunInfo, decode_prompt, encode_prompt, load_drafter
from .decoding import DecodeConfig, check_prompt
from .errors import OptTreeError, report_errors
from .models import load_model
from .registry import POLICIES, make_policy


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="decode one prompt with tree speculative decoding")
    p.add_argument("--target", default="smollm2-135m", help="smollm2-135m, a local directory or a hub id")
    p.add_argument("--draft", default="eagle-smollm2",
                   help="eagle-smollm2 or tiny-smollm2 (trained for smollm2-135m), ngram (training-free), "
                        "self (the target drafts for itself), a trained draft's .json, or a model like --target")
    p.add_argument("--policy", default="opt-tree", choices=sorted(POLICIES))
    p.add_argument("--nodes", type=int, default=50, help="OPT-Tree node budget n")
    p.add_argument("--threshold", type=float, default=0.5, help="OPT-Tree threshold delta in [0, 1]")
    p.add_argument("--max-depth", type=int, default=10, help="OPT-Tree max depth")
    p.add_argument("--chain-length", type=int, default=4, help="chain policy: tokens per draft")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-time", type=float, default=None, help="wall-clock budget in seconds")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: lossless sampling")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="apply the target's chat template")
    p.add_argument("--log", default=None, help="directory to write the tree log to (Parquet + meta.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opttree_core", description=__doc__)
    _add_generate(parser.add_subparsers(dest="command", required=True))
    return parser


def _policy_params(args) -> dict:
    if args.policy == "chain":
        return {"length": args.chain_length}
    return {"nodes": args.nodes, "threshold": args.threshold, "max_depth": args.max_depth}


def run_generate(args) -> dict:
    """Validate everything cheap first, then load, decode and (only at the end) write the log."""
    policy = make_policy(args.policy, **_policy_params(args))
    config = DecodeConfig(max_new_tokens=args.max_new_tokens, max_time=args.max_time,
                          temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, progress=not (args.no_progress or args.json))
    if not args.prompt.strip():
        raise OptTreeError("the prompt is empty: give some text to continue")
    load_options = {"device": args.device, "dtype": args.dtype}
    target = load_model(args.target, **load_options)
    drafter = load_drafter(args.draft, target, **load_options)
    prompt_ids = encode_prompt(target.tokenizer, args.prompt, chat=args.chat)
    check_prompt(target.model, prompt_ids, config.max_new_tokens)
    info = RunInfo(target=target.name, draft=args.draft, policy=policy.name,
                   policy_config=asdict(policy.config), decode_config=asdict(config), prompt=args.prompt,
                   chat=args.chat, seed=args.seed, device=args.device, dtype=args.dtype)
    result = decode_prompt(target, drafter, policy, prompt_ids, config, info, log_path=args.log)
    text = target.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    return {"text": text, "token_ids": result.token_ids, "steps": result.steps, "mal": result.mal,
            "tokens_per_s": result.tokens_per_s, "seconds": result.seconds, "log": args.log}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    out = report_errors(run_generate, args)
    if out is None:
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        print(out["text"])
        print(f"[{len(out['token_ids'])} tokens in {out['steps']} steps, MAL {out['mal']:.2f}, "
              f"{out['tokens_per_s']:.1f} tok/s{', log: ' + out['log'] if out['log'] else ''}]", file=sys.stderr)
    return 0
