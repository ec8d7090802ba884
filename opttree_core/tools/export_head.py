"""Write an EAGLE head as a published checkpoint that SGLang, vLLM and SafeAILab/EAGLE load
(``eagle_export.py``), then load it back and check it drafts as the original did.

    python -m opttree_core export-head --draft eagle-smollm2 --target smollm2-135m --out out/export/eagle-smollm2

``--draft`` takes anything ``load_drafter`` takes that is an EAGLE head: a shipped or trained head
(written as EAGLE-1/2) or a published EAGLE-1/2 or EAGLE-3 head (written back in its own layout).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from ..api import check_prompt_text, encode_prompt
from ..checks import check_int
from ..decoding import DecodeConfig, generate
from ..drafters.eagle3 import Eagle3Head
from ..drafters.registry import load_drafter
from ..eagle_export import DTYPES, WEIGHT_FORMATS, export_head
from ..embedded import EMBEDDED
from ..errors import OptTreeError, report_errors
from ..models import load_model
from ..policies import OptTreeConfig, OptTreePolicy
from ..treelog import TreeLog

PROBE = "Write a short story about a robot who learns to paint, in three sentences."
_PROBE_POLICY = OptTreeConfig(nodes=8, threshold=0.0, max_depth=4)


def probe_trees(target, drafter, prompt_ids: torch.Tensor, max_new_tokens: int = 16):
    """The nodes of every tree ``drafter`` drafts while decoding ``prompt_ids`` greedily (OPT-Tree, n = 8)."""
    policy = OptTreePolicy(_PROBE_POLICY)
    log = TreeLog(max_steps=max_new_tokens, max_nodes=policy.max_nodes + 1)
    generate(target.model, drafter, policy, prompt_ids, DecodeConfig(max_new_tokens=max_new_tokens), log=log)
    return log.to_frames().nodes


def compare_drafts(target, before, after, prompt_ids: torch.Tensor) -> dict:
    """Whether two drafters draft the same trees on a probe decoding, and the largest gap in q."""
    a, b = probe_trees(target, before, prompt_ids), probe_trees(target, after, prompt_ids)
    same = len(a) == len(b) and (a["token"].to_numpy() == b["token"].to_numpy()).all()
    gap = float((a["q"] - b["q"]).abs().max()) if same else float("inf")
    return {"same_trees": bool(same), "max_q_gap": gap, "steps": int(a["step"].max()) + 1 if len(a) else 0}


def _usage(out: str, target: str, layout: str) -> list[str]:
    """Engine command lines; the embedded target becomes its hub id (the engine loads the hub's
    unquantized weights, ours are the GGUF Q4_1 weights dequantized, so acceptance can differ a little)."""
    target = EMBEDDED[target].hub_id if target in EMBEDDED else target
    algorithm, method = ("EAGLE3", "eagle3") if layout == "eagle3" else ("EAGLE", "eagle")
    return [f"python -m sglang.launch_server --model-path {target} --speculative-algorithm {algorithm} "
            f"--speculative-draft-model-path {out} --speculative-num-steps 5 --speculative-eagle-topk 8 "
            "--speculative-num-draft-tokens 60   (python -m opttree_core serve-tree gives values for your logs)",
            f"vllm serve {target} --speculative-config '{{\"method\": \"{method}\", \"model\": \"{out}\", "
            "\"num_speculative_tokens\": 5}'"]


def check_out(path: str) -> Path:
    """``--out``, checked before anything loads: a new or empty directory, not the current one (nor
    one holding it), under a writable directory; otherwise a one-line OptTreeError."""
    out = Path(os.path.abspath(path))
    if out == Path.cwd() or out in Path.cwd().parents:
        raise OptTreeError(f"--out {path}: that is the current directory or holds it; "
                           "name a new directory for the head")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise OptTreeError(f"--out {path}: exists and is not an empty directory")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        why = "not a directory" if not parent.is_dir() else "not writable"
        raise OptTreeError(f"--out {path}: cannot write under {parent} ({why})")
    return out


def _check_args(args) -> None:
    """Everything cheap, before the target loads."""
    check_out(args.out)
    if args.prompt is not None:
        check_prompt_text(args.prompt, "--prompt")
    if args.draft_vocab is not None:
        check_int(args.draft_vocab, "--draft-vocab", 0)


def _run(args) -> dict:
    _check_args(args)
    target = load_model(args.target, device=args.device)
    drafter = load_drafter(args.draft, target, draft_vocab=0 if args.draft_vocab is None else args.draft_vocab,
                           device=args.device)
    out = export_head(drafter, target, args.out, dtype=args.dtype, weights=args.weights)
    layout = "eagle3" if isinstance(drafter.head, Eagle3Head) else "eagle"
    reloaded = load_drafter(str(out), target, device=args.device)
    tokenizer = target.tokenizer
    if tokenizer is None:
        ids = torch.arange(3, 12)  # a model without a tokenizer: a fixed probe of token ids
    else:
        ids = encode_prompt(tokenizer, args.prompt or PROBE, chat=bool(getattr(tokenizer, "chat_template", None)))
    check = compare_drafts(target, drafter, reloaded, ids)
    report = {"out": str(out), "layout": layout, "round_trip": check, "usage": _usage(str(out), args.target, layout)}
    if not args.json:
        verdict = ("identical trees" if check["same_trees"] else "DIFFERENT trees") + \
                  f" on {check['steps']} probe steps, max |Δq| {check['max_q_gap']:.2e}"
        print(f"wrote {layout} checkpoint {out}; loaded back: {verdict}")
        print("\n".join(report["usage"]))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m opttree_core export-head", description=__doc__.split("\n")[0])
    p.add_argument("--draft", default="eagle-smollm2", help="an EAGLE head load_drafter takes")
    p.add_argument("--target", default="smollm2-135m", help="the target it drafts for")
    p.add_argument("--out", required=True, help="a new (or empty) directory")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    p.add_argument("--weights", default="safetensors", choices=sorted(WEIGHT_FORMATS),
                   help="model.safetensors or pytorch_model.bin")
    p.add_argument("--draft-vocab", type=int, default=None,
                   help="trained drafts: the vocabulary to load with (default 0: EAGLE-1 has no draft vocabulary)")
    p.add_argument("--prompt", default=None, help="the probe prompt of the round-trip check")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = report_errors(_run, args)
    if out is None:
        return 2
    if args.json:
        print(json.dumps(out))
    if not out["round_trip"]["same_trees"]:
        print("error: the exported head drafts different trees than the original", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
